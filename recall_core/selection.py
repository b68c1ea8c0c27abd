"""Compiled selection kernels (numba): the top-k scan of dense scores, the best interests.

:func:`recall_core.ranking.top_k_excluding` has :func:`top_keys` pack each row's k best
columns into integer keys whose ascending order is the ranking (value descending, column
ascending), and :func:`ranked_keys` sorts those (numpy) and turns them back into columns
and values: the same keys and decoder the item-to-item source's sparse top-k uses. Like
:mod:`recall_core.kernels`: ``nogil``, cached on disk, imported lazily so ``recall --help``
never loads numba.
"""

from __future__ import annotations

import numba
import numpy as np

NO_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
"""Padding of :func:`top_keys`' rows: sorts after every real key."""


@numba.njit(cache=True, nogil=True)
def descending_key(bits: np.uint32, column: int) -> np.uint64:
    """A uint64 whose ascending order is (float32 value descending, column ascending),
    from the value's IEEE bits (made monotonic in the value first). -0.0 is keyed as
    0.0: the two are equal scores, so the lower column must come first."""
    wide = np.uint64(0) if bits == np.uint32(0x80000000) else np.uint64(bits)
    ordered = wide ^ np.uint64(0xFFFFFFFF) if wide >> np.uint64(31) else wide | np.uint64(
        0x80000000)
    return ((np.uint64(0xFFFFFFFF) - ordered) << np.uint64(32)) | np.uint64(column)


_SAMPLE = 128  # values a row's threshold is estimated from (one in every n // 128 columns)
_SPREAD = 3.0  # standard deviations the estimate stays below where the k-th best should fall


@numba.njit(cache=True, nogil=True)
def top_keys(values: np.ndarray, exclude: np.ndarray, exclude_bounds: np.ndarray,
             k: int) -> np.ndarray:
    """Sort keys of (at least) each row's ``k`` best candidate columns, unordered:
    ``(rows, widest)`` uint64 padded with :data:`NO_KEY` (columns must fit in 32 bits).

    :param values: ``(rows, n)`` float32; a column is a candidate when its value is
        finite and the row does not exclude it (row b's exclusions are
        ``exclude[exclude_bounds[b]:exclude_bounds[b + 1]]``; ids outside ``[0, n)``
        exclude nothing). Sorting the keys ascending ranks the columns by value
        descending, then column ascending; :func:`ranked_keys` keeps the first k.

    A row is copied with its exclusions set to -inf, a strided sample of it gives a
    threshold a few standard deviations below where the k-th best should fall, and one
    branch-free pass collects the columns at or above it (about 2 k of 3,615), which
    alone are keyed. That is exact: when at least k columns pass, the top k are among
    them; when fewer pass (an unrepresentative sample) the row is collected again in
    full. It reads each score about once, where a histogram search for the k-th value
    and a keying pass read it three or four times, after a masking pass.
    """
    rows, n = values.shape
    row, sample, columns, found, starts = _workspace(rows, n, k)
    bits = row.view(np.uint32)
    for b in range(rows):
        row[:] = values[b]
        count = _row_columns(row, exclude, exclude_bounds[b], exclude_bounds[b + 1], k, sample,
                             columns)
        found = _room(found, starts[b] + count)
        for j in range(count):
            found[starts[b] + j] = descending_key(bits[columns[j]], columns[j])
        starts[b + 1] = starts[b] + count
    return _packed(found, starts)


@numba.njit(cache=True, nogil=True)
def _workspace(rows: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, np.ndarray]:
    """``(row, sample, columns, found, starts)`` buffers of :func:`_row_columns` for ``rows``
    rows of ``n`` values: every row's keys go to ``found`` (sized for the usual 1.5-3 k per
    row, grown by :func:`_room` past that), row b's from ``starts[b]``."""
    sample = np.empty(n // max(1, n // _SAMPLE) + 1, np.float32)
    columns = np.empty(n + 1, np.int64)  # one spare: the pass writes before it counts
    return (np.empty(n, np.float32), sample, columns, np.empty(rows * min(n, 3 * k), np.uint64),
            np.zeros(rows + 1, np.int64))


@numba.njit(cache=True, nogil=True)
def _room(found: np.ndarray, size: int) -> np.ndarray:
    """``found``, or a copy at least twice as long when it holds fewer than ``size`` keys:
    rows of a huge catalogue keep about 2 k keys each, never the whole row."""
    if size <= found.size:
        return found
    grown = np.empty(max(2 * found.size, size), np.uint64)
    grown[: found.size] = found
    return grown


@numba.njit(cache=True, nogil=True)
def _row_columns(row: np.ndarray, exclude: np.ndarray, lo: int, hi: int, k: int,
                 sample: np.ndarray, columns: np.ndarray) -> int:
    """Collect into ``columns`` the best (at least ``k``) candidates of ``row``; how many.
    ``row`` is a scratch copy: the exclusions ``exclude[lo:hi]`` are written into it."""
    n = row.size
    for e in range(lo, hi):
        if 0 <= exclude[e] < n:
            row[exclude[e]] = -np.inf
    threshold = _estimated_threshold(row, max(1, n // _SAMPLE), sample, k)
    count = _columns_from(row, threshold, columns)
    if count < k and threshold > -np.inf:
        count = _columns_from(row, -np.inf, columns)
    return count


@numba.njit(cache=True, nogil=True)
def _packed(found: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Row b's keys ``found[starts[b]:starts[b + 1]]`` as a ``(rows, widest)`` matrix."""
    rows = starts.size - 1
    widest = 1
    for b in range(rows):
        widest = max(widest, starts[b + 1] - starts[b])
    keys = np.full((rows, widest), NO_KEY, np.uint64)
    for b in range(rows):
        keys[b, : starts[b + 1] - starts[b]] = found[starts[b] : starts[b + 1]]
    return keys


@numba.njit(cache=True, nogil=True)
def _estimated_threshold(row: np.ndarray, stride: int, sample: np.ndarray, k: int) -> float:
    """A value probably below the row's k-th best finite value, from every ``stride``-th
    column; -inf when the sample is too small to say (every candidate is collected then)."""
    n, m = row.size, 0
    for i in range(0, n, stride):
        x = row[i]
        sample[m] = x
        m += (x > -np.inf) & (x < np.inf)  # kept by advancing past it: no branch
    expected = m * k / n  # sampled values expected at or above the k-th best
    rank = int(expected + _SPREAD * np.sqrt(expected) + 2.0)
    if stride == 1 or rank >= m:
        return -np.inf
    return np.partition(sample[:m], m - rank)[m - rank]


@numba.njit(cache=True, nogil=True)
def _columns_from(row: np.ndarray, threshold: float, columns: np.ndarray) -> int:
    """The row's finite columns at or above ``threshold``, into ``columns``; how many."""
    count = 0
    for i in range(row.size):
        x = row[i]
        columns[count] = i
        count += (x >= threshold) & (x > -np.inf) & (x < np.inf)
    return count


GROUP_BITS = 6
"""Low bits of a :func:`best_interest_keys` key's column field that hold the interest
(a config has at most 64 interests)."""


@numba.njit(cache=True, nogil=True)
def best_interest_keys(scores: np.ndarray, valid: np.ndarray, exclude: np.ndarray,
                       exclude_bounds: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_keys` of each query's best score over its valid interests, an item at a
    time, with the winning interest in the key: the column field is ``item <<``
    :data:`GROUP_BITS` ``| interest`` (same order: one interest per item; items below
    2**26), which :func:`ranked_grouped_keys` decodes.

    :param scores: ``(queries, interests, n)`` float32; ``valid``: ``(queries, interests)``.
        A NaN score never wins, ties go to the lower interest, and a query without a
        valid interest has no candidate. The max is taken into the row copy that
        :func:`top_keys` makes anyway, and the winner is looked up for the collected
        columns only, while their scores are in cache: no ``(queries, n)`` matrices of
        maxima and winners are written and read back.
    """
    queries, interests, n = scores.shape
    row, sample, columns, found, starts = _workspace(queries, n, k)
    bits = row.view(np.uint32)
    winner = np.zeros(n, np.int32)  # as wide as the scores: the loop vectorises
    for q in range(queries):
        row[:] = -np.inf
        winner[:] = 0
        for interest in range(interests):
            if valid[q, interest]:
                for i in range(n):  # selects, not branches: the loop vectorises
                    score = scores[q, interest, i]
                    better = score > row[i]  # False for NaN: it never wins
                    row[i] = score if better else row[i]
                    winner[i] = np.int32(interest) if better else winner[i]
        count = _row_columns(row, exclude, exclude_bounds[q], exclude_bounds[q + 1], k, sample,
                             columns)
        found = _room(found, starts[q] + count)
        for j in range(count):
            column = columns[j]
            found[starts[q] + j] = descending_key(bits[column],
                                                  column << GROUP_BITS | winner[column])
        starts[q + 1] = starts[q] + count
    return _packed(found, starts)


@numba.njit(cache=True, nogil=True)
def key_bits(key: np.uint64) -> np.uint32:
    """The float32 bits a :func:`descending_key` was made from (inverse of its high half)."""
    ordered = np.uint64(0xFFFFFFFF) - (key >> np.uint64(32))
    bits = ordered ^ np.uint64(0x80000000) if ordered >> np.uint64(31) else (
        ordered ^ np.uint64(0xFFFFFFFF))
    return np.uint32(bits)


def ranked_keys(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each row of :func:`descending_key` keys (:data:`NO_KEY` padding):
    ``(items, values)``, ``(rows, k)``, padded with (-1, -inf); a value comes back from
    its key's bits, exactly. numpy's SIMD partition and sort do the ordering (far faster
    than a compiled sort of the same keys)."""
    items, values, _ = _decode(_first_sorted(keys, k), k, 0)
    return items, values


def ranked_grouped_keys(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ranked_keys` of :func:`best_interest_keys`' keys, whose low
    :data:`GROUP_BITS` hold the interest: ``(items, values, interests)``, interests -1
    where the item is padding."""
    return _decode(_first_sorted(keys, k), k, GROUP_BITS)


def _first_sorted(keys: np.ndarray, k: int) -> np.ndarray:
    if keys.shape[1] > k:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    return np.sort(keys, axis=1)


@numba.njit(cache=True, nogil=True)
def _decode(keys: np.ndarray, k: int, group_bits: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted keys back to ``(items, values, groups)``; ``groups`` is ``(rows, k)`` when
    ``group_bits`` (the column field is ``item << group_bits | group``), else empty."""
    rows, width = keys.shape
    items = np.full((rows, k), -1, np.int64)
    values = np.full((rows, k), -np.inf, np.float32)
    groups = np.full((rows, k) if group_bits else (0, 0), -1, np.int64)
    bits = values.view(np.uint32)
    mask = (1 << group_bits) - 1
    for b in range(rows):
        for j in range(min(k, width)):
            if keys[b, j] == NO_KEY:
                break
            column = np.int64(keys[b, j] & np.uint64(0xFFFFFFFF))
            items[b, j] = column >> group_bits
            if group_bits:
                groups[b, j] = column & mask
            bits[b, j] = key_bits(keys[b, j])
    return items, values, groups


@numba.njit(cache=True, nogil=True)
def first_allowed(ranking: np.ndarray, scores: np.ndarray, exclude: np.ndarray,
                  exclude_bounds: np.ndarray, num_items: int, k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``k`` entries of a fixed ranking that the row does not exclude.

    :param ranking: item ids (``< num_items``) best first, ``scores`` alongside (float32).
    :param exclude: row b's excluded ids at ``exclude[exclude_bounds[b]:exclude_bounds[b + 1]]``
        (ids outside ``[0, num_items)`` exclude nothing).
    :returns: ``(items, scores)`` ``(rows, k)``, padded with (-1, -inf).
    """
    rows = exclude_bounds.size - 1
    items = np.full((rows, k), -1, np.int64)
    out = np.full((rows, k), -np.inf, np.float32)
    stamp = np.full(num_items, -1, np.int64)  # stamp[item] == b: row b excludes it
    for b in range(rows):
        for e in range(exclude_bounds[b], exclude_bounds[b + 1]):
            if 0 <= exclude[e] < num_items:
                stamp[exclude[e]] = b
        taken = 0
        for at in range(ranking.size):
            if taken >= k:
                break
            if stamp[ranking[at]] != b:
                items[b, taken], out[b, taken] = ranking[at], scores[at]
                taken += 1
    return items, out
