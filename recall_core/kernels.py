"""Compiled inner loops of the serving path (numba): the merge and the sources' top-k.

The quota policy and the fallback fill are inherently sequential per query
(each slot's pick depends on what earlier slots took), so numpy cannot
vectorise them; as Python loops they cost ~0.2 ms per query at k = 500, which
capped ``BatchRetrieve`` near 1,300 users/s. Compiled, a batch of 64 takes about
a millisecond. The same goes for the provenance look-ups and for the
scan behind every dense-scoring source's top-k (:func:`top_keys`). The
functions release the GIL (``nogil``), so the server's worker threads run them
in parallel.

Conventions shared by the merge kernels: a source's answer for a batch is a
``(rows, width)`` int64 matrix in which entries the merge may not use
(padding, excluded items, repeats within the row) are ``-1``; item ids are
``>= 0`` otherwise. Per-row sets are small open-addressing hash tables (linear
probing, at most half full), sized by the row's entries and never by the
catalogue, so memory stays bounded however many items there are.

This module is imported lazily (numba costs a few hundred milliseconds to
import), so ``recall --help`` never pays for it. ``cache=True`` keeps the
compiled code on disk next to this file (or in numba's user cache dir when
that is read-only), so only the very first process compiles.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def apportion(total: int, weights: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Largest-remainder split of ``total`` seats among the alive entries by weight.

    Remainder ties go to the earlier entry, so the split is deterministic; entries
    not alive, and all-zero weights, get nothing.
    """
    n = weights.size
    seats = np.zeros(n, np.int64)
    weight_sum = 0.0
    for s in range(n):
        if alive[s]:
            weight_sum += weights[s]
    if total <= 0 or weight_sum <= 0.0:
        return seats
    remainder = np.full(n, -1.0)
    given = 0
    for s in range(n):
        if alive[s]:
            exact = total * weights[s] / weight_sum
            seats[s] = np.int64(np.floor(exact))
            remainder[s] = exact - seats[s]
            given += seats[s]
    for _ in range(total - given):
        best = -1
        for s in range(n):
            if alive[s] and remainder[s] >= 0.0 and (best < 0 or remainder[s] > remainder[best]):
                best = s
        seats[best] += 1
        remainder[best] = -1.0  # one extra seat at most per entry
    return seats


@numba.njit(cache=True, nogil=True)
def _next_slot(quotas: np.ndarray, used: np.ndarray) -> int:
    """Owner of the next Sainte-Laguë slot: least ``(used + ½) / quota``, ties to the earlier."""
    best, best_key = -1, 0.0
    for s in range(quotas.size):
        if used[s] < quotas[s]:
            key = (used[s] + 0.5) / quotas[s]
            if best < 0 or key < best_key:
                best, best_key = s, key
    return best


EMPTY = -1
GOLDEN = np.uint64(11400714819323198485)  # 2^64 / golden ratio


@numba.njit(cache=True, nogil=True)
def table_size(entries: int) -> int:
    """A power of two at least twice ``entries`` (and at least 16)."""
    size = 16
    while size < 2 * entries:
        size *= 2
    return size


@numba.njit(cache=True, nogil=True)
def _widest(bounds: np.ndarray) -> int:
    """The longest row of ``bounds``-delimited rows (0 when there are none)."""
    widest = 0
    for b in range(bounds.size - 1):
        widest = max(widest, bounds[b + 1] - bounds[b])
    return widest


@numba.njit(cache=True, nogil=True)
def probe(table: np.ndarray, item: int) -> int:
    """The slot of ``item`` in ``table``, or the empty slot where it would go."""
    mask = table.size - 1
    # Fibonacci hashing: the product's high bits depend on every bit of the id (its low
    # bits would only see the id's low bits, so ids 1,024 apart would collide).
    slot = np.int64((np.uint64(item) * GOLDEN) >> np.uint64(40)) & mask
    while table[slot] != EMPTY and table[slot] != item:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True, nogil=True)
def add(table: np.ndarray, item: int) -> bool:
    """Put ``item`` in the set ``table``; False when it was there already."""
    slot = probe(table, item)
    if table[slot] == item:
        return False
    table[slot] = item
    return True


@numba.njit(cache=True, nogil=True)
def _quota_row(lists: np.ndarray, b: int, weights: np.ndarray, k: int, taken_set: np.ndarray,
               out: np.ndarray) -> int:
    """One row of :func:`quota_rows`; returns how many items it took."""
    n_sources, width = lists.shape[0], lists.shape[2]
    alive = np.zeros(n_sources, np.bool_)
    for s in range(n_sources):
        if weights[s] > 0.0:
            for j in range(width):
                if lists[s, b, j] >= 0:
                    alive[s] = True
                    break
    pointer = np.zeros(n_sources, np.int64)
    taken_set[:] = EMPTY
    taken = 0
    while taken < k and alive.any():
        quotas = apportion(k - taken, weights, alive)
        used = np.zeros(n_sources, np.int64)
        for _ in range(quotas.sum()):
            s = _next_slot(quotas, used)
            used[s] += 1
            if not alive[s]:
                continue  # ran out earlier this round: its slot stays empty (leftover)
            found = False
            while pointer[s] < width:
                item = lists[s, b, pointer[s]]
                pointer[s] += 1
                if item >= 0 and add(taken_set, item):
                    out[b, taken] = item
                    taken += 1
                    found = True
                    break
            if not found:
                alive[s] = False
    return taken


@numba.njit(cache=True, nogil=True)
def quota_rows(lists: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The quota policy for every row of a batch.

    :param lists: ``(sources, rows, width)`` int64, unusable entries ``-1``.
    :param weights: ``(sources,)`` float64, each ``>= 0``.
    :returns: ``(items, lengths)``: ``(rows, k)`` int64 padded with -1, and each
        row's item count.
    """
    rows = lists.shape[1]
    out = np.full((rows, k), -1, np.int64)
    lengths = np.zeros(rows, np.int64)
    taken_set = np.empty(table_size(k), np.int64)
    for b in range(rows):
        lengths[b] = _quota_row(lists, b, weights, k, taken_set, out)
    return out, lengths


@numba.njit(cache=True, nogil=True)
def fill_rows(merged: np.ndarray, lengths: np.ndarray, filler: np.ndarray) -> np.ndarray:
    """Append each row's first filler items not already in it, up to ``merged``'s width.

    :param merged: ``(rows, k)`` int64, row ``b`` holding ``lengths[b]`` items
        (ids ``>= 0``) then -1; written in place.
    :param filler: ``(rows, width)`` int64, unusable entries -1.
    :returns: how many items each row received.
    """
    rows, k = merged.shape
    filled = np.zeros(rows, np.int64)
    present = np.empty(table_size(k), np.int64)
    for b in range(rows):
        present[:] = EMPTY
        at = lengths[b]
        for j in range(at):
            add(present, merged[b, j])
        for j in range(filler.shape[1]):
            if at >= k:
                break
            item = filler[b, j]
            if item >= 0 and add(present, item):
                merged[b, at] = item
                at += 1
        filled[b] = at - lengths[b]
    return filled


@numba.njit(cache=True, nogil=True)
def usable_entries(items: np.ndarray, exclude: np.ndarray, exclude_bounds: np.ndarray
                   ) -> np.ndarray:
    """Which entries of the sources' ``(layers, rows, width)`` answers the merge may use.

    Not padding (``< 0``), not excluded (row b's exclusions are
    ``exclude[exclude_bounds[b]:exclude_bounds[b + 1]]``), and not a repeat of an
    earlier entry of the same layer and row.
    """
    layers, rows, width = items.shape
    usable = np.zeros(items.shape, np.bool_)
    excluded = np.empty(table_size(_widest(exclude_bounds)), np.int64)
    seen = np.empty(table_size(width), np.int64)
    for b in range(rows):
        excluded[:] = EMPTY
        for e in range(exclude_bounds[b], exclude_bounds[b + 1]):
            if exclude[e] >= 0:
                add(excluded, exclude[e])
        for layer in range(layers):
            seen[:] = EMPTY
            for j in range(width):
                item = items[layer, b, j]
                if item >= 0 and excluded[probe(excluded, item)] != item and add(seen, item):
                    usable[layer, b, j] = True
    return usable


@numba.njit(cache=True, nogil=True)
def look_up(masked: np.ndarray, rank: np.ndarray, scores: np.ndarray, groups: np.ndarray,
            wanted: np.ndarray, bounds: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each layer lists the wanted items: ``(found, rank, score, group)``, ``(L, n)``.

    :param masked: ``(layers, rows, width)`` int64, distinct ids ``>= 0`` per row, -1
        elsewhere; ``rank``, ``scores``, ``groups`` are the entries' values, same shape.
    :param wanted: the items asked for, row b's at ``bounds[b]:bounds[b + 1]``. An item
        not found gets rank 0, score NaN, group -1.
    """
    layers, rows, width = masked.shape
    found = np.zeros((layers, wanted.size), np.bool_)
    rank_out = np.zeros((layers, wanted.size), np.int64)
    score_out = np.full((layers, wanted.size), np.nan)
    group_out = np.full((layers, wanted.size), -1, np.int64)
    # The row's wanted items go in a small table; every layer's entries probe it once
    # (L·w + n probes per row, over a table that stays in cache).
    keys = np.empty(table_size(_widest(bounds)), np.int64)
    position = np.empty(keys.size, np.int64)
    for b in range(rows):
        keys[:] = EMPTY
        for at in range(bounds[b], bounds[b + 1]):
            if wanted[at] >= 0:
                slot = probe(keys, wanted[at])
                keys[slot], position[slot] = wanted[at], at
        for layer in range(layers):
            for j in range(width):
                item = masked[layer, b, j]
                if item < 0:
                    continue
                slot = probe(keys, item)
                if keys[slot] == item:
                    at = position[slot]
                    found[layer, at] = True
                    rank_out[layer, at] = rank[layer, b, j]
                    score_out[layer, at] = scores[layer, b, j]
                    group_out[layer, at] = groups[layer, b, j]
    return found, rank_out, score_out, group_out


@numba.njit(cache=True, nogil=True)
def any_repeat(items: np.ndarray, bounds: np.ndarray) -> bool:
    """True when some row (``items[bounds[b]:bounds[b + 1]]``, ids ``>= 0``) holds an item twice."""
    seen = np.empty(table_size(_widest(bounds)), np.int64)
    for b in range(bounds.size - 1):
        seen[:] = EMPTY
        for at in range(bounds[b], bounds[b + 1]):
            if not add(seen, items[at]):
                return True
    return False


NO_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)
"""Padding of :func:`top_keys`: sorts after every real key."""


@numba.njit(cache=True, nogil=True)
def _descending_key(bits: np.uint32, column: int) -> np.uint64:
    """A uint64 whose ascending order is (float32 value descending, column ascending),
    from the value's IEEE bits (made monotonic in the value first)."""
    wide = np.uint64(bits)
    ordered = wide ^ np.uint64(0xFFFFFFFF) if wide >> np.uint64(31) else wide | np.uint64(
        0x80000000)
    return ((np.uint64(0xFFFFFFFF) - ordered) << np.uint64(32)) | np.uint64(column)


@numba.njit(cache=True, nogil=True)
def top_keys(values: np.ndarray, thresholds: np.ndarray, k: int) -> np.ndarray:
    """``(rows, k)`` sort keys of each row's columns above its threshold (then equal to it,
    lowest column first), :data:`NO_KEY` after them (columns must fit in 32 bits).

    :param values: ``(rows, n)`` float32, -inf for columns that are not candidates;
        ``thresholds[b]`` is row b's k-th largest value. Sorting the keys ascending
        ranks the columns by value descending, then column ascending.
    """
    rows, n = values.shape
    keys = np.full((rows, k), NO_KEY, np.uint64)
    bits = values.view(np.uint32)
    for b in range(rows):
        threshold, count = thresholds[b], 0
        for i in range(n):
            if values[b, i] > threshold:
                keys[b, count] = _descending_key(bits[b, i], i)
                count += 1
        if threshold > -np.inf:
            for i in range(n):
                if count >= k:
                    break
                if values[b, i] == threshold:
                    keys[b, count] = _descending_key(bits[b, i], i)
                    count += 1
    return keys


@numba.njit(cache=True, nogil=True)
def decode_keys(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted :func:`top_keys` back to ``(columns, values)``; padding is (-1, -inf)."""
    rows, k = keys.shape
    items = np.full((rows, k), -1, np.int64)
    best = np.full((rows, k), -np.inf, np.float32)
    for b in range(rows):
        for j in range(k):
            if keys[b, j] == NO_KEY:
                break
            column = np.int64(keys[b, j] & np.uint64(0xFFFFFFFF))
            items[b, j], best[b, j] = column, values[b, column]
    return items, best


@numba.njit(cache=True, nogil=True)
def best_interest(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """For each kept item, the interest scoring it best (ties: the lower one); -1 for padding.

    :param scores: ``(queries, interests, n)``; ``items``: ``(queries, k)`` columns or -1.
    """
    queries, interests, _ = scores.shape
    out = np.full(items.shape, -1, np.int64)
    for q in range(queries):
        for j in range(items.shape[1]):
            item = items[q, j]
            if item < 0:
                continue
            best = 0
            for interest in range(1, interests):
                if scores[q, interest, item] > scores[q, best, item]:
                    best = interest
            out[q, j] = best
    return out
