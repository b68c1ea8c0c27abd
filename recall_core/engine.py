"""The retrieval engine: fan a batch out to the sources, merge, fill from the fallback.

This is the single code path behind ``recall query``, ``recall eval`` and the
gRPC server, so an offline figure is a figure of what is served. Sources run
concurrently in a thread pool (their numpy/faiss/torch kernels release the
GIL); a source that raises or misses the deadline is reported in
``RetrieveResult.failed`` and the answer degrades instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recall_core.contract import Candidates, MergePolicy, QueryBatch
from recall_core.errors import AllSourcesFailedError, ConfigError, UnknownSourceError
from recall_core.host import PluginHost
from recall_core.merge import MergedBatch, merge_batch, select_policy
from recall_core.sources import LoadedSource

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset
    from recall_core.project import Project


@dataclass(frozen=True)
class MergeSettings:
    """Defaults of the merge; a request may override policy, weights and sources."""

    policy: str = "quota"
    weights: Mapping[str, float] = field(default_factory=dict)
    fallback: str | None = "popular"


@dataclass(frozen=True)
class RetrieveResult:
    """A merged answer plus what each source said, what failed, and how long it took."""

    merged: MergedBatch
    per_source: dict[str, Candidates]
    failed: dict[str, str]
    seconds: dict[str, float]


class RecallEngine:
    """Loaded sources + a merge policy = candidates for a batch of queries."""

    def __init__(self, host: PluginHost, sources: Mapping[str, LoadedSource],
                 settings: MergeSettings, max_workers: int | None = None) -> None:
        self.host = host
        self.sources = dict(sources)
        self.settings = settings
        self.policies = host.merge_policies
        select_policy(self.policies, settings.policy)  # fail at start-up, not per request
        self._pool = ThreadPoolExecutor(max_workers=max_workers or max(1, len(self.sources)),
                                        thread_name_prefix="recall-source")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def retrieve(self, queries: QueryBatch, k: int, *, sources: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, policy: str | None = None,
                 timeout: float | None = None) -> RetrieveResult:
        """Merged top-``k`` for every query in the batch.

        :param sources: a subset of the loaded sources (default: all).
        :param weights: per-request weight/quota overrides, merged over the defaults.
        :param policy: a merge policy name overriding the default.
        :param timeout: seconds every source gets; a late source counts as failed.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1 (got {k})")
        chosen = self._choose(sources)
        merge_policy = select_policy(self.policies, policy or self.settings.policy)
        fallback = self.settings.fallback if self.settings.fallback in self.sources else None
        asked = chosen + ([fallback] if fallback and fallback not in chosen else [])
        answers, failed, seconds = self._fan_out(asked, queries, k, timeout)
        if not answers:
            reasons = "; ".join(f"{name}: {why}" for name, why in failed.items())
            raise AllSourcesFailedError(f"every source failed ({reasons})")
        merged = self._merge(chosen, answers, merge_policy, k, weights, queries, fallback)
        per_source = {name: answers[name] for name in chosen if name in answers}
        return RetrieveResult(merged, per_source, failed, seconds)

    def _choose(self, sources: Sequence[str] | None) -> list[str]:
        if not sources:
            return list(self.sources)
        unknown = [name for name in sources if name not in self.sources]
        if unknown:
            raise UnknownSourceError(
                f"unknown source {unknown[0]!r} (loaded: {', '.join(self.sources)})")
        return list(dict.fromkeys(sources))

    def _merge(self, chosen: list[str], answers: dict[str, Candidates], policy: MergePolicy,
               k: int, weights: Mapping[str, float] | None, queries: QueryBatch,
               fallback: str | None) -> MergedBatch:
        combined = {**self.settings.weights, **(weights or {})}
        per_source = {name: answers[name] for name in chosen if name in answers}
        fill = (fallback, answers[fallback]) if fallback in answers else None
        return merge_batch(per_source, policy, k, combined, queries.exclude, fallback=fill)

    def _fan_out(self, names: list[str], queries: QueryBatch, k: int, timeout: float | None
                 ) -> tuple[dict[str, Candidates], dict[str, str], dict[str, float]]:
        futures: dict[str, Future[tuple[Candidates, float]]] = {
            name: self._pool.submit(self._retrieve_one, name, queries, k) for name in names
        }
        wait(futures.values(), timeout=timeout)
        answers: dict[str, Candidates] = {}
        failed: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for name, future in futures.items():
            if not future.done():
                future.cancel()
                failed[name] = "deadline exceeded"
                continue
            error = future.exception()
            if error is not None:
                failed[name] = f"{type(error).__name__}: {error}"
                continue
            answers[name], seconds[name] = future.result()
        return answers, failed, seconds

    def _retrieve_one(self, name: str, queries: QueryBatch, k: int) -> tuple[Candidates, float]:
        source = self.sources[name]
        started = time.perf_counter()
        candidates = self.host.retrieve(source.spec.kind, source.handle, queries, k)
        if not isinstance(candidates, Candidates) or len(candidates) != len(queries):
            raise TypeError(f"source {name!r} returned {type(candidates).__name__} "
                            f"for {len(queries)} queries")
        return candidates, time.perf_counter() - started


def engine_for_project(project: Project, host: PluginHost,
                       names: Sequence[str] | None = None) -> tuple[RecallEngine, Dataset]:
    """Load the project's (named) sources from their current artifacts into an engine.

    The fallback source is loaded too when it is configured, so shortfalls
    can be filled even when a request names a subset.
    """
    from recall_core.artifacts import ArtifactStore
    from recall_core.data.dataset import Dataset
    from recall_core.native import thread_count
    from recall_core.sources import SourceManager

    dataset = Dataset.load(project.dataset_path)
    manager = SourceManager(host, ArtifactStore(project.artifacts_path), thread_count())
    chosen = project.select_sources(list(names) if names else None)
    fallback = project.settings.merge.fallback or None
    if fallback and fallback in project.settings.sources and fallback not in chosen:
        chosen.append(fallback)
    loaded = {}
    for name in chosen:
        entry = project.source(name)
        spec = manager.spec(name, entry.kind, entry.config)
        loaded[name] = manager.load(spec, dataset.fingerprint)
    merge = project.settings.merge
    settings = MergeSettings(merge.policy, dict(merge.weights),
                             fallback if fallback in loaded else None)
    return RecallEngine(host, loaded, settings), dataset
