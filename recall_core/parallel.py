"""Row-parallel helpers for the compiled (GIL-free) kernels of a large batch.

A batch's merge and response encoding run after every source has answered,
so on their own they would leave all but one core idle; their kernels release
the GIL, so splitting the rows over a few threads finishes them sooner. The
pool here only ever runs such bounded CPU work (never a source call, which may
hang past its deadline), so a part never waits behind a stuck task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from recall_core.native import thread_count

T = TypeVar("T")
MIN_ROWS_PER_PART = 16
"""Smaller parts cost more in hand-offs than they save."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def row_ranges(rows: int, parts: int | None = None) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges splitting ``rows`` into up to ``parts`` (default: the CPUs)
    near-equal pieces of at least :data:`MIN_ROWS_PER_PART` rows."""
    wanted = parts if parts is not None else thread_count()
    count = max(1, min(wanted, rows // MIN_ROWS_PER_PART))
    cuts = [rows * i // count for i in range(count + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def map_ranges(work: Callable[[int, int], T], ranges: list[tuple[int, int]]) -> list[T]:
    """``work(lo, hi)`` for every range, the first in this thread and the rest in the pool;
    results in range order (an exception in any part propagates)."""
    if len(ranges) <= 1:
        return [work(lo, hi) for lo, hi in ranges]
    futures = [_shared_pool().submit(work, lo, hi) for lo, hi in ranges[1:]]
    first = work(*ranges[0])
    return [first, *(future.result() for future in futures)]


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, thread_count() - 1),
                                       thread_name_prefix="recall-rows")
        return _pool
