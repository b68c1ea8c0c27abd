"""``recall sources`` states: what makes a trained source stale, and what does not."""

from __future__ import annotations

import json
from pathlib import Path

from recall_core.artifacts import MANIFEST, ArtifactStore
from recall_core.host import make_host
from recall_core.sources import SourceManager
from tests.test_server_support import tiny_dataset


def trained_manager(tmp_path: Path) -> tuple[SourceManager, str]:
    from recall_plugins import popular

    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[popular])
    manager = SourceManager(host, ArtifactStore(tmp_path / "artifacts"), threads=1)
    dataset = tiny_dataset()
    spec = manager.spec("pop", "popular", {"half_life_days": 3.0})
    manager.train(spec, dataset)
    manager.index(spec)
    return manager, dataset.fingerprint


def test_same_config_is_indexed_and_a_changed_value_is_stale(tmp_path: Path) -> None:
    manager, fingerprint = trained_manager(tmp_path)
    assert manager.status("pop", "popular", {"half_life_days": 3.0}, fingerprint).state == "indexed"
    changed = manager.status("pop", "popular", {"half_life_days": 9.0}, fingerprint)
    assert (changed.state, changed.detail) == ("stale", "config changed")
    other_data = manager.status("pop", "popular", {"half_life_days": 3.0}, "another")
    assert (other_data.state, other_data.detail) == ("stale", "dataset changed")


def test_a_key_added_to_the_schema_since_training_is_not_a_change(tmp_path: Path) -> None:
    manager, fingerprint = trained_manager(tmp_path)
    manifest_path = manager.store.current("pop").model_dir.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["config"].pop("window_days")  # as written by a version without that key
    manifest_path.write_text(json.dumps(manifest))
    assert manager.status("pop", "popular", {"half_life_days": 3.0}, fingerprint).state == "indexed"
    manifest["config"]["retired_key"] = 1  # a key the schema no longer knows
    manifest_path.write_text(json.dumps(manifest))
    assert manager.status("pop", "popular", {"half_life_days": 3.0}, fingerprint).state == "stale"
