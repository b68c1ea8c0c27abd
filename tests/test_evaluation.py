"""Protocols and metrics, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recall_core.data.dataset import Dataset
from recall_core.errors import ConfigError
from recall_core.evaluation.metrics import coverage, ranking_metrics
from recall_core.evaluation.protocols import make_split


def toy() -> Dataset:
    # u1: a b c d (d is test, c is valid); u2: b c (too short: stays in training); u3: c a b
    users = ["u1"] * 4 + ["u2"] * 2 + ["u3"] * 3
    items = ["a", "b", "c", "d", "b", "c", "c", "a", "b"]
    times = [1, 2, 3, 4, 1, 2, 1, 2, 3]
    return Dataset.from_raw(np.array(users), np.array(items), np.array(times))


def test_paper_protocol_is_leave_one_out() -> None:
    data = toy()
    split = make_split(data, "paper")
    name = lambda ids: [str(data.item_ids[i]) for i in ids]  # noqa: E731
    assert len(split.test) == 2  # u1 and u3; u2 has only 2 interactions
    assert [name(t) for t in split.test.targets] == [["d"], ["b"]]
    assert [name(t) for t in split.valid.targets] == [["c"], ["a"]]
    assert name(split.test.queries.histories[0]) == ["a", "b", "c"]
    assert name(split.valid.queries.histories[0]) == ["a", "b"]
    # training keeps u1's a b, u2's b c and u3's c: the last two of every evaluated user go
    assert split.train.num_interactions == 5
    assert split.train.num_items == data.num_items  # same id space as the full data


def test_target_stays_rankable_when_it_was_seen_before() -> None:
    data = Dataset.from_raw(np.array(["u"] * 4), np.array(["a", "b", "c", "a"]), np.arange(4))
    split = make_split(data, "paper")
    target = split.test.targets[0][0]
    assert target not in split.test.queries.exclude[0]
    assert set(split.test.queries.exclude[0]) == set(split.test.queries.histories[0]) - {target}


def test_comirec_protocol_splits_users_8_1_1() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{i}" for i in range(100)], 10)
    items = rng.integers(0, 50, size=1000).astype(str)
    data = Dataset.from_raw(users, items, np.tile(np.arange(10), 100))
    split = make_split(data, "comirec", seed=3)
    assert (len(split.valid), len(split.test)) == (10, 10)
    assert split.train.num_interactions == 800
    assert all(len(h) == 8 for h in split.test.queries.histories)
    held_out = set(split.test.queries.users.tolist()) | set(split.valid.queries.users.tolist())
    assert not held_out & set(np.unique(split.train.users).tolist())
    assert make_split(data, "comirec", seed=3).test.queries.users.tolist() == \
        split.test.queries.users.tolist()


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'sampled'"):
        make_split(toy(), "sampled")


def test_metrics_by_hand() -> None:
    items = np.array([[5, 1, 2, -1], [3, 4, 6, 7], [9, 8, 7, 6]])
    targets = [np.array([1]), np.array([7, 4]), np.array([0])]
    m = ranking_metrics(items, targets, [2, 4], num_items=10)
    assert m["HR@2"] == pytest.approx(2 / 3)
    assert m["Recall@2"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["HR@4"] == pytest.approx(2 / 3)
    assert m["Recall@4"] == pytest.approx((1 + 1 + 0) / 3)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2_at4 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["NDCG@4"] == pytest.approx((ndcg_q1 + ndcg_q2_at4) / 3)
    assert m["NDCG@2"] == pytest.approx((ndcg_q1 + (1 / math.log2(3)) / (1 + 1 / math.log2(3))) / 3)


def test_coverage() -> None:
    items = np.array([[0, 1, -1], [1, 2, 3]])
    assert coverage(items, num_items=8, k=2) == pytest.approx(3 / 8)
