"""Train, index and load configured sources: the host, the store and a dataset together.

:class:`SourceManager` is what the CLI, the evaluator and the server use to
run a source's life cycle; plugins only ever see their own config, a dataset
and directories.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recall_core.artifacts import ArtifactStore, ArtifactVersion
from recall_core.contract import SourceConfig, TrainContext
from recall_core.errors import ArtifactError, NotTrainedError, RecallError
from recall_core.progress import ProgressReporter, SilentProgress
from recall_core.training.user_table import attach_user_table, precompute_user_table

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset
    from recall_core.host import PluginHost


@dataclass(frozen=True)
class SourceSpec:
    """A named source: its kind and its validated config."""

    name: str
    kind: str
    config: SourceConfig


@dataclass(frozen=True)
class LoadedSource:
    """A source ready to answer queries."""

    spec: SourceSpec
    handle: Any
    version: str
    num_items: int | None


@dataclass(frozen=True)
class SourceStatus:
    """What ``recall sources`` and ``ListSources`` report for one source."""

    name: str
    kind: str
    state: str  # untrained | trained | indexed | stale | broken
    version: str | None
    detail: str = ""


class SourceManager:
    """Runs the life cycle of sources whose artifacts live in one store."""

    def __init__(self, host: PluginHost, store: ArtifactStore, threads: int = 2) -> None:
        self.host = host
        self.store = store
        self.threads = threads

    def spec(self, name: str, kind: str, values: dict[str, Any]) -> SourceSpec:
        """Validate ``values`` against ``kind``'s schema (one-line ConfigError on failure)."""
        return SourceSpec(name, kind, self.host.validate_config(kind, values))

    def train(self, spec: SourceSpec, dataset: Dataset,
              progress: ProgressReporter | None = None,
              validation: Any = None) -> ArtifactVersion:
        """Fit ``spec`` on ``dataset`` and publish a new current version."""
        origin = self.host.kind(spec.kind).origin
        manifest = {
            "kind": spec.kind,
            "plugin": {"name": origin.name, "package": origin.package, "version": origin.version},
            "config": spec.config.model_dump(mode="json"),
            "dataset": {"fingerprint": dataset.fingerprint, **dataset.summary()},
        }

        def fill(model_dir: Path) -> dict[str, Any]:
            context = TrainContext(model_dir, progress or SilentProgress(), self.threads,
                                   validation=validation)
            started = time.perf_counter()
            metrics = _guarded(spec.name, "training", lambda: self.host.train(
                spec.kind, spec.config, dataset, context))
            return {**(metrics or {}), "wall_seconds": round(time.perf_counter() - started, 3)}

        return self.store.publish(spec.name, manifest, fill)

    def index(self, spec: SourceSpec, dataset: Dataset | None = None,
              progress: ProgressReporter | None = None) -> LoadedSource:
        """Build the current version's index and return the loaded source.

        With ``dataset`` (the project's), the stored users' representations are
        precomputed into the index too, for a handle whose cache asks for it
        (:mod:`recall_core.training.user_table`).
        """
        version = self.store.current(spec.name)
        self._check_kind(spec, version)
        config = self._trained_config(spec, version)

        def fill(index_dir: Path) -> Any:
            handle = self.host.index(spec.kind, config, version.model_dir, index_dir)
            if dataset is not None:
                precompute_user_table(
                    handle, lambda queries: self.host.retrieve(spec.kind, handle, queries, 1),
                    dataset, index_dir, progress or SilentProgress())
            return handle

        handle = self.store.publish_index(version, lambda index_dir: _guarded(
            spec.name, "indexing", lambda: fill(index_dir)))
        return self._loaded(spec, config, handle, version)

    def load(self, spec: SourceSpec, dataset_fingerprint: str | None = None,
             verify: bool = True) -> LoadedSource:
        """Load the current, indexed version (checksums verified) for serving."""
        version = self.store.current(spec.name)
        self._check_kind(spec, version)
        if dataset_fingerprint and version.manifest["dataset"]["fingerprint"] != dataset_fingerprint:
            raise ArtifactError(
                f"source {spec.name!r} was trained on another dataset than the project's "
                f"(run `recall train {spec.name}`)")
        if not version.indexed:
            raise NotTrainedError(f"source {spec.name!r} is trained but not indexed "
                                  f"(run `recall index {spec.name}`)")
        if verify:
            version.verify()
        config = self._trained_config(spec, version)
        handle = _guarded(spec.name, "loading", lambda: self.host.load(
            spec.kind, config, version.model_dir, version.index_dir))
        attach_user_table(handle, version.index_dir)
        return self._loaded(spec, config, handle, version)

    def _as_current_schema(self, kind: str, trained: dict[str, Any]) -> dict[str, Any] | None:
        # A key added to the schema since training (with its default) is no config change;
        # a key the schema no longer knows is.
        try:
            return self.host.validate_config(kind, trained).model_dump(mode="json")
        except RecallError:
            return None

    def status(self, name: str, kind: str, values: dict[str, Any],
               dataset_fingerprint: str | None) -> SourceStatus:
        """The state of one configured source, never raising for a broken one."""
        try:
            version = self.store.current(name)
        except NotTrainedError:
            return SourceStatus(name, kind, "untrained", None)
        except RecallError as error:
            return SourceStatus(name, kind, "broken", None, str(error))
        manifest = version.manifest
        if manifest.get("kind") != kind:
            return SourceStatus(name, kind, "stale", version.version, "trained as another kind")
        if dataset_fingerprint and manifest["dataset"]["fingerprint"] != dataset_fingerprint:
            return SourceStatus(name, kind, "stale", version.version, "dataset changed")
        try:
            current = self.host.validate_config(kind, values).model_dump(mode="json")
        except RecallError as error:
            return SourceStatus(name, kind, "broken", version.version, str(error))
        if current != self._as_current_schema(kind, manifest.get("config") or {}):
            return SourceStatus(name, kind, "stale", version.version, "config changed")
        state = "indexed" if version.indexed else "trained"
        return SourceStatus(name, kind, state, version.version)

    def _trained_config(self, spec: SourceSpec, version: ArtifactVersion) -> SourceConfig:
        # Serve with the config the artifacts were trained with, not today's edit.
        return self.host.validate_config(spec.kind, version.manifest["config"])

    @staticmethod
    def _check_kind(spec: SourceSpec, version: ArtifactVersion) -> None:
        if version.manifest.get("kind") != spec.kind:
            raise ArtifactError(
                f"artifact of source {spec.name!r} is of kind {version.manifest.get('kind')!r}, "
                f"not {spec.kind!r} (run `recall train {spec.name}`)")

    @staticmethod
    def _loaded(spec: SourceSpec, config: SourceConfig, handle: Any,
                version: ArtifactVersion) -> LoadedSource:
        served = SourceSpec(spec.name, spec.kind, config)
        num_items = getattr(handle, "num_items", None)
        return LoadedSource(served, handle, version.version, num_items)


def _guarded(source: str, step: str, call: Any) -> Any:
    """Run a plugin call; a plugin's own exception becomes one clear RecallError line."""
    try:
        return call()
    except RecallError:
        raise
    except Exception as error:  # a plugin bug must not surface as a traceback
        raise RecallError(
            f"source {source!r} failed while {step}: {type(error).__name__}: {error}") from error
