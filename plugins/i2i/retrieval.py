"""Serving an i2i neighbour table: recent items trigger, neighbour lists are summed.

A batch becomes a sparse ``(queries × items)`` trigger matrix (the last
``triggers`` items of each history, the latest weighing 1 and each older one
``recency_decay`` times less); multiplying it by the neighbour table scores a
whole chunk of queries in one sparse product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recall_core.contract import Candidates, QueryBatch
from recall_core.ranking import retrieve_in_chunks
from recall_plugins.i2i.neighbours import NeighbourTable

_SCORE_CELLS = 1 << 24  # dense score cells per chunk (64 MB of float32)


def trigger_matrix(queries: QueryBatch, num_items: int, triggers: int,
                   decay: float) -> sp.csr_matrix:
    """``(len(queries), num_items)`` weights of each query's most recent items.

    Items outside the catalogue (newer than the table) are ignored; an item
    occurring twice among the triggers adds up its weights.
    """
    batch = len(queries)
    lengths = np.fromiter((len(h) for h in queries.histories), np.int64, count=batch)
    if lengths.sum() == 0:
        return sp.csr_matrix((batch, num_items), dtype=np.float32)
    items = np.concatenate([np.asarray(h, np.int64) for h in queries.histories])
    ends = np.cumsum(lengths)
    rows = np.repeat(np.arange(batch), lengths)
    age = ends[rows] - 1 - np.arange(len(items))  # 0 = the latest item of the query
    keep = (age < triggers) & (items >= 0) & (items < num_items)
    weights = decay ** age[keep].astype(np.float64)
    return sp.csr_matrix((weights.astype(np.float32), (rows[keep], items[keep])),
                         shape=(batch, num_items))


@dataclass(frozen=True)
class I2IHandle:
    """A loaded i2i source: its neighbour table and how to trigger it."""

    table: NeighbourTable
    triggers: int
    recency_decay: float
    algorithm: str
    matrix: sp.csr_matrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: scipy would otherwise re-cast the index arrays on every call.
        object.__setattr__(self, "matrix", self.table.to_csr())

    @property
    def num_items(self) -> int:
        return self.table.num_items

    def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
        """Top-k by summed neighbour similarity; never excluded or zero-score items."""
        matrix = self.matrix
        num_items = self.num_items

        def score(chunk: QueryBatch) -> np.ndarray:
            weights = trigger_matrix(chunk, num_items, self.triggers, self.recency_decay)
            scores = (weights @ matrix).toarray()
            scores[scores <= 0] = -np.inf  # unreached items are not candidates
            return scores

        chunk_size = max(1, min(512, _SCORE_CELLS // max(num_items, 1)))
        return retrieve_in_chunks(queries, k, score, chunk_size=chunk_size)
