"""Built-in merge policies: ``quota``, ``weighted`` and ``rrf``.

Each policy fuses several sources' ranked lists for one query into one list
of at most ``k`` distinct items. They share these rules:

- ``weights`` maps a source name to its weight; a source missing from it
  weighs 1.0, a source weighing 0 is ignored, a negative weight is a
  ``ValueError``.
- Items ``< 0`` (padding) are ignored; an item repeated inside one list
  counts once, at its best (first) rank.
- Ties are broken deterministically (never by hash or sort instability), so
  the same inputs always give the same list.

The fused score is what each policy ranks by; see each policy's function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from recall_core import hookimpl
from recall_core.contract import BatchLists, MergePolicy, SourceList

RRF_C = 60.0
"""The RRF smoothing constant c of ``1 / (c + rank)`` (Cormack et al., SIGIR'09).

60 is the value from the paper and what most search engines use: large enough
that the top few ranks of one source cannot drown the agreement of others.
"""


# ---- shared helpers ----------------------------------------------------------
def source_weights(lists: Sequence[SourceList], weights: Mapping[str, float]) -> list[float]:
    """The weight of each list (1.0 when unnamed); raises ValueError on a bad weight."""
    return weights_of([source_list.source for source_list in lists], weights)


def weights_of(names: Sequence[str], weights: Mapping[str, float]) -> list[float]:
    """The weight of each named source (1.0 when unnamed); ValueError on a bad weight."""
    out = []
    for name in names:
        weight = float(weights.get(name, 1.0))
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of source {name!r} must be a finite number >= 0 "
                             f"(got {weight})")
        out.append(weight)
    return out


def _clean(source_list: SourceList) -> tuple[np.ndarray, np.ndarray]:
    """A list's (items, scores) without padding and without repeats (first kept)."""
    items = np.asarray(source_list.items, dtype=np.int64)
    scores = np.asarray(source_list.scores, dtype=np.float64)
    if source_list.clean:
        return items, scores
    if items.size and items.min() < 0:
        valid = items >= 0
        items, scores = items[valid], scores[valid]
    as_list = items.tolist()
    if len(set(as_list)) != len(as_list):  # rare (a misbehaving source): keep first occurrences
        first: dict[int, int] = {}
        for at, item in enumerate(as_list):
            first.setdefault(item, at)
        keep = list(first.values())  # ascending: dicts keep first-insertion order
        items, scores = items[keep], scores[keep]
    return items, scores


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.float64)


# ---- quota ---------------------------------------------------------------------
def fuse_quota(lists: Sequence[SourceList], k: int,
               weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-source quota of ``k`` in proportion to weight, with leftover redistribution.

    Each source gets ``k·w_s/Σw`` slots (largest-remainder rounding). The slots
    are interleaved so that every prefix of the answer mixes the sources in
    proportion too: source s's j-th slot sits at ``(j + ½) / quota_s``
    (Sainte-Laguë order; ties by list order). At its slot a source takes its
    best item not taken yet. A source that runs out leaves its unused slots;
    they are apportioned again, by weight, among the sources that still have
    items, and appended after the first round; repeated until ``k`` items are
    taken or every source is exhausted.

    Fused score: ``(k - position) / k`` with position 0-based, i.e. 1.0 for the
    first item, decreasing, always > 0 — the quota order *is* the ranking.
    """
    source_w = source_weights(lists, weights)
    cleaned = [_clean(sl)[0] for sl in lists]
    width = max((len(items) for items in cleaned), default=0)
    matrix = np.full((len(lists), 1, width), -1, dtype=np.int64)
    for s, items in enumerate(cleaned):
        matrix[s, 0, : len(items)] = items
    items, scores, lengths = _quota_matrix(matrix, k, source_w)
    return items[0, : lengths[0]], scores[0, : lengths[0]]


def fuse_quota_batch(lists: BatchLists, k: int,
                     weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fuse_quota` for every row of a batch in one compiled pass."""
    return _quota_matrix(lists.items, k, weights_of(lists.sources, weights))


def _quota_matrix(matrix: np.ndarray, k: int,
                  source_w: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from recall_core import kernels  # numba: imported only when a merge runs

    if k <= 0 or matrix.size == 0:
        rows = matrix.shape[1]
        return (np.full((rows, max(k, 0)), -1, np.int64), np.zeros((rows, max(k, 0))),
                np.zeros(rows, np.int64))
    stamps = kernels.dense_stamps(1, matrix.size, matrix)
    items, lengths = kernels.quota_rows(matrix, np.asarray(source_w, np.float64), k, stamps)
    scores = np.broadcast_to((k - np.arange(k, dtype=np.float64)) / k, items.shape).copy()
    scores[items < 0] = 0.0
    return items, scores, lengths


# ---- additive fusions (weighted, rrf) -------------------------------------------------
def _fuse_additive(lists: Sequence[SourceList], k: int, weights: Mapping[str, float],
                   contribution: str) -> tuple[np.ndarray, np.ndarray]:
    """Σ over sources of ``weight × contribution``, best first.

    Ties: best rank in any source, then earlier source, then smaller item id.

    ``contribution`` is ``"minmax"`` (the per-source min-max normalised score)
    or ``"rrf"`` (``1 / (RRF_C + rank)``, rank 1-based).
    """
    source_w = source_weights(lists, weights)
    parts_items, parts_value, parts_key = [], [], []
    for order, (source_list, weight) in enumerate(zip(lists, source_w)):
        items, scores = _clean(source_list) if weight > 0 else _empty()
        if len(items) == 0:
            continue
        ranks = np.arange(1, len(items) + 1, dtype=np.int64)
        value = _minmax(scores) if contribution == "minmax" else 1.0 / (RRF_C + ranks)
        parts_items.append(items)
        parts_value.append(weight * value)
        # One integer orders "best rank, then earlier source" for the tie-break.
        parts_key.append(ranks * (len(lists) + 1) + order)
    if k <= 0 or not parts_items:
        return _empty()
    unique, fused, best_key = _group_by_item(
        np.concatenate(parts_items), np.concatenate(parts_value), np.concatenate(parts_key))
    # lexsort: last key is primary -> fused desc, then best rank/source, then item id.
    order = np.lexsort((unique, best_key, -fused))[:k]
    return unique[order], fused[order]


def _group_by_item(items: np.ndarray, values: np.ndarray,
                   keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct items with the sum of their values and the min of their keys.

    Sort-based rather than ``np.unique``: on lists of a few hundred entries the
    per-call overhead, not the work, dominates, and this runs once per query.
    """
    order = np.argsort(items, kind="stable")
    items, values, keys = items[order], values[order], keys[order]
    starts = np.flatnonzero(np.concatenate(([True], items[1:] != items[:-1])))
    return items[starts], np.add.reduceat(values, starts), np.minimum.reduceat(keys, starts)


def _minmax(scores: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1] by the list's min and max; a flat list maps to 1.0.

    Non-finite scores (a source's -inf/nan) are clamped to the finite range so
    one bad value cannot turn the whole list into NaN.
    """
    low, high = scores.min(), scores.max()
    if not (np.isfinite(low) and np.isfinite(high)):  # NaN propagates into min/max too
        finite = np.isfinite(scores)
        if not finite.any():
            return np.ones(len(scores))
        low, high = scores[finite].min(), scores[finite].max()
        scores = np.clip(np.nan_to_num(scores, nan=low, posinf=high, neginf=low), low, high)
    if high == low:
        return np.ones(len(scores))
    return (scores - low) / (high - low)


def fuse_weighted(lists: Sequence[SourceList], k: int,
                  weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted fusion of per-source min-max normalised scores.

    Each source's raw scores are mapped to [0, 1] over its own list (a
    one-item or flat list maps to 1.0), so sources with incomparable score
    scales (cosine, inner product, counts) can be added. Fused score:
    ``Σ_s w_s · norm_s(item)`` over the sources that returned the item.
    Ties: best rank in any source, then earlier source, then smaller item id.
    """
    return _fuse_additive(lists, k, weights, "minmax")


def fuse_rrf(lists: Sequence[SourceList], k: int,
             weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted reciprocal rank fusion: ``Σ_s w_s / (RRF_C + rank_s(item))``, rank 1-based.

    Uses ranks only, so it needs no score calibration at all. Ties as in
    :func:`fuse_weighted`.
    """
    return _fuse_additive(lists, k, weights, "rrf")


POLICIES = (
    MergePolicy("quota", "per-source quota of k by weight; unused quota goes to the others",
                fuse_quota, fuse_quota_batch),
    MergePolicy("weighted", "weighted sum of per-source min-max normalised scores",
                fuse_weighted),
    MergePolicy("rrf", f"weighted reciprocal rank fusion, sum of w / ({RRF_C:g} + rank)",
                fuse_rrf),
)


@hookimpl
def recall_merge_policies() -> list[MergePolicy]:
    """The built-in policies: ``quota``, ``weighted``, ``rrf``."""
    return list(POLICIES)
