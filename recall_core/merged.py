"""What a merge returns: merged lists with column-stored provenance, and their batch.

Kept apart from :mod:`recall_core.merge` (the algorithm) so that readers of
results — the server's response writer, the evaluator, plugins — depend on
these types only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


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
class BatchColumns:
    """Every list of a batch concatenated: what a writer needs to encode them in bulk.

    Row ``b``'s entries are ``bounds[b]:bounds[b + 1]`` of ``items``, ``scores``
    and of each provenance column (``(sources, entries)``, one row per name).
    """

    bounds: np.ndarray
    """``(rows + 1,)`` int64 offsets."""
    items: np.ndarray
    scores: np.ndarray
    sources: tuple[str, ...]
    hit: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    group: np.ndarray

    def rows(self, start: int, stop: int) -> BatchColumns:
        """Rows ``start:stop`` (views, bounds rebased to 0)."""
        lo, hi = int(self.bounds[start]), int(self.bounds[stop])
        return BatchColumns(self.bounds[start: stop + 1] - lo, self.items[lo:hi],
                            self.scores[lo:hi], self.sources, self.hit[:, lo:hi],
                            self.rank[:, lo:hi], self.score[:, lo:hi], self.group[:, lo:hi])

    @classmethod
    def concat(cls, parts: Sequence[BatchColumns]) -> BatchColumns:
        """Row blocks with the same ``sources``, one after another."""
        shifts = np.cumsum([0] + [len(p.items) for p in parts[:-1]])
        bounds = np.concatenate([parts[0].bounds[:1]] + [
            p.bounds[1:] + shift for p, shift in zip(parts, shifts)])
        joined = {name: np.concatenate([getattr(p, name) for p in parts], axis=axis)
                  for name, axis in (("items", 0), ("scores", 0), ("hit", 1), ("rank", 1),
                                     ("score", 1), ("group", 1))}
        return cls(bounds, sources=parts[0].sources, **joined)


@dataclass(frozen=True, eq=False)
class MergedBatch:
    """The merged answers of a batch of queries."""

    lists: list[MergedList]
    blocks: tuple[BatchColumns, ...] = ()
    """The same answers as batch-wide columns, in consecutive row blocks: the blocks the
    merge ran in (one, or one per core for a large batch), kept apart so that a writer can
    encode each where it lies instead of joining them first. Empty when a part had none
    (a merge always keeps them)."""

    def __len__(self) -> int:
        return len(self.lists)

    @property
    def columns(self) -> BatchColumns | None:
        """Every row's columns as one block (joined on each call when there are several)."""
        if not self.blocks:
            return None
        return self.blocks[0] if len(self.blocks) == 1 else BatchColumns.concat(self.blocks)

    @classmethod
    def concat(cls, parts: Sequence[MergedBatch]) -> MergedBatch:
        """The batches' rows one after another (blocks kept when every part has them with
        the same provenance names; a merge of row slices of one batch always does)."""
        lists = [merged for part in parts for merged in part.lists]
        blocks = [block for part in parts for block in part.blocks]
        if any(not part.blocks for part in parts) or len({b.sources for b in blocks}) != 1:
            return cls(lists)
        return cls(lists, tuple(blocks))

    def items_matrix(self, k: int) -> np.ndarray:
        """Items as a ``(batch, k)`` int64 matrix padded with -1, for vectorised metrics."""
        out = np.full((len(self.lists), k), -1, dtype=np.int64)
        for i, merged in enumerate(self.lists):
            row = merged.items[:k]
            out[i, : len(row)] = row
        return out
