"""The ``i2i`` source's hooks: item-CF or Swing neighbour tables, triggered by recent items.

Training writes ``neighbours.npz`` (the truncated table) and ``i2i.json`` into
the artifact directory; indexing validates the table and copies it into the
index directory; serving reads it from there. Retrieval-time settings
(``triggers``, ``recency_decay``) come from the config at index/load time, so
changing them needs no retraining. See
:class:`~recall_plugins.i2i.config.I2IConfig` for every key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_plugins.i2i.config import I2IConfig

KIND = "i2i"
META_FILE = "i2i.json"


@hookimpl
def recall_source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, I2IConfig,
                       "item-to-item: item-CF or Swing neighbour tables (proximity-weighted), "
                       "triggered by the user's recent items with recency decay")]


@hookimpl
def recall_train(kind: str, config: I2IConfig, dataset: Dataset,
                 context: TrainContext) -> dict[str, Any] | None:
    if kind != KIND:
        return None
    from recall_plugins.i2i.itemcf import itemcf_table
    from recall_plugins.i2i.swing import swing_table

    started = time.perf_counter()
    build = itemcf_table if config.algorithm == "itemcf" else swing_table
    table = build(dataset, config, context)
    seconds = time.perf_counter() - started
    table.save(context.workdir)
    with_neighbours = int((table.indptr[1:] > table.indptr[:-1]).sum())
    metrics = {
        "algorithm": config.algorithm,
        "train_seconds": round(seconds, 3),
        "pairs": table.pairs,
        "items_with_neighbours": with_neighbours,
        "mean_neighbours": round(table.pairs / max(with_neighbours, 1), 2),
    }
    meta = {"algorithm": config.algorithm, "num_items": table.num_items, "metrics": metrics}
    (Path(context.workdir) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return metrics


@hookimpl
def recall_index(kind: str, config: I2IConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.i2i.neighbours import NeighbourTable

    num_items = _trained_items(Path(artifact_dir))
    table = NeighbourTable.load(artifact_dir, num_items)
    table.save(index_dir)
    return _handle(config, table)


@hookimpl
def recall_load(kind: str, config: I2IConfig, artifact_dir: Path, index_dir: Path) -> Any:
    if kind != KIND:
        return None
    from recall_plugins.i2i.neighbours import NeighbourTable

    table = NeighbourTable.load(index_dir, _trained_items(Path(artifact_dir)))
    return _handle(config, table)


@hookimpl
def recall_retrieve(kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates | None:
    if kind != KIND:
        return None
    return handle.retrieve(queries, k)


def _trained_items(artifact_dir: Path) -> int | None:
    """The catalogue size training recorded (None when the metadata is absent)."""
    path = artifact_dir / META_FILE
    if not path.is_file():
        return None
    from recall_core.errors import ArtifactError

    try:
        return int(json.loads(path.read_text())["num_items"])
    except (ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"unreadable i2i metadata {path}: {error}") from None


def _handle(config: I2IConfig, table: Any) -> Any:
    from recall_plugins.i2i.retrieval import I2IHandle

    return I2IHandle(table, config.triggers, config.recency_decay, config.algorithm)
