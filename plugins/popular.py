"""The ``popular`` source: most-consumed items, optionally time-decayed.

It is also the engine's fallback: whatever the other sources leave short is
filled from here, and cold-start users get exactly this list. Training counts
interactions (each weighted ``0.5 ** (age / half_life)`` when a half-life is
set, age measured back from the newest timestamp in the data, and dropped
beyond ``window_days``); indexing stores the global ranking; retrieval walks
down that ranking once per query in a compiled loop, skipping the query's
exclusions (:func:`recall_core.selection.first_allowed`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceConfig, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.errors import ArtifactError
from recall_core.ranking import flat_exclusions

KIND = "popular"
SCORES_FILE = "scores.npy"
RANKING_FILE = "ranking.npy"
RANKED_SCORES_FILE = "ranked_scores.npy"
SECONDS_PER_DAY = 86_400.0  # timestamps are Unix seconds


class PopularConfig(SourceConfig):
    """Popularity: interaction counts, optionally decayed or windowed in time."""

    half_life_days: float | None = Field(None, gt=0)
    """An interaction ``half_life_days`` older than the newest one counts half (None: no decay)."""

    window_days: float | None = Field(None, gt=0)
    """Only count interactions at most this many days older than the newest one (None: all)."""


def popularity_scores(dataset: Dataset, config: PopularConfig) -> np.ndarray:
    """Per-item (decayed, windowed) interaction counts, float64 of length ``num_items``."""
    if dataset.num_interactions == 0:
        return np.zeros(dataset.num_items)
    age_days = (dataset.timestamps.max() - dataset.timestamps) / SECONDS_PER_DAY
    weights = np.ones(dataset.num_interactions)
    if config.half_life_days is not None:
        weights = 0.5 ** (age_days / config.half_life_days)
    if config.window_days is not None:
        weights = np.where(age_days <= config.window_days, weights, 0.0)
    return np.bincount(dataset.items, weights=weights, minlength=dataset.num_items)


@dataclass(frozen=True)
class PopularHandle:
    """The global ranking of the whole catalogue, best first."""

    ranking: np.ndarray  # (ranked,) int64 item ids
    scores: np.ndarray  # (ranked,) float32, non-increasing
    num_items: int

    def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
        """The first k ranked items per query that the query does not exclude."""
        from recall_core.selection import first_allowed  # numba: imported only when serving

        # One compiled walk down the ranking per query, skipping its exclusions (a stamp
        # array over the catalogue): no (queries, k + exclusions) masks to build.
        items, scores = first_allowed(self.ranking, self.scores,
                                      *flat_exclusions(queries.exclude), self.num_items, k)
        return Candidates(items, scores)

    def save(self, directory: Path) -> None:
        np.save(Path(directory) / RANKING_FILE, self.ranking)
        np.save(Path(directory) / RANKED_SCORES_FILE, self.scores)

    @classmethod
    def load(cls, directory: Path, num_items: int) -> PopularHandle:
        try:
            ranking = np.load(Path(directory) / RANKING_FILE, allow_pickle=False)
            scores = np.load(Path(directory) / RANKED_SCORES_FILE, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ArtifactError(f"unreadable popular index in {directory}: {error}") from None
        if ranking.shape != scores.shape or (len(ranking) and (
                ranking.min() < 0 or ranking.max() >= num_items)):
            raise ArtifactError(f"corrupt popular index in {directory}")
        return cls(ranking.astype(np.int64), scores.astype(np.float32), num_items)


def _load_scores(artifact_dir: Path) -> np.ndarray:
    try:
        return np.load(Path(artifact_dir) / SCORES_FILE, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ArtifactError(f"unreadable popular scores in {artifact_dir}: {error}") from None


def _ranking(scores: np.ndarray) -> PopularHandle:
    # The whole catalogue is ranked, never-consumed items last (score 0): as the fallback
    # this list must be able to fill any shortfall. Ties: lower item id first.
    order = np.argsort(-scores, kind="stable")
    return PopularHandle(order.astype(np.int64), scores[order].astype(np.float32), len(scores))


@hookimpl
def recall_source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, PopularConfig,
                       "most popular items (optionally time-decayed); the fallback that fills "
                       "shortfalls and serves cold-start users")]


@hookimpl
def recall_train(kind: str, config: PopularConfig, dataset: Dataset,
                 context: TrainContext) -> dict[str, Any] | None:
    if kind != KIND:
        return None
    started = time.perf_counter()
    scores = popularity_scores(dataset, config)
    np.save(Path(context.workdir) / SCORES_FILE, scores)
    return {"train_seconds": round(time.perf_counter() - started, 3),
            "items_scored": int((scores > 0).sum())}


@hookimpl
def recall_index(kind: str, config: PopularConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    handle = _ranking(_load_scores(artifact_dir))
    handle.save(index_dir)
    return handle


@hookimpl
def recall_load(kind: str, config: PopularConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    return PopularHandle.load(index_dir, len(_load_scores(artifact_dir)))


@hookimpl
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
    if kind != KIND:
        return None
    return handle.retrieve(queries, k)
