"""Batch-wide sets of ``row * span + item`` keys, for membership and position look-ups.

The merge asks, for a whole batch at once, "is item x excluded for query i?"
and "where does source s list item x for query i?". Encoding (query, item) as
one integer key turns both into a vectorised set look-up. While the key space
``batch * span`` is small (the usual case: a batch of a few dozen queries over
a catalogue of thousands to a few hundred thousand items) a dense table
answers in O(1) per key; beyond :data:`DENSE_LIMIT` the keys are sorted and
searched (O(log n)), so memory stays bounded for huge catalogues.
"""

from __future__ import annotations

import numpy as np

DENSE_LIMIT = 1 << 22
"""Largest key space given a dense table (4 Mi entries: 16 MiB as int32 positions)."""


class KeyPositions:
    """``keys[j] → j`` for unique non-negative keys below ``space``; -1 when absent."""

    __slots__ = ("_keys", "_order", "_sorted", "_table")

    def __init__(self, keys: np.ndarray, space: int) -> None:
        self._keys = np.asarray(keys, dtype=np.int64)
        if space <= DENSE_LIMIT:
            self._table = np.full(max(space, 1), -1, dtype=np.int32 if keys.size < 2**31 else np.int64)
            self._table[self._keys] = np.arange(self._keys.size)
        else:
            self._table = None
            self._order = np.argsort(self._keys, kind="stable")
            self._sorted = self._keys[self._order]

    def positions(self, queries: np.ndarray) -> np.ndarray:
        """For each query key, its position in ``keys`` (int64), or -1."""
        queries = np.asarray(queries, dtype=np.int64)
        if self._table is not None:
            return self._table[queries].astype(np.int64)
        if self._sorted.size == 0:
            return np.full(queries.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, queries), self._sorted.size - 1)
        found = self._sorted[at] == queries
        return np.where(found, self._order[at], -1)


class KeySet:
    """Membership of non-negative keys below ``space`` (repeats allowed)."""

    __slots__ = ("_sorted", "_table")

    def __init__(self, keys: np.ndarray, space: int) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if space <= DENSE_LIMIT:
            self._table = np.zeros(max(space, 1), dtype=bool)
            self._table[keys] = True
            self._sorted = None
        else:
            self._table = None
            self._sorted = np.sort(keys)

    def contains(self, queries: np.ndarray) -> np.ndarray:
        """Bool array of ``queries``' shape: which are in the set."""
        queries = np.asarray(queries, dtype=np.int64)
        if self._table is not None:
            return self._table[queries]
        if self._sorted.size == 0:
            return np.zeros(queries.shape, dtype=bool)
        at = np.minimum(np.searchsorted(self._sorted, queries), self._sorted.size - 1)
        return self._sorted[at] == queries
