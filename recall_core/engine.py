"""The retrieval engine: fan a batch out to the sources, merge, fill from the fallback.

This is the single code path behind ``recall query``, ``recall eval`` and the
gRPC server, so an offline figure is a figure of what is served. Sources run
concurrently in a thread pool (their numpy/faiss/torch kernels release the
GIL); a source that raises or misses the deadline is reported in
``RetrieveResult.failed`` and the answer degrades instead of failing.

Sources are CPU-bound and the machine has few cores: one pool task per source
(seven threads for two CPUs) measured slower than running them back to back,
since the threads then fight over the cores and the GIL (measured on two
cores, a cold single-user request over seven sources: 6.2 ms wall against 5.2 ms
serially and 4.0 ms in two lanes). So the sources with a measured cost run back to back in as many
pool tasks ("lanes") as there are CPUs, balanced by predicted cost (longest
first, each to the least loaded lane), and a lane only when it gets enough work to pay
for the hand-off (:data:`MIN_LANE_SECONDS`). A source is isolated in a task of its
own while it has no measurement yet, or when its predicted cost reaches
``isolate_fraction`` of the call's budget: one that may miss the deadline
must not hold its lane-mates past it. Every source still runs in the pool, so
the caller's wait is bounded by the budget whatever a source does.
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
from recall_core.native import thread_count
from recall_core.parallel import map_ranges, row_ranges
from recall_core.sources import LoadedSource

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset
    from recall_core.project import Project


DEADLINE = "deadline exceeded"
ISOLATE_FRACTION = 0.5
"""A source predicted to take this share of the call's budget or more runs in its own task."""
MIN_LANE_SECONDS = 0.002
"""Predicted seconds of source work that a second lane must get before it pays: a second
pool task costs a thread hand-off (~0.1 ms here) and GIL contention with the first. A
one-user request over seven sources (~1.2 ms of work since the precomputed user tables)
ran faster in one lane: in-process p50 2.4-2.7 ms against 2.9-3.0 ms in two."""
COST_DECAY = 0.9
"""Weight of the old estimate in a source's moving average of seconds per query."""


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
                 settings: MergeSettings, max_workers: int | None = None,
                 isolate_fraction: float = ISOLATE_FRACTION, lanes: int | None = None) -> None:
        self.host = host
        self.sources = dict(sources)
        self.settings = settings
        self.policies = host.merge_policies
        select_policy(self.policies, settings.policy)  # fail at start-up, not per request
        self._pool = ThreadPoolExecutor(max_workers=max_workers or max(1, len(self.sources)),
                                        thread_name_prefix="recall-source")
        self.isolate_fraction = isolate_fraction
        self.lanes = lanes or thread_count()  # pool tasks the measured sources are spread over
        self.min_lane_seconds = MIN_LANE_SECONDS
        self._cost_per_query: dict[str, float] = {}  # EWMA of seconds per query, per source

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

        def merge_rows(lo: int, hi: int) -> MergedBatch:
            if lo == 0 and hi == len(queries):
                return merge_batch(per_source, policy, k, combined, queries.exclude, fill)
            sliced = {name: c.slice(lo, hi) for name, c in per_source.items()}
            part_fill = None
            if fill is not None:  # the same object when it is a merged source's answer
                shared = per_source.get(fill[0]) is fill[1]
                part_fill = (fill[0], sliced[fill[0]] if shared else fill[1].slice(lo, hi))
            return merge_batch(sliced, policy, k, combined, queries.exclude[lo:hi], part_fill)

        # Row blocks merge on several cores at once (the merge kernels release the GIL).
        return MergedBatch.concat(map_ranges(merge_rows, row_ranges(len(queries), self.lanes)))

    def _fan_out(self, names: list[str], queries: QueryBatch, k: int, timeout: float | None
                 ) -> tuple[dict[str, Candidates], dict[str, str], dict[str, float]]:
        deadline = None if timeout is None else time.perf_counter() + timeout
        done: dict[str, tuple[Candidates, float] | BaseException] = {}
        futures: list[Future[None]] = []
        shared: list[str] = []
        for name in names:
            if self._isolated(name, len(queries), timeout):
                futures.append(self._pool.submit(self._run_one, name, queries, k, done))
            else:
                shared.append(name)
        for lane in self._lanes(shared, len(queries)):
            futures.append(self._pool.submit(self._run_serially, lane, queries, k, deadline, done))
        wait(futures, timeout=timeout)
        for future in futures:
            future.cancel()  # those not started yet; a running one finishes unobserved
        answers: dict[str, Candidates] = {}
        failed: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for name in names:
            outcome = done.get(name)
            if outcome is None:
                failed[name] = DEADLINE
                self._record(name, timeout or 0.0, len(queries), lower_bound=True)
            elif isinstance(outcome, BaseException):
                failed[name] = f"{type(outcome).__name__}: {outcome}"
            else:
                answers[name], seconds[name] = outcome
        return answers, failed, seconds

    def _run_one(self, name: str, queries: QueryBatch, k: int,
                 done: dict[str, tuple[Candidates, float] | BaseException]) -> None:
        try:
            done[name] = self._retrieve_one(name, queries, k)
        except Exception as error:  # noqa: BLE001 - reported per source
            done[name] = error

    def _run_serially(self, names: list[str], queries: QueryBatch, k: int,
                      deadline: float | None,
                      done: dict[str, tuple[Candidates, float] | BaseException]) -> None:
        for name in names:
            if deadline is not None and time.perf_counter() >= deadline:
                return  # the caller has stopped waiting: the rest count as timed out
            self._run_one(name, queries, k, done)

    def _lanes(self, names: list[str], num_queries: int) -> list[list[str]]:
        """``names`` split into at most ``self.lanes`` groups of similar predicted cost
        (longest first, each to the least loaded group); groups keep the source order.
        Each group gets at least ``min_lane_seconds`` of predicted work, so a small call
        runs in one lane."""
        total = sum(self._predicted(name, num_queries) for name in names)
        count = max(1, min(len(names), self.lanes, int(total / self.min_lane_seconds)))
        lanes: list[list[str]] = [[] for _ in range(count)]
        load = [0.0] * count
        for name in sorted(names, key=lambda n: -self._predicted(n, num_queries)):
            lightest = load.index(min(load))
            lanes[lightest].append(name)
            load[lightest] += self._predicted(name, num_queries)
        order = {name: at for at, name in enumerate(names)}
        return [sorted(lane, key=order.__getitem__) for lane in lanes if lane]

    def _isolated(self, name: str, num_queries: int, timeout: float | None) -> bool:
        """Whether ``name`` gets a pool task of its own: never measured, or predicted to
        take at least ``isolate_fraction`` of the budget (it could hold a lane past it)."""
        predicted = self._predicted(name, num_queries)
        return predicted == float("inf") or (
            timeout is not None and predicted >= self.isolate_fraction * timeout)

    def _predicted(self, name: str, num_queries: int) -> float:
        """Expected seconds of ``name`` for a batch; infinite until it was measured."""
        cost = self._cost_per_query.get(name)
        return float("inf") if cost is None else cost * num_queries

    def _record(self, name: str, seconds: float, num_queries: int,
                lower_bound: bool = False) -> None:
        """Fold one call into the moving average; a timed-out call (``lower_bound``: it took
        at least ``seconds``) raises the estimate to at least that at once."""
        per_query = seconds / max(1, num_queries)
        previous = self._cost_per_query.get(name)
        if previous is None:
            self._cost_per_query[name] = per_query
        elif lower_bound:
            self._cost_per_query[name] = max(previous, per_query)
        else:
            self._cost_per_query[name] = COST_DECAY * previous + (1 - COST_DECAY) * per_query

    def _retrieve_one(self, name: str, queries: QueryBatch, k: int) -> tuple[Candidates, float]:
        source = self.sources[name]
        started = time.perf_counter()
        candidates = self.host.retrieve(source.spec.kind, source.handle, queries, k)
        took = time.perf_counter() - started
        self._record(name, took, len(queries))
        if not isinstance(candidates, Candidates) or len(candidates) != len(queries):
            raise TypeError(f"source {name!r} returned {type(candidates).__name__} "
                            f"for {len(queries)} queries")
        return candidates, took


def engine_for_project(project: Project, host: PluginHost,
                       names: Sequence[str] | None = None) -> tuple[RecallEngine, Dataset]:
    """Load the project's (named) sources from their current artifacts into an engine.

    The fallback source is loaded too when it is configured, so shortfalls
    can be filled even when a request names a subset.
    """
    from recall_core.artifacts import ArtifactStore
    from recall_core.data.dataset import Dataset
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
