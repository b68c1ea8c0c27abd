"""Parquet layout of a :class:`Dataset` (pyarrow imported only here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recall_core.errors import DataError

if TYPE_CHECKING:
    from recall_core.data.dataset import Dataset

INTERACTIONS = "interactions.parquet"
ITEMS = "items.parquet"
USERS = "users.parquet"
META = "dataset.json"


def write_dataset(dataset: Dataset, directory: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recall_core.data.dataset import FORMAT_VERSION, _OPTIONAL_COLUMNS

    directory.mkdir(parents=True)
    columns = {"user": dataset.users, "item": dataset.items, "timestamp": dataset.timestamps}
    for name in _OPTIONAL_COLUMNS:
        if getattr(dataset, name) is not None:
            columns[name] = getattr(dataset, name)
    pq.write_table(pa.table(columns), directory / INTERACTIONS)
    pq.write_table(
        pa.table({"item_id": dataset.item_ids.astype(str), "category": dataset.item_category}),
        directory / ITEMS,
    )
    pq.write_table(pa.table({"user_id": dataset.user_ids.astype(str)}), directory / USERS)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": dataset.name,
        "category_names": list(dataset.category_names),
        "fingerprint": dataset.fingerprint,
        **dataset.summary(),
        "meta": dataset.meta,
    }
    (directory / META).write_text(json.dumps(meta, indent=2))


def read_dataset(directory: Path) -> Dataset:
    import pyarrow.parquet as pq

    from recall_core.data.dataset import _OPTIONAL_COLUMNS, Dataset

    if not (directory / META).is_file():
        raise DataError(f"no dataset at {directory} (run `recall data import` first)")
    try:
        meta = json.loads((directory / META).read_text())
        interactions = pq.read_table(directory / INTERACTIONS)
        items = pq.read_table(directory / ITEMS)
        users = pq.read_table(directory / USERS)
    except (OSError, ValueError) as error:
        raise DataError(f"dataset at {directory} is unreadable: {error}") from None
    optional = {
        name: interactions.column(name).to_numpy()
        for name in _OPTIONAL_COLUMNS
        if name in interactions.column_names
    }
    return Dataset(
        users=interactions.column("user").to_numpy().astype(np.int32),
        items=interactions.column("item").to_numpy().astype(np.int32),
        timestamps=interactions.column("timestamp").to_numpy().astype(np.int64),
        user_ids=np.asarray(users.column("user_id").to_pylist(), dtype=str),
        item_ids=np.asarray(items.column("item_id").to_pylist(), dtype=str),
        item_category=items.column("category").to_numpy().astype(np.int32),
        category_names=tuple(meta.get("category_names", ())),
        name=meta.get("name", ""),
        meta=meta.get("meta", {}),
        **optional,
    )
