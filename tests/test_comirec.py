"""The ``comirec`` source: contract, SA masking, DR routing, diversity, groups, and that it learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recall_core.contract import QueryBatch, TrainContext
from recall_core.evaluation.metrics import ranking_metrics
from recall_core.evaluation.protocols import make_split
from recall_core.host import PluginHost, make_host
from recall_core.progress import SilentProgress
from recall_core.testing import SourceContractTests
from recall_core.training.inference import is_compiled
from recall_plugins.comirec import plugin as comirec_plugin

FAST = {"dim": 16, "max_len": 20, "epochs": 2, "batch_size": 32, "patience": 1,
        "num_negatives": 64, "interests": 3}


class TestComirecSaContract(SourceContractTests):
    kind = "comirec"
    config = FAST
    plugins = (comirec_plugin,)
    load_entry_points = False

    @pytest.fixture
    def contract_host(self) -> PluginHost:
        return make_host(load_entry_points=False, builtins=False, extra_plugins=self.plugins)


class TestComirecDrContract(TestComirecSaContract):
    config = {**FAST, "variant": "dr", "diversity_lambda": 0.1, "index": "hnsw"}


@pytest.fixture
def host() -> PluginHost:
    return make_host(load_entry_points=False, builtins=False, extra_plugins=[comirec_plugin])


def tiny_model(extractor: str, **extra: object):  # noqa: ANN201
    from recall_core.training.interests import InterestSpec, MultiInterestModel

    spec = InterestSpec(40, extractor, max_len=12, dim=8, interests=4, **extra)  # type: ignore[arg-type]
    return MultiInterestModel(spec).eval()


def test_sa_attention_gives_padding_zero_weight() -> None:
    import torch

    model = tiny_model("sa")
    inputs = torch.randint(1, 41, (3, 12))
    inputs[0, 5:] = 0
    inputs[1, 9:] = 0
    lengths = torch.tensor([5, 9, 12])
    with torch.no_grad():
        embedded = model.item_embedding(inputs)
        weights = model.extractor.attention(embedded, inputs == 0)  # (B, K, T)
        assert weights.shape == (3, 4, 12)
        assert torch.all(weights[0, :, 5:] == 0) and torch.all(weights[1, :, 9:] == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
        interests, _ = model(inputs, lengths)
        # The same sequence with its padding cut off gives the same interests ...
        short, _ = model(inputs[:1, :5], lengths[:1])
        torch.testing.assert_close(interests[:1], short)
        # ... they are the attention-weighted item embeddings ...
        torch.testing.assert_close(interests, torch.einsum("bkt,btd->bkd", weights, embedded))
        # ... and the training prefixes agree with the whole-sequence readout.
        prefix, _ = model.prefix_interests(inputs, torch.arange(12).expand(3, 12))
        torch.testing.assert_close(prefix[1, 8], interests[1])


@pytest.mark.parametrize("extractor", ["dr", "mind"])
def test_routing_produces_distinct_interests(extractor: str) -> None:
    import torch

    model = tiny_model(extractor)
    with torch.no_grad():
        interests, valid = model(torch.randint(1, 41, (4, 12)), torch.full((4,), 12))
    assert valid.all()
    distance = torch.cdist(interests, interests)  # (B, K, K)
    off_diagonal = distance[:, ~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3, "two interests of one user coincide"


def test_dr_position_maps_route_each_position_through_its_own_map() -> None:
    import torch

    model = tiny_model("dr", position_maps=True)
    assert tuple(model.extractor.bilinear.shape) == (12, 4, 8, 8)  # (T, K, d, d)
    inputs = torch.randint(1, 41, (2, 12))
    inputs[1, 7:] = 0
    lengths = torch.tensor([12, 7])
    with torch.no_grad():
        interests, _ = model(inputs, lengths)
        short, _ = model(inputs[1:, :7], lengths[1:])  # padding cut off: same interests
        torch.testing.assert_close(interests[1:], short)
        prefix, _ = model.prefix_interests(inputs, torch.arange(12).expand(2, 12))
        torch.testing.assert_close(prefix[1, 6], interests[1])  # prefixes agree with the whole
        # Maps shared across positions would make the capsules order-invariant; these are not.
        reversed_order, _ = model(inputs[:1].flip(1), lengths[:1])
        assert not torch.allclose(reversed_order, interests[:1], atol=1e-4)
        shared = tiny_model("dr")
        shared_interests, _ = shared(inputs[:1], lengths[:1])
        shared_reversed, _ = shared(inputs[:1].flip(1), lengths[:1])
        torch.testing.assert_close(shared_interests, shared_reversed)


@pytest.mark.parametrize("k", [5, 60])
def test_exact_max_merge_equals_the_per_interest_searches(k: int, monkeypatch) -> None:  # noqa: ANN001
    from recall_core.training import multi_interest
    from recall_core.training.faiss_index import IndexSettings, ItemIndex

    rng = np.random.default_rng(7)
    index = ItemIndex.build(rng.normal(size=(80, 8)).astype(np.float32), IndexSettings("flat"))
    interests = rng.normal(size=(6, 4, 8)).astype(np.float32)
    valid = rng.random((6, 4)) < 0.7
    valid[0] = False  # a query without any interest gets nothing
    exclude = [rng.choice(80, size=n, replace=False) for n in (0, 3, 10, 0, 79, 5)]
    monkeypatch.setattr(multi_interest, "EXACT_CELLS", 4 * 80 * 2)  # two queries per chunk
    exact = multi_interest.search_interests(index, interests, valid, k, exclude)
    index._dense = None  # the faiss path: K searches merged by max and deduped
    pooled = multi_interest.search_interests(index, interests, valid, k, exclude)
    np.testing.assert_array_equal(exact.items, pooled.items)
    np.testing.assert_array_equal(exact.groups, pooled.groups)
    np.testing.assert_allclose(exact.scores, pooled.scores, rtol=1e-5)
    assert (exact.items[0] == -1).all() and (exact.items[4] >= 0).sum() == 1


def naive_greedy(items: np.ndarray, scores: np.ndarray, categories: np.ndarray, k: int,
                 lam: float) -> list[int]:
    chosen: list[int] = []
    counts: dict[int, int] = {}
    left = list(range(len(items)))
    while left and len(chosen) < k:
        values = [scores[i] - lam * counts.get(int(categories[items[i]]), 0) for i in left]
        best = left.pop(int(np.argmax(values)))
        chosen.append(int(items[best]))
        counts[int(categories[items[best]])] = counts.get(int(categories[items[best]]), 0) + 1
    return chosen


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.3, 5.0])
def test_vectorised_aggregation_equals_the_greedy(lam: float) -> None:
    from recall_core.training.multi_interest import AggregationSettings, merge_pool

    rng = np.random.default_rng(3)
    categories = rng.integers(0, 5, size=200)
    items = rng.integers(0, 200, size=(6, 80))  # duplicates across "interests"
    scores = rng.normal(size=items.shape).astype(np.float32)
    groups = np.repeat(np.arange(4), 20)[None, :].repeat(6, axis=0)
    found = merge_pool(items, scores, groups, 25, AggregationSettings(lam, categories))
    for row in range(6):
        best: dict[int, float] = {}
        for item, score in zip(items[row], scores[row]):
            best[int(item)] = max(best.get(int(item), -np.inf), float(score))
        unique = np.array(sorted(best)), np.array([best[i] for i in sorted(best)])
        expected = naive_greedy(*unique, categories, 25, lam)
        assert found.items[row].tolist() == expected
        assert np.all(np.diff(found.scores[row]) <= 1e-6)


def train_synthetic(host: PluginHost, tmp_path: Path, values: dict):  # noqa: ANN201
    from recall_core.data.synthetic import SyntheticConfig, generate

    dataset = generate(SyntheticConfig(users=300, items=120, seed=11))
    split = make_split(dataset, "paper")
    config = host.validate_config("comirec", values)
    model_dir, index_dir = tmp_path / "model", tmp_path / "index"
    model_dir.mkdir()
    index_dir.mkdir()
    context = TrainContext(model_dir, SilentProgress(), threads=2, validation=split.valid)
    metrics = host.train("comirec", config, split.train, context)
    return dataset, split, metrics, host.index("comirec", config, model_dir, index_dir)


LEARN = {"dim": 32, "max_len": 30, "epochs": 6, "patience": 3, "batch_size": 32, "lr": 5e-3,
         "num_negatives": 64, "seed": 1}


def popularity_hr(split, dataset, k: int) -> float:  # noqa: ANN001
    from recall_core.ranking import top_k_excluding

    counts = np.bincount(split.train.items, minlength=dataset.num_items).astype(np.float32)
    scores = np.repeat(counts[None, :], len(split.test), axis=0)
    top = top_k_excluding(scores, split.test.queries.exclude, k)
    return ranking_metrics(top.items, split.test.targets, [k], dataset.num_items)[f"HR@{k}"]


def test_comirec_sa_learns_and_groups_are_interests(host, tmp_path: Path) -> None:  # noqa: ANN001
    dataset, split, metrics, handle = train_synthetic(host, tmp_path, LEARN)
    assert metrics["samples_per_second"] > 0 and metrics["best_epoch"] >= 1
    assert is_compiled(handle.forward)  # interests below come from the served (compiled) pass
    answer = host.retrieve("comirec", handle, split.test.queries, 10)
    hr = ranking_metrics(answer.items, split.test.targets, [10], dataset.num_items)["HR@10"]
    baseline = popularity_hr(split, dataset, 10)
    assert hr > 1.5 * baseline + 0.02, f"HR@10 {hr:.3f} vs popularity {baseline:.3f}"
    # groups[i, r] is the interest whose inner product gave the candidate's (max) score.
    interests, valid = handle.interests(list(split.test.queries.histories[:20]))
    table = handle.model.item_vectors().numpy()
    for row in range(20):
        items, scores, groups = answer.row(row)
        per_interest = interests[row] @ table[items].T  # (K, n)
        np.testing.assert_array_equal(groups, per_interest.argmax(0))
        np.testing.assert_allclose(scores, per_interest.max(0), rtol=1e-4, atol=1e-5)


def test_diversity_lambda_raises_category_diversity(host, tmp_path: Path) -> None:  # noqa: ANN001
    from recall_core.training.multi_interest import AggregationSettings, category_diversity

    dataset, split, _, handle = train_synthetic(host, tmp_path, {**LEARN, "epochs": 4})
    queries = split.test.queries
    categories = handle.aggregation.categories
    assert categories is not None and np.array_equal(categories, dataset.item_category)
    plain = handle.retrieve(queries, 20)
    handle.aggregation = AggregationSettings(0.5, categories)
    diverse = handle.retrieve(queries, 20)
    before = category_diversity(plain.items, categories, 20)
    after = category_diversity(diverse.items, categories, 20)
    assert after > before + 0.05, f"diversity {before:.3f} -> {after:.3f}"
    assert (diverse.items >= 0).sum() == (plain.items >= 0).sum()
    # Categories first (huge λ): a wider pool can only find more of them.
    handle.aggregation = AggregationSettings(1e6, categories)
    ceiling = category_diversity(handle.retrieve(queries, 20).items, categories, 20)
    handle.aggregation = AggregationSettings(1e6, categories, pool=4)
    wider = handle.retrieve(queries, 20)
    assert category_diversity(wider.items, categories, 20) >= ceiling
    assert all(len(set(row.tolist()) - {-1}) == (row >= 0).sum() for row in wider.items)


def test_clusters_stand_in_for_missing_categories(host, tmp_path: Path) -> None:  # noqa: ANN001
    _, _, metrics, handle = train_synthetic(
        host, tmp_path, {**LEARN, "epochs": 1, "categories": "clusters", "category_clusters": 5,
                         "diversity_lambda": 0.2})
    assert metrics["categories"] == 5
    assert handle.aggregation.diversity_lambda == 0.2
    assert set(np.unique(handle.aggregation.categories)) == set(range(5))


def test_the_serving_user_cache_changes_no_answer(host, tmp_path: Path) -> None:  # noqa: ANN001
    # Latency itself is measured by benchmarks/multi_interest_ml1m.py, not by unit tests.
    _, split, _, handle = train_synthetic(host, tmp_path, {**LEARN, "epochs": 1,
                                                           "diversity_lambda": 0.1})
    queries = split.test.queries.slice(0, 40)
    handle.user_cache.capacity = 0
    expected = host.retrieve("comirec", handle, queries, 30)
    handle.user_cache.capacity = 1000
    for _ in range(2):  # the second round is answered from the cache
        answer = host.retrieve("comirec", handle, queries, 30)
        np.testing.assert_array_equal(answer.items, expected.items)
        np.testing.assert_array_equal(answer.groups, expected.groups)
        np.testing.assert_allclose(answer.scores, expected.scores, rtol=1e-5, atol=1e-6)
    assert handle.user_cache.hits >= len(queries)


def test_config_keys(host) -> None:  # noqa: ANN001
    from recall_core.errors import ConfigError

    config = host.validate_config("comirec", {})
    assert (config.variant, config.interests, config.loss, config.sampler) == (
        "sa", 4, "sampled_softmax", "popularity")
    assert config.logq_correction and config.diversity_lambda == 0.0
    assert config.bilinear == "position"
    with pytest.raises(ConfigError):
        host.validate_config("comirec", {"variant": "xx"})
    with pytest.raises(ConfigError):
        host.validate_config("comirec", {"layers": 2})


def test_plugin_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import recall_plugins.comirec.plugin, recall_plugins.mind.plugin; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"PYTHONPATH": ":".join(sys.path)})


def test_empty_and_unknown_histories(host, tmp_path: Path) -> None:  # noqa: ANN001
    _, _, _, handle = train_synthetic(host, tmp_path, {**LEARN, "epochs": 1})
    queries = QueryBatch.from_histories([np.array([], np.int64), np.array([10_000, 3])])
    answer = host.retrieve("comirec", handle, queries, 5)
    assert (answer.items[0] == -1).all() and (answer.groups[0] == -1).all()
    assert (answer.items[1] >= 0).all()
