"""Precomputed user representations, written by ``recall index`` and read while serving.

A known user asked for by id is served the history the project's dataset
stores, and that history cannot change until the dataset (and so the source)
does. Encoding it on the request path is therefore work that can be done once,
offline: the batch precomputation of user vectors that production recall
layers keep in a key-value store. ``recall index`` runs the stored users of
the dataset (most recently active first, up to the cache's ``precompute``)
through the source's own serving path, records the rows its
:class:`~recall_core.training.user_cache.UserVectorCache` computed, and saves
them in the index version, where they are checksummed with the rest of it.

The table is keyed exactly like the cache (a digest of the history suffix the
encoder reads), so a request whose history is not the stored one — an
explicit history, or a dataset re-imported since — simply misses it and is
encoded as before: answers never change, only where a row comes from. The
files are memory-mapped, so every worker process of ``recall serve
--processes N`` shares one copy through the page cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recall_core.errors import ArtifactError

if TYPE_CHECKING:
    from recall_core.contract import QueryBatch
    from recall_core.data.dataset import Dataset
    from recall_core.progress import ProgressReporter
    from recall_core.training.user_cache import UserVectorCache

KEYS_FILE = "user_table.keys.npy"
"""``(2, n)`` uint64: the history digests' high halves (sorted), then their low halves."""
ROWS_FILE = "user_table.rows.npy"
"""``(n, ...)`` float32: the cached rows, in the order of the keys."""
PRECOMPUTE_BATCH = 256
"""Stored users per retrieve call while precomputing (large enough to batch the encoders)."""


def split_keys(keys: Sequence[bytes]) -> np.ndarray:
    """16-byte digests → ``(2, n)`` uint64: high halves, low halves (big-endian numbers, so
    that they sort as the digests do)."""
    return np.frombuffer(b"".join(keys), dtype=">u8").reshape(len(keys), 2).T.astype(np.uint64)


class UserTable:
    """A read-only, memory-mapped map from history digest to a precomputed row."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray) -> None:
        if keys.ndim != 2 or keys.shape[0] != 2 or keys.shape[1] != len(rows):
            raise ArtifactError(f"user table: {keys.shape} keys do not match {rows.shape} rows")
        # Plain views of the maps: numpy's memmap subclass adds overhead to every operation.
        self.high, self.low = (np.asarray(half).view(np.ndarray) for half in keys)
        self.rows = rows.view(np.ndarray)

    def __len__(self) -> int:
        return len(self.high)

    @classmethod
    def open(cls, index_dir: Path) -> UserTable | None:
        """The table saved in ``index_dir``; None when the index has none."""
        keys_path, rows_path = Path(index_dir) / KEYS_FILE, Path(index_dir) / ROWS_FILE
        if not keys_path.is_file():
            return None
        try:
            return cls(np.load(keys_path, mmap_mode="r"), np.load(rows_path, mmap_mode="r"))
        except (OSError, ValueError) as error:
            raise ArtifactError(f"user table in {index_dir} is unreadable: {error}") from None

    @staticmethod
    def save(index_dir: Path, recorded: dict[bytes, np.ndarray]) -> int:
        """Write ``recorded`` (digest → row) sorted by key; returns the rows written."""
        if not recorded:
            return 0
        digests = list(recorded)
        keys = split_keys(digests)
        order = np.lexsort((keys[1], keys[0]))
        rows = np.stack([recorded[digests[i]] for i in order]).astype(np.float32, copy=False)
        np.save(Path(index_dir) / KEYS_FILE, np.ascontiguousarray(keys[:, order]))
        np.save(Path(index_dir) / ROWS_FILE, rows)
        return len(rows)

    def find(self, keys: Sequence[bytes]) -> list[int]:
        """Each key's row position, -1 where the table does not hold it."""
        if not len(self.high) or not keys:
            return [-1] * len(keys)
        highs, lows = split_keys(keys)
        starts = self.high.searchsorted(highs).tolist()
        return [self._position(start, high, low)
                for start, high, low in zip(starts, highs.tolist(), lows.tolist())]

    def _position(self, start: int, high: int, low: int) -> int:
        # Digests sharing a high half (a 2^-64 event) are neighbours: scan while they last.
        for j in range(start, len(self.high)):
            if self.high[j] != high:
                break
            if self.low[j] == low:
                return j
        return -1


def precompute_user_table(handle: Any, retrieve: Callable[[QueryBatch], Any], dataset: Dataset,
                          index_dir: Path, progress: ProgressReporter) -> int:
    """Save the user rows of ``dataset``'s stored users that ``handle``'s cache would compute.

    ``retrieve(queries)`` runs the source's serving path (the core's
    ``recall_retrieve``, k = 1). Nothing is written for a handle without a
    :class:`UserVectorCache` or with ``precompute`` 0. Returns the rows saved.
    """
    from recall_core.contract import QueryBatch

    cache = _cache_of(handle)
    if cache is None or cache.precompute <= 0:
        return 0
    users = dataset.recent_users(cache.precompute)
    with cache.recording() as recorded, progress.task("precomputing user vectors",
                                                      total=len(users)) as task:
        for start in range(0, len(users), PRECOMPUTE_BATCH):
            batch = users[start : start + PRECOMPUTE_BATCH]
            retrieve(QueryBatch.from_histories([dataset.sequence(u) for u in batch], batch))
            task.advance(len(batch))
    cache.clear()  # the table answers these users from now on; the LRU stays for the rest
    written = UserTable.save(index_dir, recorded)
    cache.attach(UserTable.open(index_dir))
    return written


def attach_user_table(handle: Any, index_dir: Path) -> None:
    """Give a loaded handle's cache the table its index holds (if it has both)."""
    cache = _cache_of(handle)
    if cache is not None:
        cache.attach(UserTable.open(index_dir))


def _cache_of(handle: Any) -> UserVectorCache | None:
    """The handle's ``user_cache`` when it is the core's cache (the optional handle attribute)."""
    from recall_core.training.user_cache import UserVectorCache

    cache = getattr(handle, "user_cache", None)
    return cache if isinstance(cache, UserVectorCache) else None
