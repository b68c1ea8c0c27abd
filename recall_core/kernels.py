"""Compiled inner loops of the merge (numba): quota, fallback fill, masks, provenance.

The quota policy and the fallback fill are inherently sequential per query
(each slot's pick depends on what earlier slots took), so numpy cannot
vectorise them; as Python loops they cost ~0.2 ms per query at k = 500, which
capped ``BatchRetrieve`` near 1,300 users/s. Compiled, a batch of 64 takes about
a millisecond. The same goes for the provenance look-ups (the sources' top-k
scan is in :mod:`recall_core.selection`). The functions release the GIL
(``nogil``), so the server's worker threads run them in parallel.

Conventions shared by the merge kernels: a source's answer for a batch is a
``(rows, width)`` int64 matrix in which entries the merge may not use
(padding, excluded items, repeats within the row) are ``-1``; item ids are
``>= 0`` otherwise. Per-row sets are direct-indexed stamp arrays when the ids
are small (:func:`dense_stamps`: the usual dense catalogue ids), else small
open-addressing hash tables (linear probing, at most half full) sized by the
row's entries and never by the ids, so memory stays bounded however large they are.

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


DENSE_MIN = 1 << 16
"""Id ranges up to this (or 4x the entries of a call) use direct-indexed sets."""


def dense_stamps(count: int, entries: int, *arrays: np.ndarray) -> np.ndarray:
    """Stamp arrays for ``count`` simultaneous dense sets over the ids in ``arrays``.

    ``(count, universe)`` int32 filled with -1 when every id is below a universe of at
    most ``max(DENSE_MIN, 4 * entries)``: a set is then "stamp[item] == tag", one array
    access instead of a probe sequence, and a new set is a new tag instead of a cleared
    table. Otherwise ``(count, 0)``: the kernels fall back to the hash tables, whose size
    follows the rows and never the ids (ids of 10^12 stay cheap).
    """
    top = max((int(a.max()) for a in arrays if a.size), default=-1)
    universe = top + 1
    if universe <= 0 or universe > max(DENSE_MIN, 4 * entries):
        return np.empty((count, 0), np.int32)
    return np.full((count, universe), -1, np.int32)


@numba.njit(cache=True, nogil=True)
def claim(table: np.ndarray, stamp: np.ndarray, tag: int, item: int) -> bool:
    """Put ``item`` (>= 0) in the set — dense (``stamp[item] == tag``) when ``stamp`` has
    entries, else the hash ``table`` — and say whether it was new."""
    if stamp.size:
        fresh = stamp[item] != tag
        stamp[item] = tag
        return fresh
    return add(table, item)


@numba.njit(cache=True, nogil=True)
def set_table(stamp: np.ndarray, entries: int) -> np.ndarray:
    """The hash table of a set of up to ``entries`` items (a stub when the set is dense)."""
    return np.empty(1 if stamp.size else table_size(entries), np.int64)


@numba.njit(cache=True, nogil=True)
def _quota_row(lists: np.ndarray, b: int, weights: np.ndarray, k: int, taken_set: np.ndarray,
               stamp: np.ndarray, out: np.ndarray) -> int:
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
    dense, tag = stamp.size > 0, b + 1  # a tag per row: a fresh dense set, nothing to clear
    if not dense:
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
                if item >= 0 and claim(taken_set, stamp, tag, item):
                    out[b, taken] = item
                    taken += 1
                    found = True
                    break
            if not found:
                alive[s] = False
    return taken


@numba.njit(cache=True, nogil=True)
def quota_rows(lists: np.ndarray, weights: np.ndarray, k: int, stamps: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The quota policy for every row of a batch.

    :param lists: ``(sources, rows, width)`` int64, unusable entries ``-1``.
    :param weights: ``(sources,)`` float64, each ``>= 0``.
    :param stamps: :func:`dense_stamps` of one set over ``lists``.
    :returns: ``(items, lengths)``: ``(rows, k)`` int64 padded with -1, and each
        row's item count.
    """
    rows = lists.shape[1]
    out = np.full((rows, k), -1, np.int64)
    lengths = np.zeros(rows, np.int64)
    taken_set = set_table(stamps[0], k)
    for b in range(rows):
        lengths[b] = _quota_row(lists, b, weights, k, taken_set, stamps[0], out)
    return out, lengths


@numba.njit(cache=True, nogil=True)
def fill_rows(merged: np.ndarray, lengths: np.ndarray, filler: np.ndarray, stamps: np.ndarray
              ) -> np.ndarray:
    """Append each row's first filler items not already in it, up to ``merged``'s width.

    :param merged: ``(rows, k)`` int64, row ``b`` holding ``lengths[b]`` items
        (ids ``>= 0``) then -1; written in place.
    :param filler: ``(rows, width)`` int64, unusable entries -1.
    :param stamps: :func:`dense_stamps` of one set over both.
    :returns: how many items each row received.
    """
    rows, k = merged.shape
    filled = np.zeros(rows, np.int64)
    stamp = stamps[0]
    present = set_table(stamp, k)
    dense = stamp.size > 0
    for b in range(rows):
        tag = b + 1
        if not dense:
            present[:] = EMPTY
        at = lengths[b]
        for j in range(at):
            if dense:
                stamp[merged[b, j]] = tag
            else:
                add(present, merged[b, j])
        for j in range(filler.shape[1]):
            if at >= k:
                break
            item = filler[b, j]
            if item >= 0 and claim(present, stamp, tag, item):
                merged[b, at] = item
                at += 1
        filled[b] = at - lengths[b]
    return filled


@numba.njit(cache=True, nogil=True)
def usable_entries(items: np.ndarray, exclude: np.ndarray, exclude_bounds: np.ndarray,
                   stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of the sources' ``(layers, rows, width)`` answers the merge may use, and
    every entry's rank: ``(masked, rank)``, both shaped like ``items``.

    ``masked`` is the item where it is usable, else -1: usable is not padding (``< 0``),
    not excluded (row b's exclusions are ``exclude[exclude_bounds[b]:exclude_bounds[b +
    1]]``), and not a repeat of an earlier entry of the same layer and row. ``rank`` is the
    entry's 1-based position among its layer and row's non-padding entries. ``stamps``:
    :func:`dense_stamps` of two sets over ``items`` (exclusions outside its universe can
    match no entry). One pass writes both, where a mask, a select and a cumulative sum
    each went over the three-dimensional stack.
    """
    layers, rows, width = items.shape
    masked = np.full(items.shape, -1, np.int64)
    rank = np.empty(items.shape, np.int64)
    dense_excluded, dense_seen = stamps[0], stamps[1]
    dense = dense_excluded.size > 0
    excluded = set_table(dense_excluded, _widest(exclude_bounds))
    seen = set_table(dense_seen, width)
    seen_tag = -1
    for b in range(rows):
        tag = b + 1
        if not dense:
            excluded[:] = EMPTY
        for e in range(exclude_bounds[b], exclude_bounds[b + 1]):
            item = exclude[e]
            if item < 0:
                continue
            if not dense:
                add(excluded, item)
            elif item < dense_excluded.size:  # larger ids can match no entry
                dense_excluded[item] = tag
        for layer in range(layers):
            seen_tag += 1
            if not dense:
                seen[:] = EMPTY
            listed = 0
            for j in range(width):
                item = items[layer, b, j]
                listed += item >= 0
                rank[layer, b, j] = listed
                if item < 0:
                    continue
                # Both branches written out: with set helpers for the look-up and the
                # insert, this loop (the merge's busiest) ran 3x slower (measured).
                if dense:
                    if dense_excluded[item] != tag and dense_seen[item] != seen_tag:
                        dense_seen[item] = seen_tag
                        masked[layer, b, j] = item
                elif excluded[probe(excluded, item)] != item and add(seen, item):
                    masked[layer, b, j] = item
    return masked, rank


@numba.njit(cache=True, nogil=True)
def look_up(masked: np.ndarray, rank: np.ndarray, scores: np.ndarray, groups: np.ndarray,
            wanted: np.ndarray, bounds: np.ndarray, stamps: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each layer lists the wanted items: ``(found, rank, score, group)``, ``(L, n)``.

    :param masked: ``(layers, rows, width)`` int64, distinct ids ``>= 0`` per row, -1
        elsewhere; ``rank``, ``scores``, ``groups`` are the entries' values, same shape.
    :param wanted: the items asked for, row b's at ``bounds[b]:bounds[b + 1]``. An item
        not found gets rank 0, score NaN, group -1. ``stamps``: :func:`dense_stamps`
        of one set over ``masked`` and ``wanted``.
    """
    layers, rows, width = masked.shape
    found = np.zeros((layers, wanted.size), np.bool_)
    rank_out = np.zeros((layers, wanted.size), np.int64)
    score_out = np.full((layers, wanted.size), np.nan)
    group_out = np.full((layers, wanted.size), -1, np.int64)
    # The row's wanted items go in a small set; every layer's entries look it up once
    # (L·w + n look-ups per row). Dense: the position sits at the item's own index.
    stamp = stamps[0]
    keys = set_table(stamp, _widest(bounds))
    position = np.empty(stamp.size if stamp.size else keys.size, np.int64)
    dense = stamp.size > 0
    for b in range(rows):
        tag = b + 1
        if not dense:
            keys[:] = EMPTY
        for at in range(bounds[b], bounds[b + 1]):
            item = wanted[at]
            if item < 0:
                continue
            if dense:
                stamp[item], position[item] = tag, at
            else:
                slot = probe(keys, item)
                keys[slot], position[slot] = item, at
        for layer in range(layers):
            for j in range(width):
                item = masked[layer, b, j]
                if item < 0:
                    continue
                if dense:
                    if item >= stamp.size or stamp[item] != tag:
                        continue
                    at = position[item]
                else:
                    slot = probe(keys, item)
                    if keys[slot] != item:
                        continue
                    at = position[slot]
                found[layer, at] = True
                rank_out[layer, at] = rank[layer, b, j]
                score_out[layer, at] = scores[layer, b, j]
                group_out[layer, at] = groups[layer, b, j]
    return found, rank_out, score_out, group_out


@numba.njit(cache=True, nogil=True)
def any_repeat(items: np.ndarray, bounds: np.ndarray, stamps: np.ndarray) -> bool:
    """True when some row (``items[bounds[b]:bounds[b + 1]]``, ids ``>= 0``) holds an item
    twice; ``stamps``: :func:`dense_stamps` of one set over ``items``."""
    stamp = stamps[0]
    seen = set_table(stamp, _widest(bounds))
    dense = stamp.size > 0
    for b in range(bounds.size - 1):
        tag = b + 1
        if not dense:
            seen[:] = EMPTY
        for at in range(bounds[b], bounds[b + 1]):
            item = items[at]
            if dense:
                if stamp[item] == tag:
                    return True
                stamp[item] = tag
            elif not add(seen, item):
                return True
    return False
