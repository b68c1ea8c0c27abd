"""The ``i2i`` source: hand-computed item-CF and Swing similarities, triggers, retrieval."""

from __future__ import annotations

from math import log, sqrt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recall_core.contract import QueryBatch, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.errors import ArtifactError, ConfigError
from recall_core.host import make_host
from recall_core.progress import SilentProgress
from recall_core.ranking import top_k_excluding
from recall_core.testing.datasets import tiny_dataset
from recall_plugins.i2i import plugin, swing
from recall_plugins.i2i.config import I2IConfig
from recall_plugins.i2i.itemcf import itemcf_table
from recall_plugins.i2i.neighbours import NeighbourTable, from_rows
from recall_plugins.i2i.retrieval import I2IHandle, triggers_of
from recall_plugins.i2i.swing import swing_table

CONTEXT = TrainContext(Path("."), SilentProgress())


def sequences(*seqs: str) -> Dataset:
    """One user per string, one item per letter, in consumption order."""
    users = [f"u{n}" for n, seq in enumerate(seqs) for _ in seq]
    return Dataset.from_raw(users, [letter for seq in seqs for letter in seq])


def similarity(table: NeighbourTable, dataset: Dataset, i: str, j: str) -> float:
    neighbours, scores = table.neighbours(dataset.item_index(i))
    hit = neighbours == dataset.item_index(j)
    return float(scores[hit][0]) if hit.any() else 0.0


def test_classic_itemcf_is_the_cosine() -> None:
    data = sequences("ab", "abc", "bc")  # n_a = 2, n_b = 3, n_c = 2
    table = itemcf_table(data, I2IConfig(window=0, iuf=False, norm_exponent=0.5), CONTEXT)
    assert similarity(table, data, "a", "b") == pytest.approx(2 / sqrt(6))
    assert similarity(table, data, "c", "b") == pytest.approx(2 / sqrt(6))
    assert similarity(table, data, "a", "c") == pytest.approx(1 / sqrt(4))
    assert similarity(table, data, "a", "a") == 0.0
    weighted = itemcf_table(data, I2IConfig(window=0, norm_exponent=0.5), CONTEXT)
    assert similarity(weighted, data, "a", "b") == pytest.approx(
        (1 / log(3) + 1 / log(4)) / sqrt(6))  # IUF: 1 / log(1 + |I_u|)


def test_windowed_itemcf_weighs_proximity_and_direction() -> None:
    data = sequences("abc")
    config = I2IConfig(window=2, proximity_power=1.0, backward_weight=0.5, iuf=False,
                       norm_exponent=0.5)
    table = itemcf_table(data, config, CONTEXT)
    expected = {("a", "b"): 1.0, ("b", "a"): 0.5, ("a", "c"): 0.5, ("c", "a"): 0.25,
                ("b", "c"): 1.0, ("c", "b"): 0.5}
    for (i, j), value in expected.items():
        assert similarity(table, data, i, j) == pytest.approx(value), (i, j)
    narrow = itemcf_table(data, config.model_copy(update={"window": 1}), CONTEXT)
    assert similarity(narrow, data, "a", "c") == 0.0


def test_swing_by_hand() -> None:
    data = sequences("ab", "abc", "ac")  # n_a = 3, n_b = 2, n_c = 2
    config = I2IConfig(algorithm="swing", window=0, alpha=1.0, activity_power=0.0,
                       norm_exponent=0.5)
    table = swing_table(data, config, CONTEXT)
    # (u0, u1) and (u1, u0) both have a and b and share 2 items: 2 * 1 / (1 + 2).
    assert similarity(table, data, "a", "b") == pytest.approx((2 / 3) / sqrt(6))
    assert similarity(table, data, "c", "a") == pytest.approx((2 / 3) / sqrt(6))
    assert similarity(table, data, "b", "c") == 0.0  # only one user has both
    active = swing_table(data, config.model_copy(update={"activity_power": 1.0,
                                                         "activity_offset": 0.0}), CONTEXT)
    # w_u = 1 / |I_u|: 2 * (1/2 * 1/3) / (1 + 2)
    assert similarity(active, data, "a", "b") == pytest.approx((1 / 9) / sqrt(6))


def test_swing_overlap_paths_agree_and_cap_is_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_dataset()
    config = I2IConfig(algorithm="swing", max_users_per_item=5, neighbours=8)
    dense = swing_table(data, config, CONTEXT)
    monkeypatch.setattr(swing, "DENSE_OVERLAP_MAX_USERS", 0)
    sparse = swing_table(data, config, CONTEXT)
    np.testing.assert_array_equal(dense.indptr, sparse.indptr)
    np.testing.assert_array_equal(dense.indices, sparse.indices)
    np.testing.assert_allclose(dense.scores, sparse.scores, rtol=1e-5)
    other_seed = swing_table(data, config.model_copy(update={"seed": 1}), CONTEXT)
    assert not np.array_equal(dense.scores, other_seed.scores)  # the cap samples users
    assert np.diff(dense.indptr).max() <= 8


def test_triggers_are_the_recent_items_with_decay() -> None:
    queries = QueryBatch.from_histories([np.array([0, 1, 2]), np.array([], np.int64),
                                         np.array([3, 7, 3])])
    items, weights, bounds = triggers_of(queries, num_items=5, triggers=2, decay=0.5)
    assert bounds.tolist() == [0, 2, 2, 3]
    assert items.tolist() == [1, 2, 3]  # 7 is outside the catalogue; the older 3 too old
    np.testing.assert_allclose(weights, [0.5, 1, 1])


@pytest.mark.parametrize("seed", range(4))
def test_sparse_top_k_equals_ranking_the_dense_product(seed: int) -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    # Similarities in eighths and decay 0.5: every sum is exact, so ties are real ties.
    dense = np.where(rng.random((40, 40)) < 0.2, rng.integers(1, 4, (40, 40)) / 8, 0)
    table = from_rows(*_csr_parts(sp.csr_matrix(dense.astype(np.float32))))
    histories = [rng.integers(0, 40, n) for n in (0, 1, 6, 12, 3, 25)]  # repeats included
    extra = [rng.integers(-2, 45, 4) for _ in histories]  # some outside the catalogue
    queries = QueryBatch.from_histories(histories, extra_exclude=extra)
    handle = I2IHandle(table, triggers=4, recency_decay=0.5, algorithm="itemcf")
    got = handle.retrieve(queries, 7)
    items, weights, bounds = triggers_of(queries, 40, 4, 0.5)
    rows = np.repeat(np.arange(len(histories)), np.diff(bounds))
    scores = (sp.csr_matrix((weights, (rows, items)), shape=(len(histories), 40))
              @ sp.csr_matrix(dense)).toarray().astype(np.float32)
    scores[scores <= 0] = -np.inf
    want = top_k_excluding(scores, queries.exclude, 7)
    np.testing.assert_array_equal(got.items, want.items)
    np.testing.assert_array_equal(got.scores, want.scores)


def _csr_parts(matrix: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``from_rows`` arguments (row lengths, columns, values) of a scipy CSR matrix."""
    return np.diff(matrix.indptr), matrix.indices.astype(np.int64), matrix.data


def test_retrieve_sums_neighbours_and_never_returns_excluded_or_unscored() -> None:
    # item 0 -> {1: 0.9, 2: 0.5}; item 1 -> {2: 0.4, 3: 0.2}; items 4, 5 have no neighbours
    table = from_rows(np.array([2, 2, 0, 0, 0, 0]), np.array([1, 2, 2, 3]),
                      np.array([0.9, 0.5, 0.4, 0.2]))
    handle = I2IHandle(table, triggers=2, recency_decay=0.5, algorithm="itemcf")
    queries = QueryBatch.from_histories([np.array([1, 0]), np.array([5]), np.array([0])],
                                        extra_exclude=[[], [], [2]])
    answer = handle.retrieve(queries, 4)
    # query 0: item 2 = 0.5 * 1 + 0.4 * 0.5, item 3 = 0.2 * 0.5; 0 and 1 are history.
    assert answer.items[0].tolist() == [2, 3, -1, -1]
    np.testing.assert_allclose(answer.scores[0, :2], [0.7, 0.1], rtol=1e-6)
    assert np.isneginf(answer.scores[0, 2:]).all()
    assert (answer.items[1] == -1).all()  # no trigger has neighbours
    assert answer.items[2].tolist() == [1, -1, -1, -1]
    assert handle.retrieve(queries, 1).items.shape == (3, 1)


@pytest.mark.parametrize("algorithm", ["itemcf", "swing"])
def test_train_index_load_round_trip(algorithm: str, tmp_path: Path) -> None:
    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[plugin])
    config = host.validate_config("i2i", {"algorithm": algorithm, "neighbours": 5})
    data = tiny_dataset()
    model, index = tmp_path / "model", tmp_path / "index"
    model.mkdir()
    index.mkdir()
    metrics = host.train("i2i", config, data, TrainContext(model, SilentProgress()))
    assert metrics["algorithm"] == algorithm and 0 < metrics["pairs"] <= 5 * data.num_items
    handle = host.index("i2i", config, model, index)
    queries = QueryBatch.from_histories(data.sequences()[:10])
    before = host.retrieve("i2i", handle, queries, 7)
    after = host.retrieve("i2i", host.load("i2i", config, model, index), queries, 7)
    np.testing.assert_array_equal(before.items, after.items)
    np.testing.assert_array_equal(before.scores, after.scores)
    (index / "neighbours.npz").write_bytes(b"not a table")
    with pytest.raises(ArtifactError):
        host.load("i2i", config, model, index)


def test_corrupt_tables_are_refused(tmp_path: Path) -> None:
    table = from_rows(np.array([1, 0]), np.array([5]), np.array([0.3]))  # neighbour 5 of 2 items
    table.save(tmp_path)
    with pytest.raises(ArtifactError, match="out of range"):
        NeighbourTable.load(tmp_path)
    with pytest.raises(ArtifactError, match="missing"):
        NeighbourTable.load(tmp_path / "elsewhere")


@pytest.mark.parametrize("values, message", [
    ({"colour": "red"}, "unknown key"),
    ({"algorithm": "als"}, "algorithm"),
    ({"neighbours": 0}, "neighbours"),
    ({"recency_decay": 1.5}, "recency_decay"),
    ({"max_users_per_item": 1}, "max_users_per_item"),
])
def test_config_is_validated(values: dict, message: str) -> None:
    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[plugin])
    with pytest.raises(ConfigError, match=message):
        host.validate_config("i2i", values)
