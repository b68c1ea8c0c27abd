"""Value objects exchanged between the core and source plugins.

A plugin receives a :class:`QueryBatch` and answers with :class:`Candidates`;
both are batch-shaped numpy arrays so that evaluation over thousands of users
and ``BatchRetrieve`` stay vectorised. Item and user ids here are always the
dense indices of the :class:`~recall_core.data.Dataset`, never raw ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset
    from recall_core.progress import ProgressReporter


class SourceConfig(BaseModel):
    """Base of every source kind's config schema: typed, frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    """Seed of every random choice the source makes: same seed, same artifacts."""


@dataclass(frozen=True)
class SourceKind:
    """A kind of source a plugin provides (``popular``, ``i2i``, ...)."""

    name: str
    config_model: type[SourceConfig]
    description: str


@dataclass(frozen=True)
class QueryBatch:
    """A batch of retrieval queries.

    ``histories[i]`` is query i's item sequence, oldest first. ``exclude[i]``
    holds the items that must never be returned for query i (normally the
    history plus the caller's explicit exclusions; the evaluator leaves the
    held-out target rankable). ``users[i]`` is the dense user index, or -1 for
    a user the dataset does not know.
    """

    histories: Sequence[np.ndarray]
    exclude: Sequence[np.ndarray]
    users: np.ndarray
    timestamps: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not (len(self.histories) == len(self.exclude) == len(self.users)):
            raise ValueError("histories, exclude and users must have one entry per query")

    def __len__(self) -> int:
        return len(self.histories)

    @classmethod
    def from_histories(
        cls,
        histories: Sequence[np.ndarray],
        users: np.ndarray | None = None,
        extra_exclude: Sequence[np.ndarray] | None = None,
        timestamps: Sequence[np.ndarray] | None = None,
    ) -> QueryBatch:
        """Build a production query: exclude = history ∪ extra_exclude."""
        hist = [np.asarray(h, dtype=np.int64) for h in histories]
        extra = extra_exclude or [np.empty(0, np.int64)] * len(hist)
        exclude = [sorted_union(h, np.asarray(e, np.int64)) for h, e in zip(hist, extra)]
        if users is None:
            users = np.full(len(hist), -1, dtype=np.int64)
        return cls(hist, exclude, np.asarray(users, dtype=np.int64), timestamps)

    def slice(self, start: int, stop: int) -> QueryBatch:
        """The queries ``start:stop`` as a new batch (views, no copies)."""
        ts = None if self.timestamps is None else self.timestamps[start:stop]
        return QueryBatch(
            self.histories[start:stop], self.exclude[start:stop], self.users[start:stop], ts
        )


def sorted_union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The sorted distinct items of both arrays: ``np.union1d``'s answer at a third of its
    cost on a served request's few hundred ids (numpy's hashed unique pays a fixed price
    that a sort and a neighbour comparison do not; it was 2 ms of a 64-user batch)."""
    ordered = np.sort(np.concatenate((first, second)) if len(second) else first)
    distinct = np.empty(ordered.size, np.bool_)
    distinct[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
    return ordered[distinct]


@dataclass(frozen=True)
class Candidates:
    """A source's answer to a :class:`QueryBatch`.

    ``items`` and ``scores`` have shape ``(batch, k)``; each row is sorted by
    descending score. A row with fewer than k candidates is padded with item
    -1 and score -inf. ``groups`` (optional, same shape) names the cluster or
    interest that produced each candidate, -1 where there is none.
    """

    items: np.ndarray
    scores: np.ndarray
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.items.ndim != 2 or self.items.shape != self.scores.shape:
            raise ValueError(
                f"items {self.items.shape} and scores {self.scores.shape} must be equal 2-D shapes"
            )
        if self.groups is not None and self.groups.shape != self.items.shape:
            raise ValueError("groups must have the shape of items")

    def __len__(self) -> int:
        return self.items.shape[0]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Query i's candidates with padding removed: (items, scores, groups)."""
        valid = self.items[i] >= 0
        groups = None if self.groups is None else self.groups[i][valid]
        return self.items[i][valid], self.scores[i][valid], groups

    def slice(self, start: int, stop: int) -> Candidates:
        """Queries ``start:stop`` (views, not copies)."""
        groups = None if self.groups is None else self.groups[start:stop]
        return Candidates(self.items[start:stop], self.scores[start:stop], groups)

    @classmethod
    def placed(cls, found: Candidates, rows: np.ndarray, batch: int, width: int,
               grouped: bool = False) -> Candidates:
        """A batch's answer from ``found``, the answer of its queries ``rows`` only: the
        other rows padded, every row ``width`` wide. ``found`` itself when it already
        answers every query at that width (the usual batch: no copy). ``grouped``: the
        answer has groups (-1 in the padding) even where ``found`` has none."""
        if (len(rows) == batch and found.items.shape[1] == width
                and (found.groups is not None or not grouped)
                and np.array_equal(rows, np.arange(batch))):
            return found
        out = cls.padding(batch, width, grouped)
        columns = found.items.shape[1]
        out.items[rows, :columns], out.scores[rows, :columns] = found.items, found.scores
        if out.groups is not None and found.groups is not None:
            out.groups[rows, :columns] = found.groups
        return out

    @classmethod
    def padding(cls, batch: int, width: int, grouped: bool = False) -> Candidates:
        """An answer without a candidate: ``batch`` rows of ``width`` padding entries."""
        return cls(np.full((batch, width), -1, np.int64),
                   np.full((batch, width), -np.inf, np.float32),
                   np.full((batch, width), -1, np.int64) if grouped else None)

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        """Stack the answers of consecutive batch slices (padding to the widest k)."""
        width = max(p.items.shape[1] for p in parts)
        items = np.concatenate([_pad(p.items, width, -1) for p in parts])
        scores = np.concatenate([_pad(p.scores, width, -np.inf) for p in parts])
        groups = None
        if all(p.groups is not None for p in parts):
            groups = np.concatenate([_pad(p.groups, width, -1) for p in parts])  # type: ignore[arg-type]
        return cls(items, scores, groups)


def _pad(array: np.ndarray, width: int, value: float) -> np.ndarray:
    missing = width - array.shape[1]
    if missing == 0:
        return array
    return np.pad(array, ((0, 0), (0, missing)), constant_values=value)


@dataclass
class TrainContext:
    """What the core hands a source's ``recall_train``.

    ``workdir`` is an empty directory the plugin writes its artifacts into;
    the core checksums and publishes it afterwards. ``validation`` (when the
    evaluation protocol provides one) is a held-out split for early stopping.
    """

    workdir: Path
    progress: ProgressReporter
    threads: int = 2
    validation: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetImporter:
    """A dataset format ``recall data import FORMAT`` understands.

    ``load(path, options)`` returns ``(dataset, report)``; ``options`` is an
    instance of ``options_model`` built from the CLI flags the user gave, and
    ``report`` an :class:`ImportReport`. ``needs_path`` is False for formats
    that generate data (``synthetic``); they receive ``path=None``.
    """

    name: str
    description: str
    options_model: type[BaseModel]
    load: Callable[[Path | None, Any], tuple[Dataset, ImportReport]]
    needs_path: bool = True


@dataclass
class ImportReport:
    """What an import read, kept and dropped (counted per reason)."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rows dropped for ``reason`` (no-op for zero)."""
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def to_dict(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "rows_kept": self.rows_kept,
                "dropped": dict(self.dropped), "notes": list(self.notes)}


@dataclass(frozen=True)
class SourceList:
    """One source's ranked list for one query, as the merge sees it."""

    source: str
    items: np.ndarray
    scores: np.ndarray
    groups: np.ndarray | None = None
    clean: bool = False
    """True when ``items`` hold no padding and no repeats (the merge's lists always do),
    so a policy may skip its own cleaning."""


@dataclass(frozen=True)
class BatchLists:
    """Every merged source's lists for a whole batch, as :attr:`MergePolicy.fuse_batch` sees it.

    Row ``b`` of source ``s`` is what ``fuse`` would get as that source's
    :class:`SourceList`, with the entries it would not get (padding, excluded
    items, repeats) set to item -1 in place; a source with no usable entry in
    a row takes no part in that row.
    """

    sources: tuple[str, ...]
    items: np.ndarray
    """``(sources, rows, width)`` int64; -1 where unusable."""
    scores: np.ndarray
    """``(sources, rows, width)`` float64 raw scores (meaningless where ``items`` is -1)."""


@dataclass(frozen=True)
class MergePolicy:
    """A way to fuse several sources' lists into one.

    ``fuse(lists, k, weights)`` returns ``(items, fused_scores)`` in final
    order, at most k long, with no duplicates. ``weights`` maps source name to
    its weight or quota share (missing sources weigh 1).
    """

    name: str
    description: str
    fuse: Callable[[Sequence[SourceList], int, dict[str, float]], tuple[np.ndarray, np.ndarray]]
    fuse_batch: Callable[[BatchLists, int, dict[str, float]],
                         tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    """Optional: the same fusion for a whole batch at once (the merge prefers it).

    Returns ``(items, fused_scores, lengths)``: ``(rows, k)`` arrays, row ``b``
    holding ``lengths[b]`` entries then padding (-1 items). It must answer
    exactly what ``fuse`` answers row by row; a policy provides it when its
    per-row loop is the bottleneck (the built-in ``quota`` does).
    """
