"""What the server serves: an immutable snapshot, swapped atomically on reload.

A :class:`Snapshot` bundles the engine (loaded sources + merge settings), the
dataset's id maps and stored histories (:class:`Catalog`) and the state of
every configured source. :class:`ServingState` holds exactly one current
snapshot. A request takes a reference with :meth:`ServingState.use` and keeps
that snapshot to the end, whatever happens meanwhile; :meth:`ServingState.reload`
builds a complete new snapshot off to the side (artifact checksums and
manifests verified, and every newly loaded source made to answer one test
query), then swaps the single reference. A snapshot that was
swapped out closes its engine when its last request finishes. If any artifact
the new snapshot needs is corrupt or incompatible, the reload is refused with
that error and the old snapshot keeps serving, untouched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recall_core.data.dataset import recent_users
from recall_core.engine import MergeSettings, RecallEngine
from recall_core.errors import (
    ConfigError,
    NotTrainedError,
    PluginError,
    ProjectError,
    RecallError,
)
from recall_core.host import PluginHost
from recall_core.sources import LoadedSource, SourceManager
from recall_core.server.errors import NotReadyError, ReloadRefusedError

if TYPE_CHECKING:
    from recall_core.server.wire import EncodedIds
    from recall_core.data.dataset import Dataset
    from recall_core.project import Project

log = logging.getLogger("recall.server")

SERVING, NOT_READY, FAILED = "serving", "not_ready", "failed"


class Catalog:
    """The dataset as the server needs it: raw ↔ dense id maps and stored histories."""

    def __init__(self, dataset: Dataset, token: tuple[int, int]) -> None:
        self.token = token
        self.fingerprint = dataset.fingerprint
        self.item_ids: list[str] = dataset.item_ids.tolist()
        self.item_index = {raw: i for i, raw in enumerate(self.item_ids)}
        self.user_index = {raw: u for u, raw in enumerate(dataset.user_ids.tolist())}
        self.num_users = len(self.user_index)
        self._indptr = dataset.indptr
        self._items = dataset.items.astype(np.int64)
        self._timestamps = dataset.timestamps

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @cached_property
    def encoded_item_ids(self) -> EncodedIds:
        """Item ids pre-encoded for responses (built on first use)."""
        from recall_core.server.wire import EncodedIds

        return EncodedIds(self.item_ids)

    def history(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """User ``user``'s stored (items, timestamps), oldest first."""
        start, stop = self._indptr[user], self._indptr[user + 1]
        return self._items[start:stop], self._timestamps[start:stop]

    @cached_property
    def raw_user_ids(self) -> list[str]:
        """Raw user ids by dense id."""
        return list(self.user_index)

    def recent_users(self, limit: int) -> np.ndarray:
        """Dense ids of up to ``limit`` users with a history, latest interaction first."""
        return recent_users(self._indptr, self._timestamps, limit)


@dataclass(frozen=True)
class ServedSource:
    """One configured source as a snapshot serves it (or why it cannot)."""

    name: str
    kind: str
    status: str  # serving | not_ready | failed
    plugin_package: str = ""
    plugin_version: str = ""
    version: str = ""
    num_items: int = 0
    detail: str = ""
    loaded: LoadedSource | None = None


class Snapshot:
    """An engine, a catalog and the source states of one generation; never mutated."""

    def __init__(self, generation: int, engine: RecallEngine | None, catalog: Catalog,
                 sources: dict[str, ServedSource], fallback: str | None) -> None:
        self.generation = generation
        self.engine = engine
        self.catalog = catalog
        self.sources = sources
        self.fallback = fallback
        self.ready = [name for name, s in sources.items() if s.status == SERVING]
        self._active = 0
        self._retired = False
        self._closed = False

    @property
    def all_serving(self) -> bool:
        return bool(self.sources) and len(self.ready) == len(self.sources)

    def close(self) -> None:
        if not self._closed and self.engine is not None:
            self.engine.close()
        self._closed = True


class ServingState:
    """The current snapshot, its reference counting and the (serialised) reloads."""

    def __init__(self, project_dir: Path, host: PluginHost, *, engine_workers: int = 8,
                 on_change: Callable[[Snapshot], None] | None = None) -> None:
        self.project_dir = Path(project_dir)
        self.host = host
        self.engine_workers = engine_workers
        self.on_change = on_change
        self._current: Snapshot | None = None
        self._lock = threading.Lock()  # guards _current and reference counts
        self._reload_lock = threading.Lock()  # one build at a time
        self._generation = 0

    @property
    def current(self) -> Snapshot | None:
        return self._current

    @contextmanager
    def use(self) -> Iterator[Snapshot]:
        """The current snapshot, kept alive (engine open) until the block ends."""
        with self._lock:
            snapshot = self._current
            if snapshot is None:
                raise NotReadyError("the server is still loading its sources; retry shortly")
            snapshot._active += 1
        try:
            yield snapshot
        finally:
            with self._lock:
                snapshot._active -= 1
                close = snapshot._retired and snapshot._active == 0
            if close:
                snapshot.close()

    def load(self) -> Snapshot:
        """Build and install the first snapshot; sources that cannot load are marked, not fatal."""
        return self.reload(names=None, initial=True)[0]

    def reload(self, names: list[str] | None = None,
               initial: bool = False) -> tuple[Snapshot, list[str]]:
        """Build a new snapshot and swap it in; returns it and the sources (re)loaded.

        ``names`` are reloaded even when their version did not change; with no
        names, only sources whose current version changed (or that were not
        ready) are loaded. Refused (the old snapshot keeps serving) when a
        named source, or one that was serving, cannot load its new artifacts.
        """
        with self._reload_lock:
            previous = self._current
            if previous is None and not initial:
                raise NotReadyError("the server is still loading its sources; retry shortly")
            snapshot, reloaded = self._build(previous, set(names) if names else set())
            self._swap(snapshot)
        for name in reloaded:
            served = snapshot.sources[name]
            log.info("source %s: %s %s", name, served.status, served.version or served.detail)
        return snapshot, reloaded

    def close(self) -> None:
        with self._lock:
            snapshot, self._current = self._current, None
        if snapshot is not None:
            snapshot.close()

    # ---- building -------------------------------------------------------
    def _build(self, previous: Snapshot | None, forced: set[str]) -> tuple[Snapshot, list[str]]:
        from recall_core.artifacts import ArtifactStore
        from recall_core.native import thread_count
        from recall_core.project import Project

        project = Project.load(self.project_dir)
        unknown = sorted(forced - set(project.settings.sources))
        if unknown:
            project.source(unknown[0])  # raises UnknownSourceError naming the configured ones
        catalog = self._catalog(project.dataset_path, previous)
        same_data = previous is not None and previous.catalog is catalog
        manager = SourceManager(self.host, ArtifactStore(project.artifacts_path), thread_count())
        sources: dict[str, ServedSource] = {}
        reloaded: list[str] = []
        for name, entry in project.settings.sources.items():
            old = previous.sources.get(name) if previous is not None and same_data else None
            if old is not None and name not in forced and _unchanged(manager, old, entry.kind):
                sources[name] = old
                continue
            must_load = name in forced or (previous is not None and _was_serving(previous, name))
            sources[name] = self._load_one(manager, name, entry.kind, entry.config, catalog,
                                           must_load, previous)
            reloaded.append(name)
        fallback = project.settings.merge.fallback or None
        engine = self._engine(project, sources, fallback)
        self._generation += 1
        return Snapshot(self._generation, engine, catalog, sources, fallback), reloaded

    def _catalog(self, dataset_path: Path, previous: Snapshot | None) -> Catalog:
        """The previous catalog when the dataset directory is the same one, else a fresh load."""
        from recall_core.data.dataset import Dataset

        try:
            stat = dataset_path.stat()
        except OSError:
            raise ProjectError(f"no dataset at {dataset_path} (import one with "
                               "`recall data import`)") from None
        token = (stat.st_ino, stat.st_mtime_ns)  # datasets are replaced by renaming a directory
        if previous is not None and previous.catalog.token == token:
            return previous.catalog
        return Catalog(Dataset.load(dataset_path), token)

    def _load_one(self, manager: SourceManager, name: str, kind: str, config: dict,
                  catalog: Catalog, must_load: bool, previous: Snapshot | None) -> ServedSource:
        try:
            origin = self.host.kind(kind).origin
            spec = manager.spec(name, kind, config)
            loaded = manager.load(spec, catalog.fingerprint, verify=True)
            self._smoke_test(loaded, catalog)
        except RecallError as error:
            if must_load:
                raise ReloadRefusedError(_refusal(name, error, previous)) from error
            status = NOT_READY if isinstance(error, NotTrainedError) else FAILED
            log.warning("source %s is %s: %s", name, status, error)
            return ServedSource(name, kind, status, detail=str(error))
        return ServedSource(name, kind, SERVING, origin.package, origin.version, loaded.version,
                            _num_items(loaded, catalog), loaded=loaded)

    def _smoke_test(self, loaded: LoadedSource, catalog: Catalog) -> None:
        """One real query before a source may serve: a handle that loads but cannot answer
        is refused here, not discovered by the first request."""
        from recall_core.contract import Candidates, QueryBatch

        history = catalog.history(0)[0] if catalog.num_users else np.empty(0, np.int64)
        query = QueryBatch.from_histories([history], np.zeros(1, np.int64))
        try:
            answer = self.host.retrieve(loaded.spec.kind, loaded.handle, query, 10)
        except Exception as error:  # noqa: BLE001 - any failure of plugin code refuses it
            raise PluginError(f"source {loaded.spec.name!r} loaded but failed a test query: "
                              f"{type(error).__name__}: {error}") from error
        if not isinstance(answer, Candidates) or len(answer) != 1:
            raise PluginError(f"source {loaded.spec.name!r} answered a test query with "
                              f"{type(answer).__name__}, not one row of Candidates")

    def _engine(self, project: Project, sources: dict[str, ServedSource],
                fallback: str | None) -> RecallEngine | None:
        loaded = {name: s.loaded for name, s in sources.items() if s.loaded is not None}
        if not loaded:
            return None
        merge = project.settings.merge
        settings = MergeSettings(merge.policy, dict(merge.weights),
                                 fallback if fallback in loaded else None)
        # Each of the server's workers may fan out to every source at once.
        workers = min(64, max(4, len(loaded) * self.engine_workers))
        try:
            return RecallEngine(self.host, loaded, settings, max_workers=workers)
        except ConfigError as error:
            raise ProjectError(f"recall.toml [merge]: {error}") from None

    def _swap(self, snapshot: Snapshot) -> None:
        with self._lock:
            old, self._current = self._current, snapshot
            close_old = False
            if old is not None:
                old._retired = True
                close_old = old._active == 0
        if close_old and old is not None:
            old.close()
        if self.on_change is not None:
            self.on_change(snapshot)


def _unchanged(manager: SourceManager, old: ServedSource, kind: str) -> bool:
    """A serving source whose published current version is still the one loaded."""
    if old.status != SERVING or old.kind != kind:
        return False
    try:
        return manager.store.current(old.name).version == old.version
    except RecallError:
        return False  # the pointer vanished or broke: load (and fail) explicitly


def _was_serving(previous: Snapshot, name: str) -> bool:
    served = previous.sources.get(name)
    return served is not None and served.status == SERVING


def _refusal(name: str, error: RecallError, previous: Snapshot | None) -> str:
    served = previous.sources.get(name) if previous is not None else None
    keeping = (f"; still serving {served.version}" if served is not None and served.version
               else "")
    return f"reload refused: source {name!r}: {error}{keeping}"


def _num_items(loaded: LoadedSource, catalog: Catalog) -> int:
    return int(loaded.num_items) if loaded.num_items is not None else catalog.num_items
