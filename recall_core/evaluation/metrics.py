"""Vectorised ranking metrics over candidate matrices.

``items`` is a ``(queries, width)`` matrix of ranked item ids (-1 = padding);
``targets`` holds each query's relevant items. With one target per query,
Recall@K equals HR@K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hit_matrix(items: np.ndarray, targets: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """Boolean ``(queries, width)``: is ``items[i, r]`` one of query i's targets?"""
    queries = items.shape[0]
    lengths = np.fromiter((len(t) for t in targets), np.int64, count=queries)
    target_rows = np.repeat(np.arange(queries, dtype=np.int64), lengths)
    target_items = np.concatenate([np.asarray(t, np.int64) for t in targets]) if queries else []
    target_keys = np.unique(target_rows * num_items + target_items)
    keys = np.arange(queries, dtype=np.int64)[:, None] * num_items + items
    hits = np.isin(keys, target_keys)
    return hits & (items >= 0)


def ranking_metrics(
    items: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int], num_items: int
) -> dict[str, float]:
    """Mean HR@K, Recall@K and NDCG@K over the queries, for every K in ``ks``."""
    if items.shape[0] == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "Recall", "NDCG")}
    hits = hit_matrix(items, targets, num_items).astype(np.float64)
    n_targets = np.fromiter((len(t) for t in targets), np.float64, count=len(targets))
    n_targets = np.maximum(n_targets, 1)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    result: dict[str, float] = {}
    for k in sorted(ks):
        top = hits[:, :k]
        found = top.sum(axis=1)
        dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
        ideal_len = np.minimum(n_targets, k).astype(np.int64)
        idcg = np.cumsum(discounts[:k])[np.minimum(ideal_len, len(discounts[:k])) - 1]
        result[f"HR@{k}"] = float((found > 0).mean())
        result[f"Recall@{k}"] = float((found / n_targets).mean())
        result[f"NDCG@{k}"] = float((dcg / idcg).mean())
    return result


def coverage(items: np.ndarray, num_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one query's top k."""
    top = items[:, :k]
    return float(len(np.unique(top[top >= 0])) / max(num_items, 1))
