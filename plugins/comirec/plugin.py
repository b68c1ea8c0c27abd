"""The ``comirec`` source's hooks (import-light: torch and faiss load on first use).

See :class:`~recall_plugins.comirec.config.ComirecConfig` for the keys and defaults.
Candidates carry ``groups`` = the interest (0..K-1) that produced each item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.comirec.config import ComirecConfig

KIND = "comirec"


@hookimpl
def recall_source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, ComirecConfig,
                       "ComiRec multi-interest retrieval: self-attentive (sa) or dynamic-routing "
                       "(dr) interests, one search per interest merged by max score, "
                       "diversity-controllable aggregation")]


@hookimpl
def recall_train(kind: str, config: ComirecConfig, dataset: Dataset,
                 context: TrainContext) -> dict[str, Any] | None:
    if kind != KIND:
        return None
    from recall_plugins.comirec import model

    return model.train(config, dataset, context)


@hookimpl
def recall_index(kind: str, config: ComirecConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.comirec import model

    return model.build(config, artifact_dir, index_dir)


@hookimpl
def recall_load(kind: str, config: ComirecConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.comirec import model

    return model.load(config, artifact_dir, index_dir)


@hookimpl
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
    if kind != KIND:
        return None
    return handle.retrieve(queries, k)
