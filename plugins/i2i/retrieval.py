"""Serving an i2i neighbour table: recent items trigger, neighbour lists are summed.

Each query's last ``triggers`` items (the latest weighing 1, each older one
``recency_decay`` times less) add up their neighbour lists into dense scores,
a chunk of queries per compiled call (:mod:`recall_plugins.i2i.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recall_core.contract import Candidates, QueryBatch
from recall_core.ranking import retrieve_in_chunks
from recall_plugins.i2i.neighbours import NeighbourTable

_SCORE_CELLS = 1 << 24  # dense score cells per chunk (64 MB of float32)


def triggers_of(queries: QueryBatch, num_items: int, triggers: int,
                decay: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's most recent items and their weights: ``(items, weights, bounds)``.

    Query q's triggers are ``items[bounds[q]:bounds[q + 1]]``, the latest weighing 1
    and each older one ``decay`` times less. Items outside the catalogue (newer
    than the table) are skipped; an item occurring twice counts twice.
    """
    batch = len(queries)
    lengths = np.fromiter((len(h) for h in queries.histories), np.int64, count=batch)
    if lengths.sum() == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64), np.zeros(batch + 1, np.int64)
    items = np.concatenate([np.asarray(h, np.int64) for h in queries.histories])
    ends = np.cumsum(lengths)
    rows = np.repeat(np.arange(batch), lengths)
    age = ends[rows] - 1 - np.arange(len(items))  # 0 = the latest item of the query
    keep = (age < triggers) & (items >= 0) & (items < num_items)
    bounds = np.zeros(batch + 1, np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=batch), out=bounds[1:])
    return items[keep], decay ** age[keep].astype(np.float64), bounds


@dataclass(frozen=True)
class I2IHandle:
    """A loaded i2i source: its neighbour table and how to trigger it."""

    table: NeighbourTable
    triggers: int
    recency_decay: float
    algorithm: str


    @property
    def num_items(self) -> int:
        return self.table.num_items

    def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
        """Top-k by summed neighbour similarity; never excluded or zero-score items."""
        from recall_plugins.i2i.scoring import accumulate  # numba: only when serving

        table, num_items = self.table, self.num_items

        def score(chunk: QueryBatch) -> np.ndarray:
            items, weights, bounds = triggers_of(chunk, num_items, self.triggers,
                                                 self.recency_decay)
            scores = accumulate(table.indptr, table.indices, table.scores, items, weights,
                                bounds, num_items)
            scores[scores <= 0] = -np.inf  # unreached items are not candidates
            return scores

        chunk_size = max(1, min(512, _SCORE_CELLS // max(num_items, 1)))
        return retrieve_in_chunks(queries, k, score, chunk_size=chunk_size)
