"""Training, indexing and retrieval of the ``mind`` source (loads torch and faiss).

MIND is the ``mind`` extractor of :class:`~recall_core.training.interests.MultiInterestModel`
(shared bilinear map, Gaussian routing logits, ReLU layer on the capsules) trained
with label-aware attention; the loop, artifacts and per-interest retrieval are the
shared :mod:`~recall_core.training.multi_interest_source`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recall_core.contract import TrainContext
from recall_core.data.dataset import Dataset
from recall_core.training import multi_interest_source as source
from recall_core.training.interests import InterestSpec
from recall_plugins.mind.config import MindConfig


def spec(config: MindConfig, num_items: int) -> InterestSpec:
    return InterestSpec(num_items, "mind", config.max_len, config.dim, config.interests,
                        config.routing_iterations, adaptive=config.adaptive,
                        dropout=config.dropout, routing_init_std=config.routing_init_std,
                        seed=config.seed)


def train(config: MindConfig, dataset: Dataset, context: TrainContext) -> dict[str, Any]:
    return source.train(config, spec(config, dataset.num_items), config.pow_p, dataset, context)


def build(config: MindConfig, artifact_dir: Path, index_dir: Path) -> source.MultiInterestHandle:
    return source.build(config, artifact_dir, index_dir)


def load(config: MindConfig, artifact_dir: Path, index_dir: Path) -> source.MultiInterestHandle:
    return source.load(config, artifact_dir, index_dir)
