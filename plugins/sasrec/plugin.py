"""The ``sasrec`` source's hooks (import-light: torch and faiss load on first use).

Every loss and sampler of the training kit is selectable by config; see
:class:`~recall_plugins.sasrec.config.SasrecConfig` for the keys and defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.sasrec.config import SasrecConfig

KIND = "sasrec"


@hookimpl
def recall_source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, SasrecConfig,
                       "SASRec: causal self-attention user encoder, one vector per user, "
                       "exact (or IVF/HNSW) inner-product search")]


@hookimpl
def recall_train(kind: str, config: SasrecConfig, dataset: Dataset,
                 context: TrainContext) -> dict[str, Any] | None:
    if kind != KIND:
        return None
    from recall_plugins.sasrec import model

    return model.train(config, dataset, context)


@hookimpl
def recall_index(kind: str, config: SasrecConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.sasrec import model

    return model.build(config, artifact_dir, index_dir)


@hookimpl
def recall_load(kind: str, config: SasrecConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.sasrec import model

    return model.load(config, artifact_dir, index_dir)


@hookimpl
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
    if kind != KIND:
        return None
    return handle.retrieve(queries, k)
