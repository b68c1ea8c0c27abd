"""Item-CF: IUF-weighted co-occurrence counts, proximity-weighted and directional.

With ``window = 0`` this is the textbook IUF cosine (``norm_exponent = 0.5``):
``sim(i, j) = Σ_u w_u [i ∈ I_u][j ∈ I_u] / sqrt(n_i n_j)``. With a window, a
user's pair counts ``w_u / d**p`` when j came ``d`` positions after i and
``backward_weight`` times that when it came before: on leave-one-out next-item
data, items consumed close together, in that order, predict each other best.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recall_core.contract import TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.i2i.config import I2IConfig
from recall_plugins.i2i.neighbours import NeighbourTable, normalise, truncate
from recall_plugins.i2i.windows import forward_pairs, offset_weights

_OFFSETS_PER_BATCH = 8  # offsets whose pairs are summed into one sparse matrix at a time


def user_weights(dataset: Dataset, iuf: bool) -> np.ndarray:
    """Per-user weight of their co-occurrences: IUF ``1/log(1 + |I_u|)`` or 1."""
    lengths = np.diff(dataset.indptr).astype(np.float64)
    if not iuf:
        return np.ones_like(lengths)
    return 1.0 / np.log1p(np.maximum(lengths, 1.0))


def whole_history_counts(dataset: Dataset, weights: np.ndarray) -> sp.csr_matrix:
    """``C = Bᵀ diag(w) B`` over the binary user × item matrix (repeats count once)."""
    shape = (dataset.num_users, dataset.num_items)
    binary = sp.csr_matrix((np.ones(dataset.num_interactions), (dataset.users, dataset.items)),
                           shape=shape)
    binary.data[:] = 1.0  # duplicates were summed: a re-consumed item still counts once
    weighted = sp.diags(weights) @ binary
    return (binary.T @ weighted).tocsr()


def windowed_counts(dataset: Dataset, weights: np.ndarray, config: I2IConfig,
                    context: TrainContext) -> sp.csr_matrix:
    """Directional proximity-weighted counts: forward pairs + ``backward_weight`` × reversed."""
    n = dataset.num_items
    items = dataset.items.astype(np.int64)
    row_weight = weights[dataset.users]
    proximity = offset_weights(config.window, config.proximity_power)
    forward = sp.csr_matrix((n, n), dtype=np.float64)
    batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with context.progress.task("item-CF co-occurrences", total=config.window) as task:
        for d, rows in forward_pairs(dataset, config.window):
            batch.append((items[rows], items[rows + d], row_weight[rows] * proximity[d - 1]))
            if len(batch) == _OFFSETS_PER_BATCH:
                forward = forward + _to_csr(batch, n)
                task.advance(len(batch))
                batch = []
        if batch:
            forward = forward + _to_csr(batch, n)
            task.advance(len(batch))
    return (forward + config.backward_weight * forward.T).tocsr()


def _to_csr(batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> sp.csr_matrix:
    rows, cols, values = (np.concatenate(column) for column in zip(*batch))
    return sp.coo_matrix((values, (rows, cols)), shape=(n, n)).tocsr()  # sums duplicates


def itemcf_table(dataset: Dataset, config: I2IConfig, context: TrainContext) -> NeighbourTable:
    """Train item-CF: co-occurrence counts → normalised similarity → top-N per item."""
    weights = user_weights(dataset, config.iuf)
    if config.window == 0:
        counts = whole_history_counts(dataset, weights)
    else:
        counts = windowed_counts(dataset, weights, config, context)
    similarity = normalise(counts, dataset.item_popularity(), config.norm_exponent)
    return truncate(similarity, config.neighbours)
