"""Versioned artifacts: atomic publish, current pointer, checksums, failure leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from recall_core.artifacts import ArtifactStore
from recall_core.errors import ArtifactError, NotTrainedError


def write_model(value: str):  # type: ignore[no-untyped-def]
    def fill(model_dir: Path) -> dict:
        (model_dir / "weights.txt").write_text(value)
        (model_dir / "sub").mkdir()
        (model_dir / "sub" / "table.txt").write_text(value * 2)
        return {"loss": 0.5}
    return fill


def test_publish_versions_and_switch_current(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    first = store.publish("s", {"kind": "k"}, write_model("a"))
    second = store.publish("s", {"kind": "k"}, write_model("b"))
    assert (first.version, second.version) == ("v0001", "v0002")
    assert store.current("s").version == "v0002"
    assert second.manifest["metrics"] == {"loss": 0.5}
    assert set(second.manifest["checksums"]) == {"weights.txt", "sub/table.txt"}
    store.set_current("s", "v0001")  # rollback
    assert (store.current("s").model_dir / "weights.txt").read_text() == "a"
    assert store.versions("s") == ["v0001", "v0002"]


def test_failed_training_publishes_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.publish("s", {"kind": "k"}, write_model("a"))

    def explode(model_dir: Path) -> dict:
        (model_dir / "half.bin").write_text("partial")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        store.publish("s", {"kind": "k"}, explode)
    assert store.versions("s") == ["v0001"]
    assert store.current("s").version == "v0001"
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".tmp")]


def test_corruption_is_detected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    version = store.publish("s", {"kind": "k"}, write_model("a"))
    version.verify()
    (version.model_dir / "weights.txt").write_text("tampered")
    with pytest.raises(ArtifactError, match="corrupt: weights.txt"):
        store.current("s").verify()
    (version.model_dir / "weights.txt").unlink()
    with pytest.raises(ArtifactError, match="missing weights.txt"):
        store.current("s").verify()


def test_index_is_swapped_in_and_checksummed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    version = store.publish("s", {"kind": "k"}, write_model("a"))
    assert not version.indexed

    def build(index_dir: Path) -> str:
        (index_dir / "neighbours.npy").write_bytes(b"123")
        return "handle"

    assert store.publish_index(version, build) == "handle"
    assert version.indexed and (version.index_dir / "neighbours.npy").read_bytes() == b"123"
    (version.index_dir / "neighbours.npy").write_bytes(b"999")
    with pytest.raises(ArtifactError, match="corrupt"):
        version.verify()


def test_untrained_source(tmp_path: Path) -> None:
    with pytest.raises(NotTrainedError, match="recall train x"):
        ArtifactStore(tmp_path).current("x")
    with pytest.raises(ArtifactError, match="no version"):
        ArtifactStore(tmp_path).set_current("x", "v0009")
