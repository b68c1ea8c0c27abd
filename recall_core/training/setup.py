"""The data side of a neural source's training run, shared by every such source.

Seeds torch, holds out a validation split when the caller gave none (``recall
train``; ``recall eval`` passes its own), cuts the sequences into windows and
batches them, and counts the targets (the samplers' popularity and logQ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from recall_core.contract import TrainContext
from recall_core.data.dataset import Dataset
from recall_core.native import torch as load_torch
from recall_core.training.batching import SequenceWindows, WindowBatcher, make_windows
from recall_core.training.validation import holdout_validation

if TYPE_CHECKING:
    from recall_core.evaluation.protocols import EvalQueries
    from recall_core.training.config import NeuralConfig


class TrainingData(NamedTuple):
    """What one training run reads: the (possibly reduced) dataset and its batches (unpackable)."""

    dataset: Dataset
    """The training interactions (without the held-out validation items, if any were held out)."""
    validation: "EvalQueries | None"
    windows: SequenceWindows
    batcher: WindowBatcher
    target_counts: np.ndarray
    """How often each item is a training target, ``(N,)``."""


def prepare_training(config: NeuralConfig, dataset: Dataset, context: TrainContext) -> TrainingData:
    """Seed, split off validation if needed, and batch ``dataset`` as ``config`` says."""
    load_torch().manual_seed(config.seed)
    validation = context.validation
    if validation is None:
        dataset, validation = holdout_validation(dataset, config.validation_users, config.seed)
    windows = make_windows(dataset, config.max_len, config.windows)
    batcher = WindowBatcher(windows, config.batch_size, config.seed)
    target_counts = np.bincount(windows.targets[windows.targets >= 0], minlength=dataset.num_items)
    return TrainingData(dataset, validation, windows, batcher, target_counts)
