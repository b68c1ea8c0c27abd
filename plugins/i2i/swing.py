"""Swing (Yang et al., Alibaba 2020): item pairs that *pairs of users* both consumed.

``swing(i, j) = Σ_{u ≠ v ∈ U_i ∩ U_j} w_u w_v / (alpha + |I_u ∩ I_v|)`` over
ordered user pairs, with the user-activity weight
``w_u = (|I_u| + activity_offset) ** -activity_power``. Two users who share
little except i and j are strong evidence; two heavy users who share
everything are not.

It is computed one item i at a time, fully vectorised inside: take i's users
(sampled down to ``max_users_per_item``, seeded), build their dense rows
``R`` (user × candidate item), the pair weights ``K`` (user × user), and
``swing(i, ·) = Σ_u R[u] ∘ (K R)[u]``, two small matrix products. With a
``window`` the rows are proximity-weighted around each user's consumption of
i (as in item-CF), so a pair of users counts most for items both consumed
right after i. Each row is normalised and truncated at once, so memory stays
at one item's block, never items × items.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recall_core.contract import TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.i2i.config import I2IConfig
from recall_plugins.i2i.neighbours import NeighbourTable, from_rows, top_n_dense
from recall_plugins.i2i.windows import window_rows

_PROGRESS_STEP = 256  # items between progress updates
DENSE_OVERLAP_MAX_USERS = 8192  # up to here |I_u ∩ I_v| is one users × users table (≤ 256 MB)
_OVERLAP_BLOCK = 1024  # user rows per sparse product while filling that table


class _SwingData:
    """What every per-item step needs, built once."""

    def __init__(self, dataset: Dataset, config: I2IConfig) -> None:
        self.dataset = dataset
        self.config = config
        shape = (dataset.num_users, dataset.num_items)
        binary = sp.csr_matrix((np.ones(dataset.num_interactions, np.float32),
                                (dataset.users, dataset.items)), shape=shape)
        binary.data[:] = 1.0  # repeats count once in |I_u ∩ I_v|
        self.binary = binary
        # Per-item sparse overlap products dominate the cost on small user bases; one
        # table computed up front makes each item's overlaps a cheap gather.
        small = dataset.num_users <= DENSE_OVERLAP_MAX_USERS
        self.overlap = _overlap_table(binary) if small else None
        lengths = np.diff(binary.indptr).astype(np.float64)
        self.user_weight = (lengths + config.activity_offset) ** -config.activity_power
        # Interaction rows grouped by item, each group in dataset (user, time) order.
        self.by_item = np.argsort(dataset.items, kind="stable")
        self.item_start = np.searchsorted(dataset.items[self.by_item],
                                          np.arange(dataset.num_items + 1))
        popularity = np.maximum(dataset.item_popularity(), 1.0)
        self.row_norm = popularity ** -config.norm_exponent
        self.col_norm = popularity ** -(1.0 - config.norm_exponent)

    def occurrences(self, item: int, rng: np.random.Generator) -> np.ndarray:
        """Interaction rows of ``item``, sampled down to the per-item cap."""
        rows = self.by_item[self.item_start[item] : self.item_start[item + 1]]
        cap = self.config.max_users_per_item
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        return rows

    def user_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``(len(rows), candidates)`` matrix R and its candidate item ids."""
        config = self.config
        if config.window > 0:
            which, items, weights = window_rows(self.dataset, rows, config.window,
                                                config.proximity_power, config.backward_weight)
        else:
            sub = self.binary[self.dataset.users[rows]]
            which = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
            items, weights = sub.indices.astype(np.int64), sub.data.astype(np.float64)
        columns, column = np.unique(items, return_inverse=True)
        dense = np.bincount(which * len(columns) + column, weights=weights,
                            minlength=len(rows) * len(columns))
        return dense.reshape(len(rows), len(columns)).astype(np.float32), columns

    def pair_weights(self, users: np.ndarray) -> np.ndarray:
        """``K[u, v] = w_u w_v / (alpha + |I_u ∩ I_v|)``, zero for a user with itself."""
        if self.overlap is not None:
            overlap = self.overlap[np.ix_(users, users)]
        else:
            sub = self.binary[users]
            overlap = (sub @ sub.T).toarray()
        weight = self.user_weight[users]
        pairs = np.outer(weight, weight) / (self.config.alpha + overlap)
        pairs[users[:, None] == users[None, :]] = 0.0
        return pairs.astype(np.float32)

    def item_row(self, item: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Item ``item``'s normalised Swing scores: (candidate ids, scores)."""
        rows = self.occurrences(item, rng)
        if len(rows) < 2:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        dense, columns = self.user_rows(rows)
        pairs = self.pair_weights(self.dataset.users[rows])
        scores = (dense * (pairs @ dense)).sum(axis=0, dtype=np.float64)
        scores *= self.row_norm[item] * self.col_norm[columns]
        scores[columns == item] = 0.0
        return columns, scores


def _overlap_table(binary: sp.csr_matrix) -> np.ndarray:
    """Dense ``|I_u ∩ I_v|`` for every user pair, filled block by block (float32)."""
    users = binary.shape[0]
    table = np.empty((users, users), np.float32)
    transposed = binary.T.tocsc()
    for start in range(0, users, _OVERLAP_BLOCK):
        table[start : start + _OVERLAP_BLOCK] = (binary[start : start + _OVERLAP_BLOCK]
                                                 @ transposed).toarray()
    return table


def swing_table(dataset: Dataset, config: I2IConfig, context: TrainContext) -> NeighbourTable:
    """Train Swing: one normalised, truncated neighbour row per item."""
    data = _SwingData(dataset, config)
    rng = np.random.default_rng(config.seed)
    counts = np.zeros(dataset.num_items, np.int64)
    indices: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    with context.progress.task("Swing similarities", total=dataset.num_items) as task:
        for item in range(dataset.num_items):
            columns, row = data.item_row(item, rng)
            if len(row):
                kept, which, values = top_n_dense(row[None, :], config.neighbours)
                counts[item] = kept[0]
                indices.append(columns[which])
                scores.append(values)
            if (item + 1) % _PROGRESS_STEP == 0 or item + 1 == dataset.num_items:
                task.advance((item % _PROGRESS_STEP) + 1)
    if not indices:
        return from_rows(counts, np.empty(0, np.int64), np.empty(0, np.float32))
    return from_rows(counts, np.concatenate(indices), np.concatenate(scores))
