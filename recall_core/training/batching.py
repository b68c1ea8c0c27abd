"""Sequence batching: every user's sequence as next-item windows, padded, seeded.

A user's sequence ``s`` becomes inputs ``s[:-1]`` and per-position targets
``s[1:]`` (position t predicts the item after it), cut from the most recent end
into windows of at most ``max_len`` so that one pass over the windows trains
every position of every sequence exactly once. Windows are right-padded: with a
causal encoder the padding comes after every real position and can never be
attended to, so no key-padding mask is needed.

Model input ids are item ids + 1 (0 = padding); targets keep the dataset's
dense ids (-1 = no target). Building windows is numpy only; batches become torch
tensors when iterated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset

PAD = 0
"""Model input id of padding; item i is input id i + 1."""
NO_TARGET = -1


@dataclass(frozen=True)
class SequenceWindows:
    """All training windows of a dataset as dense matrices."""

    inputs: np.ndarray  # (W, max_len) int64 item id + 1, 0 = padding (right)
    targets: np.ndarray  # (W, max_len) int64 next item (dense id), -1 = none
    lengths: np.ndarray  # (W,) int64 real positions of each window
    users: np.ndarray  # (W,) int64 user of each window

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_positions(self) -> int:
        """Trained positions (samples) in one pass."""
        return int(self.lengths.sum())


@dataclass(frozen=True)
class SequenceBatch:
    """One batch of windows, trimmed to its longest window (torch tensors)."""

    inputs: Any  # (B, T) long, item id + 1, 0 = padding
    targets: Any  # (B, T) long, dense item id, -1 = none
    lengths: Any  # (B,) long
    users: Any  # (B,) long

    @property
    def num_positions(self) -> int:
        return int(self.lengths.sum())


def make_windows(dataset: Dataset, max_len: int, windows: str = "all") -> SequenceWindows:
    """Cut every sequence of ``dataset`` into next-item windows of at most ``max_len``.

    ``windows="all"`` keeps every position (older items go to earlier windows);
    ``"last"`` keeps only each user's most recent window (the SASRec reference).
    Users with fewer than two items have no target and give no window.
    """
    if windows not in ("all", "last"):
        raise ValueError(f"windows must be 'all' or 'last', not {windows!r}")
    indptr = dataset.indptr
    items = dataset.items.astype(np.int64)
    n_inputs = np.maximum(np.diff(indptr) - 1, 0)  # positions with a next item
    per_user = -(-n_inputs // max_len)  # ceil
    if windows == "last":
        per_user = np.minimum(per_user, 1)
    users = np.repeat(np.arange(dataset.num_users, dtype=np.int64), per_user)
    # Window j of a user (0 = most recent) covers inputs [end - (j + 1) L, end - j L).
    first_of_user = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    j = np.arange(len(users)) - np.repeat(first_of_user, per_user)
    input_end = indptr[users] + n_inputs[users]  # exclusive end of the user's inputs
    stop = input_end - j * max_len
    start = np.maximum(indptr[users], stop - max_len)
    lengths = stop - start
    offsets = np.arange(max_len)
    valid = offsets[None, :] < lengths[:, None]
    index = np.where(valid, start[:, None] + offsets[None, :], 0)  # (W, L)
    inputs = np.where(valid, items[index] + 1, PAD)
    targets = np.where(valid, items[np.minimum(index + 1, len(items) - 1)], NO_TARGET)
    return SequenceWindows(inputs, targets, lengths.astype(np.int64), users)


class WindowBatcher:
    """Seeded, deterministic batches over :class:`SequenceWindows`.

    Each epoch shuffles the windows with a generator keyed by ``(seed, epoch)``;
    ``bucket`` > 1 sorts windows by length inside groups of ``bucket`` batches
    before batching (less padding, same shuffled batch order across groups).
    """

    def __init__(self, windows: SequenceWindows, batch_size: int, seed: int = 0,
                 bucket: int = 8) -> None:
        if len(windows) == 0:
            raise ValueError("no training windows: every sequence is shorter than two items")
        self.windows = windows
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = max(1, bucket)

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The window indices of each batch of ``epoch``, in training order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.windows))
        group = self.batch_size * self.bucket
        batches = []
        for begin in range(0, len(order), group):
            chunk = order[begin : begin + group]
            if self.bucket > 1:
                chunk = chunk[np.argsort(-self.windows.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def epoch(self, epoch: int) -> Iterator[SequenceBatch]:
        """Yield the batches of ``epoch`` as torch tensors."""
        for index in self.batch_indices(epoch):
            yield self.take(index)

    def take(self, index: np.ndarray) -> SequenceBatch:
        from recall_core.native import torch as load_torch

        torch = load_torch()
        lengths = self.windows.lengths[index]
        width = int(lengths.max())
        return SequenceBatch(
            inputs=torch.from_numpy(np.ascontiguousarray(self.windows.inputs[index, :width])),
            targets=torch.from_numpy(np.ascontiguousarray(self.windows.targets[index, :width])),
            lengths=torch.from_numpy(lengths),
            users=torch.from_numpy(self.windows.users[index]),
        )


def known_histories(histories: Sequence[np.ndarray], num_items: int
                    ) -> tuple[list[np.ndarray], np.ndarray]:
    """Each history without ids outside ``[0, num_items)``, and the rows left non-empty.

    A serving handle encodes only those rows; a query with no known item gets no candidates
    from the source (the merge's fallback answers it).
    """
    arrays = [np.asarray(history) for history in histories]
    lengths = np.fromiter((len(a) for a in arrays), np.int64, count=len(arrays))
    if not lengths.sum():
        return arrays, np.empty(0, np.int64)
    # One pass over the whole batch instead of a mask per query (four neural sources
    # call this for every batch): most batches hold no unknown id and keep the arrays.
    flat = np.concatenate(arrays)
    keep = (flat >= 0) & (flat < num_items)
    if not keep.all():
        rows = np.repeat(np.arange(len(arrays)), lengths)
        lengths = np.bincount(rows[keep], minlength=len(arrays))
        arrays = np.split(flat[keep], np.cumsum(lengths)[:-1])
    return arrays, np.flatnonzero(lengths > 0)


def pad_histories(histories: Sequence[np.ndarray], max_len: int,
                  num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded model inputs of the last ``max_len`` known items of each history.

    Items outside ``[0, num_items)`` (unknown to the model) are dropped.
    Returns ``(inputs (B, T) int64 item id + 1, lengths (B,) int64)``; a history
    with no known item has length 0 and a row of padding.
    """
    kept = []
    for history in histories:
        history = np.asarray(history, dtype=np.int64)
        history = history[(history >= 0) & (history < num_items)]
        kept.append(history[-max_len:])
    lengths = np.fromiter((len(h) for h in kept), np.int64, count=len(kept))
    width = max(1, int(lengths.max()) if len(kept) else 1)
    inputs = np.zeros((len(kept), width), dtype=np.int64)
    for row, history in enumerate(kept):
        inputs[row, : len(history)] = history + 1
    return inputs, lengths
