"""Per-group quotas of a merged list: M_k = M·w_k / Σ w, w_k = p_k^α, capped by supply.

Pure numpy and independent of dnc_ebr (any source or merge policy that splits a
list across clusters, interests or sources can use it). Vectorised over a batch
of queries: row i of ``probabilities`` is query i's distribution over K groups.
"""

from __future__ import annotations

import numpy as np


def largest_remainder(totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split ``totals[i]`` seats over ``weights[i]`` proportionally, summing exactly.

    Floors of the exact shares, then one more seat each to the largest
    remainders (ties to the lower group index). A row whose weights are all
    zero gets nothing. Returns ``(Q, K)`` int64.
    """
    weights = np.asarray(weights, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.int64)
    weight_sum = weights.sum(axis=1, keepdims=True)
    live = weight_sum[:, 0] > 0
    exact = np.where(live[:, None], totals[:, None] * weights / np.where(live[:, None], weight_sum, 1.0), 0.0)
    seats = np.floor(exact + 1e-9).astype(np.int64)
    missing = np.where(live, totals - seats.sum(axis=1), 0)
    order = np.argsort(-(exact - seats), axis=1, kind="stable")  # largest remainder first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(weights.shape[1])[None, :].repeat(len(weights), 0), axis=1)
    return seats + (rank < missing[:, None])


def allocate_quota(probabilities: np.ndarray, total: int, alpha: float = 1.0,
                   capacity: np.ndarray | None = None) -> np.ndarray:
    """Seats ``(Q, K)`` per group: ``total·p^α/Σp^α``, rounded to sum exactly to ``total``.

    ``alpha = 0`` gives every group an equal share. ``capacity[i, k]`` (default:
    unlimited) is how many items group k can supply for query i; a group's
    seats beyond it are leftovers, redistributed in proportion to the weights of
    the groups that still have items (if those weights are all zero, equally
    among them), until ``total`` — or every group's supply — is used up.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (queries, groups), got shape {p.shape}")
    weights = np.ones_like(p) if alpha == 0 else p ** alpha
    cap = np.full(p.shape, total, np.int64) if capacity is None else np.asarray(capacity, np.int64)
    goal = np.minimum(max(int(total), 0), cap.clip(min=0).sum(axis=1))
    seats = np.zeros(p.shape, np.int64)
    for _ in range(p.shape[1] + 1):  # each round fills at least one group or finishes
        need = goal - seats.sum(axis=1)
        if not need.any():
            break
        open_ = seats < cap
        w = weights * open_
        w = np.where((w.sum(axis=1, keepdims=True) > 0), w, open_.astype(np.float64))
        seats = np.minimum(seats + largest_remainder(need, w), cap)
    return seats
