"""Retrieval for multi-interest sources: per-interest search, max-score merge, diversity.

Each query has K interest vectors (some masked: MIND's adaptive count). Every
valid interest is searched on its own (one batched faiss search over all the
queries' valid interests), the K lists are merged by max score and deduped,
and each candidate keeps the index of the interest that scored it best
(``Candidates.groups``, surfaced as provenance).

Controllable aggregation (ComiRec, Cen et al. KDD'20 §3.4): with λ > 0 the
final list greedily maximises ``score − λ · (items already chosen in the same
category)``. The penalty of a category grows by λ with each of its picks, so a
category's items are taken in score order and the j-th one (j = 0, 1, ...)
enters with value ``score − λ j``; because these values decrease inside each
category, the greedy equals a single sort by that value — exact and fully
vectorised (O(P log P) for P pooled candidates, no k sequential steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recall_core import selection
from recall_core.contract import Candidates
from recall_core.ranking import flat_exclusions
from recall_core.training.faiss_index import ItemIndex


EXACT_CELLS = 1 << 23
"""Scores per exact-path chunk (queries × interests × items; 32 MB of float32)."""


@dataclass(frozen=True)
class AggregationSettings:
    """How per-interest lists become one: λ and the item -> category map it uses."""

    diversity_lambda: float = 0.0
    categories: np.ndarray | None = None  # (N,) int category of each item; None = λ unused
    pool: int = 1
    """With λ > 0, each interest fetches ``pool · k`` candidates for the greedy to choose
    from (1 = k, the reference's pool); a wider pool reaches further for unseen categories."""


def search_interests(index: ItemIndex, interests: np.ndarray, valid: np.ndarray, k: int,
                     exclude: Sequence[np.ndarray],
                     settings: AggregationSettings = AggregationSettings()) -> Candidates:
    """The merged top k of every query from its valid interests.

    ``interests`` ``(Q, K, d)``, ``valid`` ``(Q, K)`` bool. Each interest
    fetches k items (so the merged pool always holds k distinct ones when the
    catalogue does); masked interests and queries without any produce nothing.
    """
    queries, interest_count, _ = interests.shape
    width = max(0, min(k, index.num_items))
    rows, heads = np.nonzero(valid)  # one search row per valid interest
    if len(rows) == 0 or width == 0:
        return Candidates.padding(queries, width, grouped=True)
    if index.exact_scores and not _diversifies(settings):
        return _exact_max(index, interests, valid, width, exclude)
    fetched = min(index.num_items, width * max(1, settings.pool)) if _diversifies(
        settings) else width
    found = index.search(interests[rows, heads], fetched, [exclude[r] for r in rows])
    pool_items = np.full((queries, interest_count, found.items.shape[1]), -1, np.int64)
    pool_scores = np.full(pool_items.shape, -np.inf, np.float32)
    pool_items[rows, heads], pool_scores[rows, heads] = found.items, found.scores
    groups = np.broadcast_to(np.arange(interest_count)[None, :, None], pool_items.shape)
    # (Q, K, w) -> (Q, K w): every interest's list side by side.
    return merge_pool(pool_items.reshape(queries, -1), pool_scores.reshape(queries, -1),
                      groups.reshape(queries, -1), width, settings)


def _diversifies(settings: AggregationSettings) -> bool:
    return settings.diversity_lambda > 0 and settings.categories is not None


def _exact_max(index: ItemIndex, interests: np.ndarray, valid: np.ndarray, k: int,
               exclude: Sequence[np.ndarray]) -> Candidates:
    """The max-score merge computed directly: each item's best interest score, top k.

    Equal to merging the per-interest top-k lists by max (an item outside its best
    interest's top k has k items above it), but one top-k instead of K plus a dedupe.
    """
    queries, interest_count, dim = interests.shape
    step = max(1, EXACT_CELLS // (interest_count * index.num_items))
    parts = []
    for start in range(0, queries, step):
        rows = slice(start, start + step)
        scores = index.score_all(interests[rows].reshape(-1, dim)).reshape(
            -1, interest_count, index.num_items)
        keys = selection.best_interest_keys(scores, valid[rows], *flat_exclusions(exclude[rows]),
                                            k)
        # Ties went to the lower interest, as the dedupe's do.
        parts.append(Candidates(*selection.ranked_grouped_keys(keys, k)))
    return parts[0] if len(parts) == 1 else Candidates.concat(parts)


def merge_pool(items: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int,
               settings: AggregationSettings = AggregationSettings()) -> Candidates:
    """Dedupe pooled candidates ``(Q, P)`` by max score, then keep the k best.

    With ``settings.diversity_lambda > 0`` and categories, "best" is the greedy
    category-penalised value and the returned scores are those values (so rows
    stay sorted by score).
    """
    items, scores, groups = dedupe_max(items, scores, groups)
    if _diversifies(settings):
        scores = scores - settings.diversity_lambda * category_rank(items, scores,
                                                                    settings.categories)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    items = np.take_along_axis(items, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    groups = np.take_along_axis(groups, order, axis=1)
    missing = items < 0
    scores[missing], groups[missing] = -np.inf, -1
    return Candidates(items, scores, groups)


def dedupe_max(items: np.ndarray, scores: np.ndarray, groups: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep each row's best-scored copy of every item; the other copies become padding."""
    queries, width = items.shape
    items, groups = items.copy(), groups.copy()
    scores = np.where(items >= 0, scores, -np.inf).astype(np.float32)
    # Sort each row by (item, -score): the first of each item run is its best copy.
    order = np.lexsort((-scores, items), axis=1) if width else np.zeros((queries, 0), np.int64)
    sorted_items = np.take_along_axis(items, order, axis=1)
    repeat = np.zeros_like(sorted_items, dtype=bool)
    repeat[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    drop = np.zeros_like(repeat)
    np.put_along_axis(drop, order, repeat, axis=1)
    drop |= items < 0
    items[drop], groups[drop] = -1, -1
    scores = np.where(drop, -np.inf, scores)
    return items, scores, groups


def category_rank(items: np.ndarray, scores: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """``(Q, P)``: how many better-scored candidates of the row share each item's category."""
    category = np.where(items >= 0, categories[np.maximum(items, 0)], -1).astype(np.int64)
    order = np.lexsort((-scores, category), axis=1)  # by category, best first inside it
    sorted_category = np.take_along_axis(category, order, axis=1)
    position = np.broadcast_to(np.arange(items.shape[1]), items.shape)
    new_run = np.ones_like(sorted_category, dtype=bool)
    new_run[:, 1:] = sorted_category[:, 1:] != sorted_category[:, :-1]
    run_start = np.maximum.accumulate(np.where(new_run, position, 0), axis=1)
    rank = np.empty_like(position)
    np.put_along_axis(rank, order, position - run_start, axis=1)
    return np.where(items >= 0, rank, 0)


def category_diversity(items: np.ndarray, categories: np.ndarray, k: int) -> float:
    """Diversity@k: mean over rows of the share of item pairs in different categories.

    Items without a category (-1) count as a category of their own each.
    """
    values = []
    for row in items[:, :k]:
        row = row[row >= 0]
        if len(row) < 2:
            continue
        category = categories[row].astype(np.int64)
        category = np.where(category < 0, -1 - np.arange(len(row)), category)
        same = (category[:, None] == category[None, :]).sum() - len(row)
        values.append(1.0 - same / (len(row) * (len(row) - 1)))
    return float(np.mean(values)) if values else 0.0
