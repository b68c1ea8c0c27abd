"""Serving an i2i neighbour table: recent items trigger, neighbour lists are summed.

Each query's last ``triggers`` items (the latest weighing 1, each older one
``recency_decay`` times less) add up their neighbour lists per query, and
only the items they reach are ranked, a chunk of queries per compiled call
(:mod:`recall_plugins.i2i.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recall_core.contract import Candidates, QueryBatch
from recall_core.ranking import flat_exclusions
from recall_plugins.i2i.neighbours import NeighbourTable

_CHUNK = 512  # queries per compiled call (bounds the key matrix)


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
        # numba: imported only when serving
        from recall_core.selection import ranked_keys
        from recall_plugins.i2i.scoring import candidate_keys

        table, parts = self.table, []
        for start in range(0, len(queries), _CHUNK):
            chunk = queries.slice(start, start + _CHUNK)
            items, weights, bounds = triggers_of(chunk, self.num_items, self.triggers,
                                                 self.recency_decay)
            # Only the items the triggers reach are keyed and ranked: a few hundred per
            # query instead of a dense row of the whole catalogue.
            keys = candidate_keys(table.indptr, table.indices, table.scores, items, weights,
                                  bounds, self.num_items, *flat_exclusions(chunk.exclude))
            parts.append(Candidates(*ranked_keys(keys, k)))
        if not parts:
            return Candidates.padding(0, k)
        return Candidates.concat(parts)
