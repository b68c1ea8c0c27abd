"""``recall eval``: train every source on a protocol's split, retrieve, merge, score.

Sources are trained on the split's training part only (never on the targets)
into a separate artifact namespace keyed by the split, and reused while
kind, config, plugin version and split are unchanged. Retrieval and merging
go through :class:`~recall_core.engine.RecallEngine`, the code path the
server uses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recall_core.artifacts import ArtifactStore
from recall_core.data.dataset import Dataset
from recall_core.engine import MergeSettings, RecallEngine
from recall_core.errors import ConfigError, RecallError
from recall_core.evaluation.metrics import coverage, ranking_metrics
from recall_core.evaluation.protocols import EvalQueries, make_split
from recall_core.host import PluginHost
from recall_core.progress import ProgressReporter, SilentProgress
from recall_core.sources import LoadedSource, SourceManager, SourceSpec

MERGED = "merged"


@dataclass
class EvalReport:
    """Per-source and merged metrics of one evaluation run."""

    protocol: str
    dataset: dict[str, int]
    ks: list[int]
    sources: dict[str, dict[str, float]] = field(default_factory=dict)
    merged: dict[str, float] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    queries: int = 0

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` layout (metric keys ``HR@K``, ``Recall@K``, ``NDCG@K``)."""
        return {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "queries": self.queries,
            "sources": self.sources,
            "merged": self.merged,
            "timings": self.timings,
            "failed": self.failed,
        }


def evaluate(host: PluginHost, dataset: Dataset, specs: Sequence[SourceSpec],
             settings: MergeSettings, *, protocol: str = "paper", ks: Sequence[int] = (10, 20, 50),
             seed: int = 0, cache_root: Path, split_name: str = "test",
             progress: ProgressReporter | None = None, threads: int = 2) -> EvalReport:
    """Evaluate ``specs`` and their merge on ``dataset`` under ``protocol``."""
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ConfigError("cut-offs K must be positive integers")
    if not specs:
        raise ConfigError("nothing to evaluate: no sources")
    progress = progress or SilentProgress()
    split = make_split(dataset, protocol, seed)
    queries = split.test if split_name == "test" else split.valid
    store = ArtifactStore(cache_root / f"{protocol}-s{seed}-{split.train.fingerprint}")
    manager = SourceManager(host, store, threads)
    report = EvalReport(protocol, dataset.summary(), ks, queries=len(queries))
    loaded = {}
    for spec in specs:
        started = time.perf_counter()
        loaded[spec.name] = _trained_and_loaded(manager, spec, split.train, progress, split.valid)
        report.timings[spec.name] = {"prepare_seconds": round(time.perf_counter() - started, 3)}
    _score(host, loaded, settings, queries, ks, dataset.num_items, report)
    return report


def _trained_and_loaded(manager: SourceManager, spec: SourceSpec, train: Dataset,
                        progress: ProgressReporter, validation: EvalQueries) -> LoadedSource:
    """Reuse a cached evaluation artifact when nothing that shapes it changed."""
    try:
        current = manager.store.current(spec.name)
        origin = manager.host.kind(spec.kind).origin
        same = (current.manifest.get("kind") == spec.kind
                and current.manifest.get("config") == spec.config.model_dump(mode="json")
                and current.manifest.get("plugin", {}).get("version") == origin.version
                and current.indexed)
        if same:
            return manager.load(spec, train.fingerprint)
    except RecallError:
        pass  # no usable cache: train afresh below
    progress.log(f"training {spec.name} ({spec.kind}) on the evaluation split")
    manager.train(spec, train, progress, validation=validation)
    return manager.index(spec)


def _score(host: PluginHost, loaded: dict[str, LoadedSource], settings: MergeSettings,
           queries: EvalQueries, ks: list[int], num_items: int, report: EvalReport) -> None:
    k = max(ks)
    engine = RecallEngine(host, loaded, _only_loaded(settings, loaded))
    try:
        started = time.perf_counter()
        result = engine.retrieve(queries.queries, k)
        total = time.perf_counter() - started
    finally:
        engine.close()
    for name, candidates in result.per_source.items():
        report.sources[name] = _metrics(candidates.items, queries, ks, num_items)
        report.timings[name]["retrieve_seconds"] = round(result.seconds[name], 3)
    report.failed = dict(result.failed)
    report.merged = _metrics(result.merged.items_matrix(k), queries, ks, num_items)
    report.timings[MERGED] = {"retrieve_and_merge_seconds": round(total, 3)}


def _metrics(items: np.ndarray, queries: EvalQueries, ks: list[int],
             num_items: int) -> dict[str, float]:
    metrics = ranking_metrics(items, queries.targets, ks, num_items)
    for k in ks:
        metrics[f"Coverage@{k}"] = coverage(items, num_items, k)
    return {name: round(value, 6) for name, value in metrics.items()}


def _only_loaded(settings: MergeSettings, loaded: dict[str, LoadedSource]) -> MergeSettings:
    fallback = settings.fallback if settings.fallback in loaded else None
    return MergeSettings(settings.policy, settings.weights, fallback)
