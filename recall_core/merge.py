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
from recall_core.ranking import flat_exclusions

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
class _Stack:
    """Every merged source's candidates for the batch (and the fallback's), as layers.

    Layer ``l`` row ``b`` is source ``l``'s answer to query ``b``, padded to the
    widest source with item -1. The merged sources come first, in order; the
    fallback has a layer of its own only when its answer is not one of theirs.
    """

    names: tuple[str, ...]
    merged: int  # how many layers are merged sources
    fill_layer: int | None  # the fallback's layer (one of the merged ones when shared)
    items: np.ndarray  # (L, B, w) int64, -1 = padding
    scores: np.ndarray  # (L, B, w) float64
    groups: np.ndarray  # (L, B, w) int64, -1 where the source reports none
    masked: np.ndarray  # (L, B, w) int64: items the merge may use (not padding, excluded
    #                     or a repeat in the row), else -1 — what the policies see
    rank: np.ndarray  # (L, B, w) int64: 1-based position among the row's non-padding items


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
    stack = _stack(merged_sources, fallback, flat_exclusions(exclude), batch)
    weight_map = {name: float(w) for name, w in weights.items()}
    if stack.merged == 0:
        fused = (np.full((batch, k), -1, np.int64), np.zeros((batch, k)),
                 np.zeros(batch, np.int64))
    else:
        fused = _fuse(stack, policy, k, weight_map)
    return _attach_provenance(_fill(*fused, stack), stack, policy.name)


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


def _stack(merged_sources: Mapping[str, Candidates], fallback: tuple[str, Candidates] | None,
           excluded: tuple[np.ndarray, np.ndarray], batch: int) -> _Stack:
    from recall_core import kernels  # numba: imported only when a merge runs

    answers = list(merged_sources.items())
    fill_layer = None
    if fallback is not None:
        name, candidates = fallback
        fill_layer = next((layer for layer, (other, answer) in enumerate(answers)
                           if other == name and answer is candidates), None)
        if fill_layer is None:  # an answer of its own
            answers.append(fallback)
            fill_layer = len(answers) - 1
    width = max((answer.items.shape[1] for _, answer in answers), default=0)
    shape = (len(answers), batch, width)
    items = np.full(shape, -1, np.int64)
    scores = np.full(shape, -np.inf)
    groups = np.full(shape, -1, np.int64)
    for layer, (_, answer) in enumerate(answers):
        columns = answer.items.shape[1]
        items[layer, :, :columns] = answer.items
        scores[layer, :, :columns] = answer.scores
        if answer.groups is not None:
            groups[layer, :, :columns] = answer.groups
    stamps = kernels.dense_stamps(2, items.size, items)
    masked, rank = kernels.usable_entries(items, *excluded, stamps)
    return _Stack(tuple(name for name, _ in answers), len(merged_sources), fill_layer, items,
                  scores, groups, masked, rank)


@dataclass(frozen=True)
class _Rows:
    """Every query's merged answer: ``(B, k)`` matrices, row b's first ``lengths[b]`` used."""

    items: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    fills: np.ndarray  # how many of each row's items the fallback filled (its tail)


def _fuse(stack: _Stack, policy: MergePolicy, k: int,
          weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The policy's ``(items, scores, lengths)`` for the batch, batch-wide when it can."""
    merged, batch = stack.merged, stack.items.shape[1]
    if policy.fuse_batch is not None:
        lists = BatchLists(stack.names[:merged], stack.masked[:merged], stack.scores[:merged])
        out_items, out_scores, lengths = policy.fuse_batch(lists, k, weights)
        return _checked_batch(policy.name, k, batch, out_items, out_scores, lengths)
    out_items, out_scores = np.full((batch, k), -1, np.int64), np.zeros((batch, k))
    lengths = np.zeros(batch, np.int64)
    for i in range(batch):
        row_items, row_scores = _fuse_row(i, stack, policy, k, weights)
        lengths[i] = len(row_items)
        out_items[i, : lengths[i]], out_scores[i, : lengths[i]] = row_items, row_scores
    return out_items, out_scores, lengths


def _fuse_row(i: int, stack: _Stack, policy: MergePolicy, k: int,
              weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    lists = []
    for layer in range(stack.merged):
        keep = stack.masked[layer, i] >= 0
        if keep.any():
            lists.append(SourceList(stack.names[layer], stack.items[layer, i][keep],
                                    stack.scores[layer, i][keep], stack.groups[layer, i][keep],
                                    clean=True))
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
    return items, scores, lengths  # _fill builds new arrays from these: no copy needed


def _fill(items: np.ndarray, scores: np.ndarray, lengths: np.ndarray, stack: _Stack) -> _Rows:
    """Top each row up to ``k`` from the fallback; filled items score ``min(0, last score)``."""
    batch = items.shape[0]
    if stack.fill_layer is None or batch == 0:
        return _Rows(items, scores, lengths, np.zeros(batch, np.int64))
    from recall_core import kernels  # numba: imported only when a merge runs

    policy_items = np.where(np.arange(items.shape[1]) < lengths[:, None], items, -1)
    filler = stack.masked[stack.fill_layer]
    stamps = kernels.dense_stamps(1, policy_items.size + filler.size, policy_items, filler)
    fills = kernels.fill_rows(policy_items, lengths, filler, stamps)
    last = scores[np.arange(batch), np.maximum(lengths - 1, 0)]
    floor = np.where(lengths > 0, np.minimum(0.0, last), 0.0)
    filled = np.arange(items.shape[1]) >= lengths[:, None]
    return _Rows(policy_items, np.where(filled, floor[:, None], scores), lengths + fills, fills)


def _attach_provenance(rows: _Rows, stack: _Stack, policy: str) -> MergedBatch:
    """Look every merged item up in every layer at once and wrap each row."""
    from recall_core import kernels  # numba: imported only when a merge runs

    lengths, fills = rows.lengths, rows.fills
    used = np.arange(rows.items.shape[1]) < lengths[:, None]
    flat = rows.items[used]  # row-major: row 0's items, then row 1's, ...
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    if flat.size and flat.min() < 0:
        raise PluginError(f"merge policy {policy!r} returned items none of the sources offered")
    stamps = kernels.dense_stamps(2, stack.masked.size, stack.masked, flat)  # two fresh sets
    if kernels.any_repeat(flat, bounds, stamps[:1]):
        raise PluginError(f"merge policy {policy!r} returned an item twice")
    starts = np.repeat(bounds[:-1], lengths)
    is_fill = np.arange(flat.size) - starts >= np.repeat(lengths - fills, lengths)
    columns = list(kernels.look_up(stack.masked, stack.rank, stack.scores, stack.groups, flat,
                                   bounds, stamps[1:]))  # (hit, rank, score, group), each (L, n)
    if not (columns[0][: stack.merged].any(axis=0) | is_fill).all():
        raise PluginError(f"merge policy {policy!r} returned items none of the sources offered")
    names, columns = _credit_fallback(stack, columns, is_fill)
    flat_scores = rows.scores[used]
    cuts = bounds.tolist()
    lists = [MergedList(flat[lo:hi], flat_scores[lo:hi],
                        ProvenanceColumns(names, *(a[:, lo:hi] for a in columns)), fill)
             for lo, hi, fill in zip(cuts[:-1], cuts[1:], fills.tolist())]
    return MergedBatch(lists, (BatchColumns(bounds, flat, flat_scores, names, *columns),))


def _credit_fallback(stack: _Stack, columns: list[np.ndarray],
                     is_fill: np.ndarray) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """Provenance rows, one per name: the fallback credited with the items it filled.

    A fallback sharing a merged source's answer already has its row (every item it
    filled is in it). One with an answer of its own is credited in a row of its
    own, or — when a merged source has its name (the usual ``popular``) — in that
    source's row, so every name has one row.
    """
    if stack.fill_layer is None or stack.fill_layer < stack.merged:
        return stack.names, columns
    hit, fallback = columns[0], stack.fill_layer
    same = [layer for layer in range(stack.merged) if stack.names[layer] == stack.names[fallback]]
    if not same:
        hit[fallback] = is_fill
        return stack.names, columns
    row = same[0]
    credit = is_fill & ~hit[row]  # a filled item the merged source did not list
    for column in columns:
        column[row] = np.where(credit, column[fallback], column[row])
    return stack.names[:fallback], [column[:fallback] for column in columns]
