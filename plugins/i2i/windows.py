"""Sequence-proximity pairs: which interactions lie ``d`` positions apart in one user's sequence.

The dataset keeps each user's interactions contiguous and time-ordered, so
the pairs at offset ``d`` are simply rows ``t`` and ``t + d`` of the same user:
one vectorised comparison per offset, never a loop over interactions.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from recall_core.data.dataset import Dataset


def offset_weights(window: int, power: float) -> np.ndarray:
    """Weight of a pair ``d`` positions apart, for ``d = 1..window``: ``1 / d**power``."""
    return 1.0 / np.arange(1, window + 1, dtype=np.float64) ** power


def forward_pairs(dataset: Dataset, window: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(d, t)`` for ``d = 1..window``: rows ``t`` and ``t + d`` share a user."""
    users = dataset.users
    for d in range(1, min(window, max(len(users) - 1, 0)) + 1):
        yield d, np.flatnonzero(users[:-d] == users[d:])


def window_rows(dataset: Dataset, rows: np.ndarray, window: int, power: float,
                backward_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proximity-weighted neighbourhoods of the interactions ``rows``.

    Returns ``(which, item, weight)`` triplets: the user of interaction
    ``rows[which]`` consumed ``item`` ``d ≤ window`` positions after it (weight
    ``1/d**power``) or before it (weight ``backward_weight/d**power``).
    """
    weights = offset_weights(window, power)
    offsets = np.concatenate([-np.arange(window, 0, -1), np.arange(1, window + 1)])
    offset_weight = np.concatenate([backward_weight * weights[::-1], weights])
    indptr = dataset.indptr
    user = dataset.users[rows]
    positions = rows[:, None] + offsets[None, :]  # (len(rows), 2 * window)
    inside = (positions >= indptr[user][:, None]) & (positions < indptr[user + 1][:, None])
    which, slot = np.nonzero(inside)
    return which, dataset.items[positions[which, slot]].astype(np.int64), offset_weight[slot]
