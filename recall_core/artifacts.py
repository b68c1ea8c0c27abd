"""Versioned, checksummed artifacts with an atomically switched current version.

Layout under a store root::

    <source>/v0003/manifest.json   kind, plugin, config, data fingerprint, metrics, checksums
    <source>/v0003/model/          what recall_train wrote
    <source>/v0003/index/          what recall_index wrote (+ index.json with its checksums)
    <source>/CURRENT               the served version's name

Every write goes to a hidden temporary directory first and is renamed into
place; CURRENT is replaced with ``os.replace``. A reader therefore sees either
the old or the new version, never a half-written one, and a corrupt version is
refused (ArtifactError) before it can replace a good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recall_core.errors import ArtifactError, NotTrainedError
from recall_core.files import write_text_atomically

MANIFEST = "manifest.json"
INDEX_MANIFEST = "index.json"
CURRENT = "CURRENT"
MODEL_DIR = "model"
INDEX_DIR = "index"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ArtifactVersion:
    """One published version of one source."""

    source: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def index_dir(self) -> Path:
        return self.path / INDEX_DIR

    @property
    def indexed(self) -> bool:
        return (self.index_dir / INDEX_MANIFEST).is_file()

    def verify(self) -> None:
        """Check every file against the manifest's checksums (ArtifactError if not)."""
        _verify_files(self.model_dir, self.manifest.get("checksums", {}), self.source)
        if self.indexed:
            index_manifest = _read_json(self.index_dir / INDEX_MANIFEST)
            _verify_files(self.index_dir, index_manifest.get("checksums", {}), self.source)


class ArtifactStore:
    """Publishes and resolves versions of every source under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def publish(
        self, source: str, manifest: dict[str, Any], fill: Callable[[Path], dict[str, Any] | None]
    ) -> ArtifactVersion:
        """Create a version: ``fill(model_dir)`` writes files; then checksum, rename, switch.

        ``fill`` returns metrics that are added to the manifest. If it raises,
        nothing is published and the temporary directory is removed.
        """
        source_dir = self.root / source
        source_dir.mkdir(parents=True, exist_ok=True)
        tmp = source_dir / f".tmp-{uuid.uuid4().hex}"
        (tmp / MODEL_DIR).mkdir(parents=True)
        try:
            metrics = fill(tmp / MODEL_DIR) or {}
            full = {
                "format": MANIFEST_FORMAT,
                "source": source,
                **manifest,
                "metrics": _jsonable(metrics),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "checksums": checksum_tree(tmp / MODEL_DIR),
            }
            _write_json(tmp / MANIFEST, full)
            version = self._rename_to_next_version(source_dir, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.set_current(source, version)
        return self.version(source, version)

    def publish_index(self, current: ArtifactVersion, fill: Callable[[Path], Any]) -> Any:
        """Build the index of ``current`` into a temporary dir, then swap it in.

        Returns whatever ``fill(index_dir)`` returns (the plugin's handle). The
        handle keeps pointing at valid files because the index is written in
        its final form and only renamed.
        """
        tmp = current.path / f".index-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            handle = fill(tmp)
            _write_json(tmp / INDEX_MANIFEST, {
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "checksums": checksum_tree(tmp, skip=(INDEX_MANIFEST,)),
            })
            _swap_dir(tmp, current.index_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return handle

    def set_current(self, source: str, version: str) -> None:
        """Point ``source``'s CURRENT at ``version`` atomically (rollback uses this too)."""
        if not (self.root / source / version / MANIFEST).is_file():
            raise ArtifactError(f"source {source!r} has no version {version!r}")
        write_text_atomically(self.root / source / CURRENT, version + "\n")

    def current(self, source: str) -> ArtifactVersion:
        """The served version; NotTrainedError when the source was never trained."""
        pointer = self.root / source / CURRENT
        if not pointer.is_file():
            raise NotTrainedError(f"source {source!r} is not trained (run `recall train {source}`)")
        return self.version(source, pointer.read_text(encoding="utf-8").strip())

    def version(self, source: str, version: str) -> ArtifactVersion:
        path = self.root / source / version
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(f"artifact {source}/{version} has no manifest")
        return ArtifactVersion(source, version, path, _read_json(manifest_path))

    def versions(self, source: str) -> list[str]:
        source_dir = self.root / source
        if not source_dir.is_dir():
            return []
        return sorted(p.name for p in source_dir.iterdir() if (p / MANIFEST).is_file())

    def remove(self, source: str) -> None:
        """Delete every version of ``source`` (after ``recall remove-source``)."""
        shutil.rmtree(self.root / source, ignore_errors=True)

    @staticmethod
    def _rename_to_next_version(source_dir: Path, tmp: Path) -> str:
        # os.rename onto an existing directory fails, so two concurrent
        # publishers can never claim the same version number.
        for _ in range(100):
            taken = [p.name for p in source_dir.glob("v[0-9]*")]
            number = 1 + max((int(name[1:]) for name in taken if name[1:].isdigit()), default=0)
            version = f"v{number:04d}"
            try:
                os.rename(tmp, source_dir / version)
                return version
            except OSError:
                continue
        raise ArtifactError(f"could not allocate a version under {source_dir}")


def checksum_tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by its relative POSIX path."""
    sums: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative not in skip:
            sums[relative] = _sha256(path)
    return sums


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_files(root: Path, expected: dict[str, str], source: str) -> None:
    for relative, checksum in expected.items():
        path = root / relative
        if not path.is_file():
            raise ArtifactError(f"artifact of source {source!r} is missing {relative}")
        if _sha256(path) != checksum:
            raise ArtifactError(f"artifact of source {source!r} is corrupt: {relative} changed")


def _swap_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".old-{uuid.uuid4().hex}")
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtifactError(f"cannot read {path}: {error}") from None


def _jsonable(value: Any) -> Any:
    # Plugins may report numpy scalars; the manifest must stay plain JSON.
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
