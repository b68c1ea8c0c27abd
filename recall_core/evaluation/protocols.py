"""Evaluation protocols: how a dataset is split into training data and queries.

``paper``: leave-one-out. Each user's last item is the test target (history:
everything before it), the second-to-last the validation target (history:
everything before that); sources train on all but the last two items. Every
item the user has not interacted with is rankable, so a query's exclusions are
its history minus its targets.

``comirec``: users split 8:1:1 by seed into train / validation / test users.
Sources train on every interaction of the training users; for a held-out
user the first 80% of the sequence is the history and the rest the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recall_core.contract import QueryBatch
from recall_core.data.dataset import Dataset
from recall_core.errors import ConfigError, DataError

PROTOCOLS = ("paper", "comirec")
MIN_LEAVE_ONE_OUT_LENGTH = 3  # one train item + validation + test


@dataclass(frozen=True)
class EvalQueries:
    """Queries with their held-out targets (dense item ids)."""

    queries: QueryBatch
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class EvalSplit:
    """A protocol applied to a dataset: what to train on and what to ask."""

    protocol: str
    train: Dataset
    valid: EvalQueries
    test: EvalQueries

    @property
    def fingerprint(self) -> str:
        return f"{self.protocol}-{self.train.fingerprint}"


def make_split(dataset: Dataset, protocol: str, seed: int = 0) -> EvalSplit:
    """Apply ``protocol`` (``paper`` or ``comirec``) to ``dataset``."""
    if protocol == "paper":
        return _leave_one_out(dataset)
    if protocol == "comirec":
        return _user_split(dataset, seed)
    raise ConfigError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")


def _queries(histories: list[np.ndarray], targets: list[np.ndarray],
             users: np.ndarray) -> EvalQueries:
    # The target stays rankable even when the user saw it before (repeat consumption).
    exclude = [np.setdiff1d(h, t) for h, t in zip(histories, targets)]
    return EvalQueries(QueryBatch(histories, exclude, users.astype(np.int64)), targets)


def _leave_one_out(dataset: Dataset) -> EvalSplit:
    lengths = np.diff(dataset.indptr)
    users = np.flatnonzero(lengths >= MIN_LEAVE_ONE_OUT_LENGTH)
    if len(users) == 0:
        raise DataError("no user has the 3 interactions leave-one-out needs")
    ends = dataset.indptr[users + 1]
    position = np.arange(dataset.num_interactions) - dataset.indptr[dataset.users]
    from_end = lengths[dataset.users] - position  # 1 = last item
    # Users too short to evaluate keep all their rows in training.
    evaluable = lengths[dataset.users] >= MIN_LEAVE_ONE_OUT_LENGTH
    train = dataset.select_rows(~evaluable | (from_end > 2))
    sequences = dataset.sequences()
    items = dataset.items.astype(np.int64)
    test_hist = [sequences[u][:-1] for u in users]
    valid_hist = [sequences[u][:-2] for u in users]
    test = _queries(test_hist, [items[e - 1 : e] for e in ends], users)
    valid = _queries(valid_hist, [items[e - 2 : e - 1] for e in ends], users)
    return EvalSplit("paper", train, valid, test)


def _user_split(dataset: Dataset, seed: int, history_share: float = 0.8) -> EvalSplit:
    rng = np.random.default_rng(seed)
    lengths = np.diff(dataset.indptr)
    permuted = rng.permutation(dataset.num_users)
    n_train = int(round(0.8 * len(permuted)))
    n_valid = int(round(0.1 * len(permuted)))
    train_users = permuted[:n_train]
    is_train_user = np.zeros(dataset.num_users, bool)
    is_train_user[train_users] = True
    train = dataset.select_rows(is_train_user[dataset.users])
    sequences = dataset.sequences()

    def held_out(users: np.ndarray) -> EvalQueries:
        users = np.sort(users[lengths[users] >= 2])
        cut = np.maximum(1, (lengths[users] * history_share).astype(np.int64))
        histories = [sequences[u][:c] for u, c in zip(users, cut)]
        targets = [np.unique(sequences[u][c:]) for u, c in zip(users, cut)]
        return _queries(histories, targets, users)

    valid = held_out(permuted[n_train : n_train + n_valid])
    test = held_out(permuted[n_train + n_valid :])
    if len(test) == 0:
        raise DataError("the comirec protocol left no test user with 2+ interactions")
    return EvalSplit("comirec", train, valid, test)
