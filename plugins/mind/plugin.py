"""The ``mind`` source's hooks (import-light: torch and faiss load on first use).

See :class:`~recall_plugins.mind.config.MindConfig` for the keys and defaults.
Candidates carry ``groups`` = the interest (0..K-1) that produced each item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.mind.config import MindConfig

KIND = "mind"


@hookimpl
def recall_source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, MindConfig,
                       "MIND multi-interest retrieval: behaviour-to-interest dynamic routing with "
                       "an adaptive interest count, label-aware attention in training, one "
                       "search per interest merged by max score")]


@hookimpl
def recall_train(kind: str, config: MindConfig, dataset: Dataset,
                 context: TrainContext) -> dict[str, Any] | None:
    if kind != KIND:
        return None
    from recall_plugins.mind import model

    return model.train(config, dataset, context)


@hookimpl
def recall_index(kind: str, config: MindConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.mind import model

    return model.build(config, artifact_dir, index_dir)


@hookimpl
def recall_load(kind: str, config: MindConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.mind import model

    return model.load(config, artifact_dir, index_dir)


@hookimpl
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
    if kind != KIND:
        return None
    return handle.retrieve(queries, k)
