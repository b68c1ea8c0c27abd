"""The canonical dataset: interactions with dense ids, stored as parquet.

Rows are kept sorted by (user, timestamp, original file order), so a user's
sequence is one contiguous slice ``items[indptr[u]:indptr[u + 1]]``, oldest
first. Raw ids are kept as strings; everything downstream uses dense indices.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from recall_core.errors import DataError, UnknownUserError

FORMAT_VERSION = 1
_OPTIONAL_COLUMNS = ("feedback", "negative", "event")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions plus id maps and item categories (all numpy arrays)."""

    users: np.ndarray  # (n,) int32 dense user index
    items: np.ndarray  # (n,) int32 dense item index
    timestamps: np.ndarray  # (n,) int64; file order when the source has none
    user_ids: np.ndarray  # (num_users,) raw ids as str
    item_ids: np.ndarray  # (num_items,) raw ids as str
    item_category: np.ndarray  # (num_items,) int32 primary category, -1 = none
    category_names: tuple[str, ...] = ()
    feedback: np.ndarray | None = None  # (n,) float32 in [0, 1], e.g. play rate
    negative: np.ndarray | None = None  # (n,) bool explicit negative feedback
    event: np.ndarray | None = None  # (n,) int16 event / intent type
    name: str = ""
    meta: dict = field(default_factory=dict)

    # ---- construction -------------------------------------------------
    @classmethod
    def from_raw(
        cls,
        raw_users: np.ndarray,
        raw_items: np.ndarray,
        timestamps: np.ndarray | None = None,
        *,
        item_categories: dict[str, str] | None = None,
        name: str = "",
        **optional: np.ndarray | None,
    ) -> Dataset:
        """Build from raw id columns in file order (ties in time keep file order)."""
        raw_users = np.asarray(raw_users).astype(str)
        raw_items = np.asarray(raw_items).astype(str)
        if len(raw_users) == 0:
            raise DataError("the dataset has no interactions")
        user_ids, users = np.unique(raw_users, return_inverse=True)
        item_ids, items = np.unique(raw_items, return_inverse=True)
        if timestamps is None:
            timestamps = np.arange(len(users), dtype=np.int64)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        order = np.lexsort((np.arange(len(users)), timestamps, users))
        category_names, item_category = _encode_categories(item_ids, item_categories or {})
        extra = {k: np.asarray(v)[order] for k, v in optional.items() if v is not None}
        return cls(
            users=users[order].astype(np.int32),
            items=items[order].astype(np.int32),
            timestamps=timestamps[order],
            user_ids=user_ids,
            item_ids=item_ids,
            item_category=item_category,
            category_names=category_names,
            name=name,
            **extra,
        )

    # ---- shape ----------------------------------------------------------
    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    @cached_property
    def indptr(self) -> np.ndarray:
        """CSR offsets: user u's rows are ``indptr[u]:indptr[u + 1]``."""
        counts = np.bincount(self.users, minlength=self.num_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def sequence(self, user: int) -> np.ndarray:
        """User ``user``'s items, oldest first."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def recent_users(self, limit: int) -> np.ndarray:
        """Dense ids of up to ``limit`` users with a history, latest interaction first."""
        return recent_users(self.indptr, self.timestamps, limit)

    def sequences(self) -> list[np.ndarray]:
        """Every user's item sequence (views into ``items``)."""
        return np.split(self.items.astype(np.int64), self.indptr[1:-1])

    def user_index(self, raw_id: str) -> int:
        """Dense index of a raw user id; :class:`UnknownUserError` if absent."""
        return self._lookup(self._user_lookup, raw_id, "user", UnknownUserError)

    def item_index(self, raw_id: str) -> int:
        """Dense index of a raw item id; :class:`DataError` if absent."""
        return self._lookup(self._item_lookup, raw_id, "item", DataError)

    @cached_property
    def _user_lookup(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids.tolist())}

    @cached_property
    def _item_lookup(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.item_ids.tolist())}

    @staticmethod
    def _lookup(table: dict[str, int], raw_id: str, what: str, error: type[Exception]) -> int:
        try:
            return table[str(raw_id)]
        except KeyError:
            raise error(f"unknown {what} id {raw_id!r}") from None

    def item_popularity(self) -> np.ndarray:
        """Interaction count per item (float64)."""
        return np.bincount(self.items, minlength=self.num_items).astype(np.float64)

    # ---- derived datasets -----------------------------------------------
    def select_rows(self, keep: np.ndarray) -> Dataset:
        """A dataset with only the rows where ``keep`` is true, same id maps.

        Used for protocol splits: dense ids stay comparable with the original.
        """
        fields = {name: getattr(self, name)[keep] for name in ("users", "items", "timestamps")}
        for name in _OPTIONAL_COLUMNS:
            column = getattr(self, name)
            fields[name] = None if column is None else column[keep]
        derived = replace(self, **fields)
        derived.__dict__.pop("indptr", None)
        return derived

    # ---- identity and storage ---------------------------------------------
    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the content: equal data, equal fingerprint."""
        digest = hashlib.sha256()
        for array in (self.users, self.items, self.timestamps, self.item_category):
            digest.update(np.ascontiguousarray(array).tobytes())
        for names in (self.user_ids, self.item_ids, np.array(self.category_names, dtype=str)):
            digest.update("\x1f".join(names.tolist()).encode())
        for name in _OPTIONAL_COLUMNS:
            column = getattr(self, name)
            if column is not None:
                digest.update(name.encode() + np.ascontiguousarray(column).tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, int]:
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
        }

    def save(self, path: Path) -> None:
        """Write atomically: a temporary sibling directory renamed into place."""
        from recall_core.data import storage

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            storage.write_dataset(self, tmp)
            _swap_into_place(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: Path) -> Dataset:
        """Read a dataset written by :meth:`save`."""
        from recall_core.data import storage

        return storage.read_dataset(Path(path))

    def describe(self) -> str:
        return json.dumps(self.summary())


def recent_users(indptr: np.ndarray, timestamps: np.ndarray, limit: int) -> np.ndarray:
    """Users with a history in CSR ``indptr``, by their last timestamp, latest first (ties:
    lower id first), at most ``limit``."""
    active = np.flatnonzero(np.diff(indptr) > 0)
    last = timestamps[indptr[active + 1] - 1]  # histories are oldest first
    return active[np.argsort(-last, kind="stable")][: max(0, limit)]


def _encode_categories(
    item_ids: np.ndarray, categories: dict[str, str]
) -> tuple[tuple[str, ...], np.ndarray]:
    labels = [categories.get(item) for item in item_ids.tolist()]
    names = tuple(sorted({label for label in labels if label}))
    index = {name: i for i, name in enumerate(names)}
    encoded = np.array([index.get(label, -1) if label else -1 for label in labels], np.int32)
    return names, encoded


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Replace directory ``path`` by ``tmp`` so readers never see a half-written one."""
    backup = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    if path.exists():
        path.rename(backup)
    try:
        tmp.rename(path)
    except OSError:
        if backup.exists():
            backup.rename(path)
        raise
    shutil.rmtree(backup, ignore_errors=True)
