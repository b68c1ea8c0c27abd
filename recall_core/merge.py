"""The one merge code path: sources' candidates → one list per query, with provenance.

``recall eval``, ``recall query`` and the gRPC server all call
:func:`merge_batch`, so an offline figure is a figure of what is served.
Per query it

1. takes each source's row, dropping padding, excluded items (sources should
   already have dropped them; the merge enforces it anyway) and repeats;
2. hands the non-empty lists of the sources weighing > 0 to the policy;
3. fills any shortfall up to ``k`` from the fallback list (normally the
   ``popular`` source), skipping duplicates and excluded items;
4. records, per merged item, every merged source whose list holds it (rank,
   raw score, group), plus the fallback for the items it filled.

The per-source work (exclusion, repeats, provenance look-ups) is vectorised
over the whole batch with ``row * span + item`` keys; only the policy runs per
query. Provenance is stored column-wise and :class:`Provenance` objects are
built only when read, so the evaluator (which reads only items) pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from recall_core.contract import Candidates, MergePolicy, SourceList
from recall_core.errors import ConfigError, PluginError
from recall_core.keysets import KeyPositions, KeySet


@dataclass(frozen=True, slots=True)
class Provenance:
    """One source's opinion of one merged candidate."""

    source: str
    rank: int
    """1-based position in the source's answer for this query (padding not counted)."""
    score: float
    """The source's raw score (its own scale; not comparable across sources)."""
    group: int = -1
    """Cluster / interest id when the source reports one, else -1."""


class ProvenanceColumns(Sequence[tuple[Provenance, ...]]):
    """The provenance of one merged list, stored as ``(sources, items)`` columns.

    Item ``j``'s entries are the sources ``s`` with ``hit[s, j]``, in source
    order. The :class:`Provenance` objects are built on first access (all of
    the list's at once, then kept), so code that never reads them pays nothing.
    """

    __slots__ = ("_built", "_columns", "_sources")

    def __init__(self, sources: Sequence[str], hit: np.ndarray, rank: np.ndarray,
                 score: np.ndarray, group: np.ndarray) -> None:
        self._sources = tuple(sources)
        self._columns = (hit, rank, score, group)
        self._built: tuple[tuple[Provenance, ...], ...] | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The source names, one per row of :meth:`columns` (distinct)."""
        return self._sources

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(hit, rank, score, group)``, each ``(sources, items)``; read-only views."""
        return self._columns

    def _entries(self) -> tuple[tuple[Provenance, ...], ...]:
        if self._built is None:
            # One tolist() per column: Python scalars are far cheaper to read than numpy ones.
            hit, rank, score, group = (column.T.tolist() for column in self._columns)
            self._built = tuple(
                tuple(Provenance(name, r[s], sc[s], g[s])
                      for s, name in enumerate(self._sources) if h[s])
                for h, r, sc, g in zip(hit, rank, score, group))
        return self._built

    def __len__(self) -> int:
        return int(self._columns[0].shape[1])

    @overload
    def __getitem__(self, j: int) -> tuple[Provenance, ...]: ...
    @overload
    def __getitem__(self, j: slice) -> Sequence[tuple[Provenance, ...]]: ...

    def __getitem__(
            self, j: int | slice) -> tuple[Provenance, ...] | Sequence[tuple[Provenance, ...]]:
        return self._entries()[j]

    def __iter__(self) -> Iterator[tuple[Provenance, ...]]:
        return iter(self._entries())

    def __repr__(self) -> str:
        return repr(self._entries())


@dataclass(frozen=True, eq=False)
class MergedList:
    """One query's merged answer, in final order.

    ``provenance[j]`` lists every source that returned ``items[j]`` (source
    order; the fallback last, for the items it filled, or at its own place when
    it is also a merged source). The fill is always
    the last ``fallback_count`` items; their fused score is
    ``min(0, last fused score of the policy)``, i.e. 0.0 with the built-in
    policies, whose fused scores are all > 0 (``weighted`` may reach 0).
    """

    items: np.ndarray
    """int64 dense item ids."""
    scores: np.ndarray
    """float64 fused scores (the policy's; non-increasing for the built-ins)."""
    provenance: Sequence[tuple[Provenance, ...]]
    fallback_count: int = 0
    """How many items came only from the fallback (the tail of ``items``)."""

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, eq=False)
class MergedBatch:
    """The merged answers of a batch of queries."""

    lists: list[MergedList]

    def __len__(self) -> int:
        return len(self.lists)

    def items_matrix(self, k: int) -> np.ndarray:
        """Items as a ``(batch, k)`` int64 matrix padded with -1, for vectorised metrics."""
        out = np.full((len(self.lists), k), -1, dtype=np.int64)
        for i, merged in enumerate(self.lists):
            row = merged.items[:k]
            out[i, : len(row)] = row
        return out


def select_policy(policies: Mapping[str, MergePolicy], name: str) -> MergePolicy:
    """The policy called ``name``; :class:`ConfigError` listing the available ones otherwise."""
    try:
        return policies[name]
    except KeyError:
        available = ", ".join(sorted(policies)) or "none installed"
        raise ConfigError(f"unknown merge policy {name!r} (available: {available})") from None


@dataclass(frozen=True)
class _Prepared:
    """A source's candidates for the whole batch, with what the merge may use marked."""

    name: str
    items: np.ndarray  # (B, w) int64
    scores: np.ndarray  # (B, w) float64
    groups: np.ndarray  # (B, w) int64, -1 where the source reports none
    usable: np.ndarray  # (B, w) bool: not padding, not excluded, not a repeat in its row
    rank: np.ndarray  # (B, w) int64: 1-based position among the row's non-padding items
    real_flat: np.ndarray  # (n,) flat index (row * w + column) of each keyed entry, row-major
    positions: KeyPositions  # row * span + item -> index into real_flat (first entry)


def merge_batch(per_source: Mapping[str, Candidates], policy: MergePolicy, k: int,
                weights: Mapping[str, float], exclude: Sequence[np.ndarray],
                fallback: tuple[str, Candidates] | None = None) -> MergedBatch:
    """Merge every query's source lists under ``policy`` into at most ``k`` items.

    :param per_source: source name → its answer for the batch; the mapping's
        order is the source order (tie-breaks, provenance order).
    :param weights: source → weight / quota share; missing → 1.0; 0 → the
        source takes no part (no provenance either); negative → ConfigError.
    :param exclude: per query, items that must never be returned.
    :param fallback: ``(name, candidates)`` filling each shortfall up to ``k``;
        it may also be one of ``per_source`` (same candidates). Weights do not
        apply to the fill, so a fallback weighing 0 only fills.
    :raises ConfigError: k < 1 or a bad weight.
    :raises PluginError: the policy returned duplicates, more than k items, or
        items none of the merged sources offered.
    """
    batch = len(exclude)
    _check_inputs(per_source, fallback, k, weights, batch)
    merged_sources = {name: c for name, c in per_source.items() if weights.get(name, 1.0) > 0}
    answers = [*merged_sources.values(), *([fallback[1]] if fallback else [])]
    span = _key_span(answers)
    excluded = _exclusion_keys(exclude, span)
    prepared = [_prepare(name, c, excluded, span) for name, c in merged_sources.items()]
    filler = _filler(fallback, prepared, merged_sources, excluded, span)
    weight_map = {name: float(w) for name, w in weights.items()}
    rows = [_merge_row(i, prepared, policy, k, weight_map, filler) for i in range(batch)]
    return MergedBatch(_attach_provenance(rows, prepared, filler, span, policy.name))


def _check_inputs(per_source: Mapping[str, Candidates], fallback: tuple[str, Candidates] | None,
                  k: int, weights: Mapping[str, float], batch: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be >= 1 (got {k})")
    for name, weight in weights.items():
        if not np.isfinite(weight) or weight < 0:
            raise ConfigError(f"weight of source {name!r} must be a number >= 0 (got {weight})")
    named = [*per_source.items(), *([fallback] if fallback else [])]
    for name, candidates in named:
        if len(candidates) != batch:  # a programming error in the caller, not a user error
            raise ValueError(f"source {name!r} answered {len(candidates)} queries, not {batch}")


def _key_span(answers: Sequence[Candidates]) -> int:
    """One more than any item id in the answers: ``row * span + item`` is then unique."""
    top = max((int(c.items.max()) for c in answers if c.items.size), default=-1)
    return max(top, 0) + 1


def _exclusion_keys(exclude: Sequence[np.ndarray], span: int) -> KeySet:
    """The ``row * span + item`` keys of every excluded item that some source returned."""
    arrays = [np.asarray(e, dtype=np.int64).ravel() for e in exclude]
    rows = np.repeat(np.arange(len(arrays), dtype=np.int64), [len(a) for a in arrays])
    items = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    inside = (items >= 0) & (items < span)  # ids no source returned cannot collide
    return KeySet(rows[inside] * span + items[inside], len(arrays) * span)


def _prepare(name: str, candidates: Candidates, excluded: KeySet, span: int) -> _Prepared:
    items = np.asarray(candidates.items, dtype=np.int64)
    real = items >= 0
    rows, cols = np.nonzero(real)
    keys = rows.astype(np.int64) * span + items[rows, cols]
    positions = KeyPositions(keys, items.shape[0] * span)
    first = positions.positions(keys) == np.arange(keys.size)
    usable = real.copy()
    if not first.all():  # rare (a misbehaving source): keep each item's first entry only
        usable &= ~_later_repeats(items)
        rows, cols = np.nonzero(usable)
        keys = rows.astype(np.int64) * span + items[rows, cols]
        positions = KeyPositions(keys, items.shape[0] * span)
    blocked = excluded.contains(keys)
    usable[rows[blocked], cols[blocked]] = False
    groups = (np.full(items.shape, -1, np.int64) if candidates.groups is None
              else np.asarray(candidates.groups, dtype=np.int64))
    return _Prepared(name, items, np.asarray(candidates.scores, dtype=np.float64), groups,
                     usable, np.cumsum(real, axis=1), rows * items.shape[1] + cols, positions)


def _filler(fallback: tuple[str, Candidates] | None, prepared: list[_Prepared],
            merged_sources: Mapping[str, Candidates], excluded: KeySet,
            span: int) -> _Prepared | None:
    """The prepared fallback, reusing the merged source's work when it is the same answer."""
    if fallback is None:
        return None
    name, candidates = fallback
    for source in prepared:
        if source.name == name and merged_sources[name] is candidates:
            return source
    return _prepare(name, candidates, excluded, span)


def _later_repeats(items: np.ndarray) -> np.ndarray:
    """Mask of entries whose item already occurred earlier in the same row."""
    order = np.argsort(items, axis=1, kind="stable")  # equal items stay in column order
    ordered = np.take_along_axis(items, order, axis=1)
    repeat = np.zeros(items.shape, dtype=bool)
    repeat_sorted = np.zeros(items.shape, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return repeat


def _row_list(source: _Prepared, i: int) -> SourceList | None:
    keep = source.usable[i]
    items = source.items[i][keep]
    if items.size == 0:
        return None
    return SourceList(source.name, items, source.scores[i][keep], source.groups[i][keep],
                      clean=True)


_Row = tuple[np.ndarray, np.ndarray, int]
"""One query's merged (items, fused scores, how many of them the fallback filled)."""


def _merge_row(i: int, prepared: list[_Prepared], policy: MergePolicy, k: int,
               weights: dict[str, float], filler: _Prepared | None) -> _Row:
    """One query: the policy's (items, scores) plus the fallback fill and its size."""
    lists = [sl for sl in (_row_list(p, i) for p in prepared) if sl is not None]
    if lists:
        items, scores = policy.fuse(lists, k, weights)
        items = np.asarray(items, dtype=np.int64).ravel()
        scores = np.asarray(scores, dtype=np.float64).ravel()
    else:
        items, scores = np.empty(0, np.int64), np.empty(0, np.float64)
    if len(items) > k or len(scores) != len(items):
        raise PluginError(f"merge policy {policy.name!r} returned {len(items)} items and "
                          f"{len(scores)} scores for k={k}")
    missing = k - len(items)
    if filler is None or missing == 0:
        return items, scores, 0
    already = set(items.tolist())  # a set beats np.isin on lists this short
    fill = np.array([item for item in filler.items[i][filler.usable[i]].tolist()
                     if item not in already][:missing], dtype=np.int64)
    floor = min(0.0, float(scores[-1])) if len(scores) else 0.0
    return (np.concatenate([items, fill]),
            np.concatenate([scores, np.full(len(fill), floor)]), len(fill))


def _attach_provenance(rows: list[_Row], prepared: list[_Prepared],
                       filler: _Prepared | None, span: int, policy: str) -> list[MergedList]:
    """Look every merged item up in every source at once and wrap each row."""
    lengths = np.array([len(items) for items, _, _ in rows], dtype=np.int64)
    fills = np.array([fill for _, _, fill in rows], dtype=np.int64)
    flat = np.concatenate([items for items, _, _ in rows]) if rows else np.empty(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= span):
        raise PluginError(f"merge policy {policy!r} returned items none of the sources offered")
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    is_fill = np.arange(flat.size) - starts >= np.repeat(lengths - fills, lengths)
    keys = np.repeat(np.arange(len(rows), dtype=np.int64), lengths) * span + flat
    sources = [*prepared, *([filler] if filler else [])]
    looked = [_lookup(source, keys, span) for source in prepared]
    if filler is not None:  # the fallback is usually one of the merged sources: look up once
        same = next((i for i, source in enumerate(prepared) if source is filler), None)
        looked.append(_lookup(filler, keys, span) if same is None
                      else tuple(column.copy() for column in looked[same]))
    columns = ([np.stack(column) for column in zip(*looked)] if looked
               else [np.zeros((0, flat.size), t) for t in (bool, np.int64, np.float64, np.int64)])
    hit = columns[0]
    _check_offered(hit[: len(prepared)], is_fill, keys, policy)
    if filler is not None:
        columns = _credit_fallback(columns, prepared, filler, is_fill)
        sources = sources[:-1] if len(columns[0]) == len(prepared) else sources
    names = [source.name for source in sources]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [
        MergedList(items, scores, ProvenanceColumns(names, *(a[:, lo:hi] for a in columns)), fill)
        for (items, scores, fill), lo, hi in zip(rows, bounds[:-1], bounds[1:])
    ]


def _credit_fallback(columns: list[np.ndarray], prepared: list[_Prepared], filler: _Prepared,
                     is_fill: np.ndarray) -> list[np.ndarray]:
    """Credit the fallback (the last row) with the items it filled.

    When a merged source has the fallback's name (the usual ``popular``), the
    filled items go into that source's row instead, so every name has one row.
    """
    hit = columns[0]
    same = [s for s, source in enumerate(prepared) if source.name == filler.name]
    if not same:
        hit[-1] = is_fill
        return columns
    row = same[0]
    credit = is_fill & ~hit[row]  # a filled item the merged source did not list
    for column in columns:
        column[row] = np.where(credit, column[-1], column[row])
    return [column[:-1] for column in columns]


def _lookup(source: _Prepared, keys: np.ndarray, span: int) -> tuple[np.ndarray, ...]:
    """For each key: found among the source's usable entries, and its rank, score, group."""
    at = source.positions.positions(keys)
    found = np.zeros(keys.size, bool)
    if source.real_flat.size:
        flat = source.real_flat.take(np.maximum(at, 0))  # 1-D takes: far cheaper than 2-D fancy
        found = (at >= 0) & source.usable.ravel().take(flat)
    if not found.any():
        zeros = np.zeros(keys.size, np.int64)
        return found, zeros, np.full(keys.size, np.nan), zeros - 1
    return (found, np.where(found, source.rank.ravel().take(flat), 0),
            np.where(found, source.scores.ravel().take(flat), np.nan),
            np.where(found, source.groups.ravel().take(flat), -1))


def _check_offered(hit: np.ndarray, is_fill: np.ndarray, keys: np.ndarray, policy: str) -> None:
    """Every policy item must come from a merged source, once per row."""
    offered = hit.any(axis=0) | is_fill
    if not offered.all():
        raise PluginError(f"merge policy {policy!r} returned items none of the sources offered")
    ordered = np.sort(keys)
    if (ordered[1:] == ordered[:-1]).any():
        raise PluginError(f"merge policy {policy!r} returned an item twice")
