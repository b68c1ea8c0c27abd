"""Training, indexing and retrieval of the ``comirec`` source (loads torch and faiss).

ComiRec-SA / -DR are :class:`~recall_core.training.interests.MultiInterestModel`
extractors trained with hard readout; the loop, artifacts and the per-interest
retrieval are the shared :mod:`~recall_core.training.multi_interest_source`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from recall_core.contract import TrainContext
from recall_core.data.dataset import Dataset
from recall_core.training import multi_interest_source as source
from recall_core.training.interests import InterestSpec
from recall_plugins.comirec.config import ComirecConfig

HARD_READOUT = math.inf  # ComiRec trains on the interest closest to the target


def spec(config: ComirecConfig, num_items: int) -> InterestSpec:
    return InterestSpec(num_items, config.variant, config.max_len, config.dim, config.interests,
                        config.routing_iterations, adaptive=False, dropout=config.dropout,
                        seed=config.seed, position_maps=config.bilinear == "position")


def train(config: ComirecConfig, dataset: Dataset, context: TrainContext) -> dict[str, Any]:
    return source.train(config, spec(config, dataset.num_items), HARD_READOUT, dataset, context)


def build(config: ComirecConfig, artifact_dir: Path, index_dir: Path) -> source.MultiInterestHandle:
    return source.build(config, artifact_dir, index_dir)


def load(config: ComirecConfig, artifact_dir: Path, index_dir: Path) -> source.MultiInterestHandle:
    return source.load(config, artifact_dir, index_dir)
