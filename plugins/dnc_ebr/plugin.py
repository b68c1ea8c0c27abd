"""The ``dnc_ebr`` source's hooks (import-light: torch and faiss load on first use).

See :class:`~recall_plugins.dnc_ebr.config.DncEbrConfig` for the keys (clusters,
negatives, prompt, quota) and :mod:`recall_plugins.dnc_ebr.retrieval` for how
the per-cluster lists are merged and scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.dnc_ebr.config import DncEbrConfig

KIND = "dnc_ebr"


@hookimpl
def recall_source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, DncEbrConfig,
                       "divide-and-conquer EBR: K item clusters (item2vec + K-means or "
                       "category), in-cluster negatives, per-cluster task prompts, one faiss "
                       "index per cluster merged by an intent quota")]


@hookimpl
def recall_train(kind: str, config: DncEbrConfig, dataset: Dataset,
                 context: TrainContext) -> dict[str, Any] | None:
    if kind != KIND:
        return None
    from recall_plugins.dnc_ebr import train

    return train.train(config, dataset, context)


@hookimpl
def recall_index(kind: str, config: DncEbrConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.dnc_ebr import retrieval

    return retrieval.build(config, artifact_dir, index_dir)


@hookimpl
def recall_load(kind: str, config: DncEbrConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.dnc_ebr import retrieval

    return retrieval.load(config, artifact_dir, index_dir)


@hookimpl
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
    if kind != KIND:
        return None
    return handle.retrieve(queries, k)
