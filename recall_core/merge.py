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

The per-row loops (exclusion, repeats, the fill, provenance look-ups, and the
policy when it has a batch form, as ``quota`` does) run batch-wide in compiled
kernels (:mod:`recall_core.kernels`) over small per-row hash sets; a policy
without a batch form is called once per query. Provenance is stored column-wise and :class:`Provenance` objects are
built only when read, so the evaluator (which reads only items) pays nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recall_core.contract import BatchLists, Candidates, MergePolicy, SourceList
from recall_core.errors import ConfigError, PluginError
from recall_core.merged import BatchColumns, MergedBatch, MergedList, Provenance, ProvenanceColumns

__all__ = ["MergedBatch", "MergedList", "Provenance", "ProvenanceColumns", "merge_batch",
           "select_policy"]


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
    masked: np.ndarray  # (B, w) int64: items where usable, else -1 (what policies see)
    rank: np.ndarray  # (B, w) int64: 1-based position among the row's non-padding items


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
    excluded = _flat_exclusions(exclude)
    prepared = [_prepare(name, c, excluded) for name, c in merged_sources.items()]
    filler = _filler(fallback, prepared, merged_sources, excluded)
    weight_map = {name: float(w) for name, w in weights.items()}
    if not prepared:
        empty = np.full((batch, k), -1, np.int64)
        fused = (empty, np.zeros((batch, k)), np.zeros(batch, np.int64))
    else:
        fused = _fuse(prepared, policy, k, weight_map)
    return _attach_provenance(_fill(*fused, filler), prepared, filler, policy.name)


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


def _flat_exclusions(exclude: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every query's excluded items concatenated, and each query's bounds in them."""
    arrays = [np.asarray(e, dtype=np.int64).ravel() for e in exclude]
    bounds = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=bounds[1:])
    return (np.concatenate(arrays) if arrays else np.empty(0, np.int64)), bounds


def _prepare(name: str, candidates: Candidates,
             excluded: tuple[np.ndarray, np.ndarray]) -> _Prepared:
    from recall_core import kernels  # numba: imported only when a merge runs

    # C-contiguous, fixed dtypes: every call then hits the kernels' one compiled signature.
    items = np.ascontiguousarray(candidates.items, dtype=np.int64)
    usable = kernels.usable_entries(items, *excluded)
    groups = (np.full(items.shape, -1, np.int64) if candidates.groups is None
              else np.ascontiguousarray(candidates.groups, dtype=np.int64))
    return _Prepared(name, items, np.ascontiguousarray(candidates.scores, dtype=np.float64),
                     groups, usable, np.where(usable, items, -1),
                     np.cumsum(items >= 0, axis=1))


def _filler(fallback: tuple[str, Candidates] | None, prepared: list[_Prepared],
            merged_sources: Mapping[str, Candidates],
            excluded: tuple[np.ndarray, np.ndarray]) -> _Prepared | None:
    """The prepared fallback, reusing the merged source's work when it is the same answer."""
    if fallback is None:
        return None
    name, candidates = fallback
    for source in prepared:
        if source.name == name and merged_sources[name] is candidates:
            return source
    return _prepare(name, candidates, excluded)


@dataclass(frozen=True)
class _Rows:
    """Every query's merged answer: ``(B, k)`` matrices, row b's first ``lengths[b]`` used."""

    items: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    fills: np.ndarray  # how many of each row's items the fallback filled (its tail)


def _fuse(prepared: list[_Prepared], policy: MergePolicy, k: int,
          weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The policy's ``(items, scores, lengths)`` for the batch, batch-wide when it can."""
    batch = prepared[0].items.shape[0] if prepared else 0
    if policy.fuse_batch is not None and prepared:
        width = max(p.items.shape[1] for p in prepared)
        items = np.full((len(prepared), batch, width), -1, np.int64)
        scores = np.zeros(items.shape)
        for s, source in enumerate(prepared):
            items[s, :, : source.items.shape[1]] = source.masked
            scores[s, :, : source.items.shape[1]] = source.scores
        lists = BatchLists(tuple(p.name for p in prepared), items, scores)
        out_items, out_scores, lengths = policy.fuse_batch(lists, k, weights)
        return _checked_batch(policy.name, k, batch, out_items, out_scores, lengths)
    out_items, out_scores = np.full((batch, k), -1, np.int64), np.zeros((batch, k))
    lengths = np.zeros(batch, np.int64)
    for i in range(batch):
        row_items, row_scores = _fuse_row(i, prepared, policy, k, weights)
        lengths[i] = len(row_items)
        out_items[i, : lengths[i]], out_scores[i, : lengths[i]] = row_items, row_scores
    return out_items, out_scores, lengths


def _fuse_row(i: int, prepared: list[_Prepared], policy: MergePolicy, k: int,
              weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    lists = [sl for sl in (_row_list(p, i) for p in prepared) if sl is not None]
    if not lists:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    items, scores = policy.fuse(lists, k, weights)
    items = np.asarray(items, dtype=np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(items) > k or len(scores) != len(items):
        raise PluginError(f"merge policy {policy.name!r} returned {len(items)} items and "
                          f"{len(scores)} scores for k={k}")
    return items, scores


def _checked_batch(policy: str, k: int, batch: int, items: np.ndarray, scores: np.ndarray,
                   lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items = np.asarray(items, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if (items.shape != (batch, k) or scores.shape != (batch, k) or lengths.shape != (batch,)
            or lengths.min(initial=0) < 0 or lengths.max(initial=0) > k):
        raise PluginError(f"merge policy {policy!r} returned batch arrays of shapes "
                          f"{items.shape}, {scores.shape}, {lengths.shape} for {batch} "
                          f"queries and k={k}")
    return items.copy(), scores, lengths


def _row_list(source: _Prepared, i: int) -> SourceList | None:
    keep = source.usable[i]
    items = source.items[i][keep]
    if items.size == 0:
        return None
    return SourceList(source.name, items, source.scores[i][keep], source.groups[i][keep],
                      clean=True)


def _fill(items: np.ndarray, scores: np.ndarray, lengths: np.ndarray,
          filler: _Prepared | None) -> _Rows:
    """Top each row up to ``k`` from the fallback; filled items score ``min(0, last score)``."""
    batch = items.shape[0]
    if filler is None or batch == 0:
        return _Rows(items, scores, lengths, np.zeros(batch, np.int64))
    from recall_core import kernels  # numba: imported only when a merge runs

    policy_items = np.where(np.arange(items.shape[1]) < lengths[:, None], items, -1)
    fills = kernels.fill_rows(policy_items, lengths, filler.masked)
    last = scores[np.arange(batch), np.maximum(lengths - 1, 0)]
    floor = np.where(lengths > 0, np.minimum(0.0, last), 0.0)
    filled = np.arange(items.shape[1]) >= lengths[:, None]
    return _Rows(policy_items, np.where(filled, floor[:, None], scores), lengths + fills, fills)


def _attach_provenance(rows: _Rows, prepared: list[_Prepared],
                       filler: _Prepared | None, policy: str) -> MergedBatch:
    """Look every merged item up in every source at once and wrap each row."""
    from recall_core import kernels  # numba: imported only when a merge runs

    lengths, fills = rows.lengths, rows.fills
    used = np.arange(rows.items.shape[1]) < lengths[:, None]
    flat = rows.items[used]  # row-major: row 0's items, then row 1's, ...
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    if flat.size and flat.min() < 0:
        raise PluginError(f"merge policy {policy!r} returned items none of the sources offered")
    if kernels.any_repeat(flat, bounds):
        raise PluginError(f"merge policy {policy!r} returned an item twice")
    starts = np.repeat(bounds[:-1], lengths)
    is_fill = np.arange(flat.size) - starts >= np.repeat(lengths - fills, lengths)
    sources = [*prepared, *([filler] if filler else [])]
    looked = [_lookup(source, flat, bounds) for source in prepared]
    if filler is not None:  # the fallback is usually one of the merged sources: look up once
        same = next((i for i, source in enumerate(prepared) if source is filler), None)
        looked.append(_lookup(filler, flat, bounds) if same is None
                      else tuple(column.copy() for column in looked[same]))
    columns = ([np.stack(column) for column in zip(*looked)] if looked
               else [np.zeros((0, flat.size), t) for t in (bool, np.int64, np.float64, np.int64)])
    hit = columns[0]
    if not (hit[: len(prepared)].any(axis=0) | is_fill).all():
        raise PluginError(f"merge policy {policy!r} returned items none of the sources offered")
    if filler is not None:
        columns = _credit_fallback(columns, prepared, filler, is_fill)
        sources = sources[:-1] if len(columns[0]) == len(prepared) else sources
    names = tuple(source.name for source in sources)
    flat_scores = rows.scores[used]
    cuts = bounds.tolist()
    lists = [MergedList(flat[lo:hi], flat_scores[lo:hi],
                        ProvenanceColumns(names, *(a[:, lo:hi] for a in columns)), fill)
             for lo, hi, fill in zip(cuts[:-1], cuts[1:], fills.tolist())]
    return MergedBatch(lists, BatchColumns(bounds, flat, flat_scores, names, *columns))


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


def _lookup(source: _Prepared, flat: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each merged item: found among the source's usable entries, its rank, score, group."""
    from recall_core import kernels  # numba: imported only when a merge runs

    return kernels.look_up(source.masked, source.rank, source.scores, source.groups, flat,
                           bounds)
