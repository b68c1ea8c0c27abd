"""A bounded memo of user representations, keyed by the exact history the encoder reads.

A sequence encoder is a pure function of the (truncated) history: the same
items in the same order give the same user vector. Serving sees the same
histories again and again — a known user asked for by id reads its history
from the loaded dataset, which does not change until the next reload, and
ranking stages re-ask for a user on every page or refresh — so the forward
pass can be skipped for a history seen recently. The cache lives in the
source's loaded handle, so a reload (a new handle) starts it empty, and a
changed history is a different key: answers are exactly those of an uncached
encoder.

Used by the neural sources' handles at serving time only; training and
validation always run the encoder.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from recall_core.training.user_table import UserTable

CAPACITY_ENV = "RECALL_USER_CACHE"
"""Overrides every source's ``user_cache`` capacity in this process (``0`` turns caching off)."""

Encode = Callable[[list[np.ndarray]], np.ndarray]
"""Histories (already truncated to what the encoder reads) → one row per history."""


LENGTH_CHUNK = 16
"""Histories per encoder call when a batch is encoded shortest first (see :func:`by_length`)."""


def by_length(histories: Sequence[np.ndarray], encode: Encode,
              chunk: int = LENGTH_CHUNK) -> np.ndarray:
    """``encode(histories)``, run on chunks of similar length (shortest first), rows back in
    order. Each call pads only to its own longest history, so a batch mixing 20- and
    200-item histories no longer runs every row at 200 positions (on ml-1m-3k the mean
    is 107 of 200). Right padding never reaches a causal encoder's output, so the rows
    are those of one call (up to float rounding of the different shapes)."""
    lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
    order = np.argsort(lengths, kind="stable")
    padded_alone = len(lengths) * lengths.max(initial=0)
    padded_chunked = sum(len(part) * lengths[part].max() for part in
                         (order[start: start + chunk] for start in range(0, len(order), chunk)))
    if len(histories) <= chunk or padded_chunked > 0.75 * padded_alone:
        return encode(list(histories))  # little padding to save: one call is cheaper
    parts = [encode([histories[i] for i in order[start: start + chunk]])
             for start in range(0, len(order), chunk)]
    rows = np.empty((len(histories), *parts[0].shape[1:]), parts[0].dtype)
    rows[order] = np.concatenate(parts)
    return rows


class UserVectorCache:
    """LRU memo of ``encode(history)`` rows, at most ``capacity`` histories (0 = off), in
    front of an optional precomputed :class:`~recall_core.training.user_table.UserTable`.

    Rows may be any fixed shape (one vector, or K interest vectors); the cache
    stores copies, so callers may modify what they get back. ``precompute``:
    how many stored users ``recall index`` encodes into the table of the
    handle holding this cache (0 = none); the core attaches the table on load.
    """

    def __init__(self, capacity: int, max_len: int, precompute: int = 0) -> None:
        override = os.environ.get(CAPACITY_ENV, "").strip()
        self.capacity = max(0, int(override) if override.isdigit() else int(capacity))
        self.max_len = max_len
        self.precompute = max(0, int(precompute))
        self.table: UserTable | None = None
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # handles are shared by the server's worker threads
        self._recorded: dict[bytes, np.ndarray] | None = None
        self.hits = 0
        self.misses = 0
        self.table_hits = 0

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        """Forget every cached row (the hit and miss counts stay; the table stays)."""
        with self._lock:
            self._rows.clear()

    def attach(self, table: UserTable | None) -> None:
        """Serve the histories ``table`` holds from it (None detaches)."""
        self.table = table

    @contextmanager
    def recording(self) -> Iterator[dict[bytes, np.ndarray]]:
        """Collect every row :meth:`encode` returns while inside, whatever the capacity."""
        recorded: dict[bytes, np.ndarray] = {}
        self._recorded = recorded
        try:
            yield recorded
        finally:
            self._recorded = None

    def encode(self, histories: Sequence[np.ndarray], encode: Encode) -> np.ndarray:
        """Rows for every history: stored or cached ones copied, the rest encoded in one batch."""
        truncated = [np.asarray(h, np.int64)[-self.max_len:] for h in histories]
        if not histories or (self.capacity == 0 and self.table is None
                             and self._recorded is None):
            return by_length(truncated, encode)
        keys = [self._key(h) for h in truncated]
        found = self._stored(keys)
        with self._lock:
            for i, row in enumerate(found):
                if row is None:
                    found[i] = self._get(keys[i])
        missing = [i for i, row in enumerate(found) if row is None]
        if missing:
            fresh = by_length([truncated[i] for i in missing], encode)
            with self._lock:
                for i, row in zip(missing, fresh):
                    found[i] = row
                    if self.capacity:
                        self._put(keys[i], row.copy())
        with self._lock:
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if self._recorded is not None:
            self._recorded.update((key, np.array(row)) for key, row in zip(keys, found))
        return np.stack(found)

    def _stored(self, keys: list[bytes]) -> list[np.ndarray | None]:
        """The table's row for each key (views of the map: :meth:`encode` stacks them into a
        new array), None where it has none."""
        if self.table is None:
            return [None] * len(keys)
        rows = self.table.rows
        found = [None if at < 0 else rows[at] for at in self.table.find(keys)]
        held = sum(row is not None for row in found)
        if held:
            with self._lock:
                self.table_hits += held
        return found

    @staticmethod
    def _key(suffix: np.ndarray) -> bytes:
        # Only the suffix the encoder reads matters. A 128-bit digest keeps a key at 16
        # bytes however long the history (a collision is ~2^-64 likely at 2^32 entries).
        return hashlib.blake2b(np.ascontiguousarray(suffix).tobytes(), digest_size=16).digest()

    def _get(self, key: bytes) -> np.ndarray | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def _put(self, key: bytes, row: np.ndarray) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)
