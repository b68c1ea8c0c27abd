"""The ``popular`` source: counts, time decay, exclusions, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recall_core.contract import QueryBatch, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.errors import ConfigError
from recall_core.host import make_host
from recall_core.progress import SilentProgress
from recall_plugins import popular
from recall_plugins.popular import PopularConfig, PopularHandle, popularity_scores

DAY = 86_400


def toy() -> Dataset:
    # item "a": 3 users, "b": 2, "c": 1 (the newest), "d": 1 (oldest, 10 days before the newest)
    users = ["u1", "u2", "u3", "u1", "u2", "u3", "u1"]
    items = ["a", "a", "a", "b", "b", "c", "d"]
    times = [9, 9, 9, 9, 9, 10, 0]
    return Dataset.from_raw(users, items, np.array(times) * DAY)


@pytest.fixture
def host():
    return make_host(load_entry_points=False, builtins=False, extra_plugins=[popular])


def train_index(host, dataset: Dataset, tmp_path: Path, **values):
    config = host.validate_config("popular", values)
    model, index = tmp_path / "model", tmp_path / "index"
    model.mkdir()
    index.mkdir()
    metrics = host.train("popular", config, dataset, TrainContext(model, SilentProgress()))
    return config, model, index, host.index("popular", config, model, index), metrics


def ids(dataset: Dataset, *names: str) -> list[int]:
    return [dataset.item_index(n) for n in names]


def test_counts_and_half_life_decay() -> None:
    data = toy()
    a, b, c, d = ids(data, "a", "b", "c", "d")
    plain = popularity_scores(data, PopularConfig())
    assert plain[[a, b, c, d]].tolist() == [3, 2, 1, 1]
    decayed = popularity_scores(data, PopularConfig(half_life_days=1.0))
    # a and b are one day older than the newest interaction: each counts 1/2.
    np.testing.assert_allclose(decayed[[a, b, c, d]], [1.5, 1.0, 1.0, 0.5**10])
    windowed = popularity_scores(data, PopularConfig(window_days=5))
    assert windowed[d] == 0 and windowed[a] == 3


def test_retrieve_ranks_excludes_and_pads(host, tmp_path: Path) -> None:
    data = toy()
    a, b, c, d = ids(data, "a", "b", "c", "d")
    *_, handle, metrics = train_index(host, data, tmp_path)
    assert metrics["items_scored"] == 4 and handle.num_items == 4
    queries = QueryBatch.from_histories([np.array([], np.int64), np.array([a]), np.array([a, c])],
                                        extra_exclude=[[], [99, -3], [b]])
    answer = host.retrieve("popular", handle, queries, 3)
    assert answer.items.tolist() == [[a, b, c], [b, c, d], [d, -1, -1]]  # the catalogue runs out
    assert answer.scores[0].tolist() == [3.0, 2.0, 1.0]
    assert np.isneginf(answer.scores[2, 1:]).all()
    assert host.retrieve("popular", handle, queries, 1).items.shape == (3, 1)


def test_unconsumed_items_rank_last_so_the_fallback_can_fill(host, tmp_path: Path) -> None:
    data = toy()
    *_, handle, metrics = train_index(host, data, tmp_path, window_days=5)  # d falls outside
    assert metrics["items_scored"] == 3
    answer = host.retrieve("popular", handle, QueryBatch.from_histories([np.empty(0)]), 10)
    assert answer.row(0)[0].tolist() == ids(data, "a", "b", "c", "d")
    assert answer.scores[0, 3] == 0.0


def test_reload_answers_identically(host, tmp_path: Path) -> None:
    data = toy()
    config, model, index, handle, _ = train_index(host, data, tmp_path, half_life_days=2.0)
    queries = QueryBatch.from_histories([np.array(ids(data, "b"))])
    before = host.retrieve("popular", handle, queries, 4)
    after = host.retrieve("popular", host.load("popular", config, model, index), queries, 4)
    np.testing.assert_array_equal(before.items, after.items)
    np.testing.assert_array_equal(before.scores, after.scores)


@pytest.mark.parametrize("values, message", [
    ({"half_life": 3}, "unknown key"),
    ({"half_life_days": 0}, "half_life_days"),
    ({"window_days": -1}, "window_days"),
])
def test_config_is_validated(host, values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        host.validate_config("popular", values)


@pytest.mark.parametrize("seed", range(3))
def test_retrieve_equals_walking_the_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ranking = rng.permutation(50)[:40]  # ten items are never ranked
    scores = np.sort(rng.random(40).astype(np.float32))[::-1].copy()
    handle = PopularHandle(ranking.astype(np.int64), scores, num_items=50)
    histories = [rng.integers(0, 50, n) for n in (0, 3, 30, 45)]
    queries = QueryBatch.from_histories(histories, extra_exclude=[[-1, 77]] * 4)
    got = handle.retrieve(queries, 12)
    for row, excluded in enumerate(queries.exclude):
        kept = [(item, score) for item, score in zip(ranking.tolist(), scores.tolist())
                if item not in set(excluded.tolist())][:12]
        width = len(kept)
        assert got.items[row, :width].tolist() == [item for item, _ in kept]
        assert got.scores[row, :width].tolist() == [score for _, score in kept]
        assert (got.items[row, width:] == -1).all() and np.isneginf(got.scores[row, width:]).all()
