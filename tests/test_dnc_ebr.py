"""The ``dnc_ebr`` source: contract, clusters, negatives, prompts, quota, and that it learns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recall_core.contract import QueryBatch, TrainContext
from recall_core.errors import ConfigError
from recall_core.evaluation.metrics import ranking_metrics
from recall_core.evaluation.protocols import make_split
from recall_core.host import PluginHost, make_host
from recall_core.progress import SilentProgress
from recall_core.testing import SourceContractTests
from recall_core.training.inference import is_compiled
from recall_plugins.dnc_ebr import plugin as dnc_plugin
from recall_plugins.dnc_ebr.quota import allocate_quota, largest_remainder

FAST = {"dim": 16, "max_len": 20, "epochs": 2, "batch_size": 32, "layers": 1, "patience": 1,
        "clusters": 4, "item2vec_epochs": 1, "kmeans_iterations": 5}


class TestDncEbrContract(SourceContractTests):
    """The defaults: item2vec clusters, in-cluster softmax, no prompt, the intent head on the
    encoder state, the score merge."""

    kind = "dnc_ebr"
    config = FAST
    plugins = (dnc_plugin,)
    load_entry_points = False

    @pytest.fixture
    def contract_host(self) -> PluginHost:
        return make_host(load_entry_points=False, builtins=False, extra_plugins=self.plugins)


class TestDncEbrPrefixCategoryContract(TestDncEbrContract):
    """Prefix prompt, item-embedding intent head, equal quota, category clusters, sampled
    in-cluster negatives, HNSW."""

    config = {**FAST, "prompt": "prefix", "intent_input": "items", "quota": "equal",
              "cluster_by": "category",
              "loss": "sampled_softmax", "num_negatives": 8, "index": "hnsw"}


class TestDncEbrSasrecPlusContract(TestDncEbrContract):
    """SASRec+: no prompt, mixed hard/easy BCE negatives, intent quota with alpha 0.5."""

    config = {**FAST, "prompt": "none", "negatives": "mixed", "hard_ratio": 0.5, "loss": "bce",
              "num_negatives": 4, "alpha": 0.5}


class TestDncEbrHadamardContract(TestDncEbrContract):
    """The paper's Hadamard prompt, its intent head on the unprompted encoder state (one more
    pass than the K task passes), the intent quota."""

    config = {**FAST, "prompt": "hadamard", "intent_input": "encoder", "quota": "intent"}


class TestDncEbrHadamardTaskStateContract(TestDncEbrContract):
    """The Hadamard prompt at one pass per window: each row's task draws its targets ahead
    (``next_in_task``) and the intent head reads the prompted states (no pass of its own)."""

    config = {**FAST, "prompt": "hadamard", "intent_input": "task_state",
              "prompt_targets": "next_in_task", "task_sampling": "one"}


@pytest.fixture
def host() -> PluginHost:
    return make_host(load_entry_points=False, builtins=False, extra_plugins=[dnc_plugin])


def test_config_defaults_and_bad_combinations(host: PluginHost) -> None:
    config = host.validate_config("dnc_ebr", {})
    assert (config.prompt, config.intent_input, config.negatives, config.quota,
            config.clusters) == ("none", "encoder", "in_cluster", "score", 10)
    with pytest.raises(ConfigError, match="samples negatives"):
        host.validate_config("dnc_ebr", {"negatives": "mixed"})  # with the full softmax
    with pytest.raises(ConfigError, match="intent head"):
        host.validate_config("dnc_ebr", {"intent_weight": 0})
    with pytest.raises(ConfigError, match="prompt"):
        host.validate_config("dnc_ebr", {"prompt": "suffix"})


def test_plugin_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import recall_plugins.dnc_ebr.plugin; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": ":".join(sys.path)})


# ---- quota -----------------------------------------------------------------------
def test_quota_sums_to_m_and_follows_p_alpha() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=200)
    for total in (1, 10, 50, 333):
        for alpha in (0.0, 0.5, 1.0, 3.0):
            seats = allocate_quota(p, total, alpha)
            assert (seats.sum(axis=1) == total).all() and (seats >= 0).all()
            exact = total * p ** alpha / (p ** alpha).sum(axis=1, keepdims=True)
            assert (np.abs(seats - exact) < 1).all()  # largest remainder: off by < 1 seat
    np.testing.assert_array_equal(allocate_quota(p[:2], 10, 1.0),
                                  allocate_quota(p[:2], 10, 1.0))  # deterministic


def test_quota_alpha_zero_is_equal_and_remainders_go_to_the_largest() -> None:
    p = np.array([[0.7, 0.2, 0.1, 0.0]])
    np.testing.assert_array_equal(allocate_quota(p, 8, 0.0), [[2, 2, 2, 2]])
    np.testing.assert_array_equal(allocate_quota(p, 10, 0.0), [[3, 3, 2, 2]])  # ties: lower index
    np.testing.assert_array_equal(allocate_quota(p, 10, 1.0), [[7, 2, 1, 0]])
    np.testing.assert_array_equal(largest_remainder(np.array([5]), np.array([[1.0, 1.0, 1.0]])),
                                  [[2, 2, 1]])


def test_quota_redistributes_leftovers_of_small_clusters() -> None:
    p = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.2, 0.2, 0.6]])
    capacity = np.array([[2, 100, 100], [3, 3, 3], [0, 1, 2]])
    seats = allocate_quota(p, 10, 1.0, capacity)
    np.testing.assert_array_equal(seats[0], [2, 5, 3])  # 3 leftovers split 3:2 by weight
    np.testing.assert_array_equal(seats[1], [3, 3, 3])  # zero-weight groups still fill in
    np.testing.assert_array_equal(seats[2], [0, 1, 2])  # supply < M: everything there is
    assert (seats <= capacity).all()


# ---- clusters and negatives -----------------------------------------------------
def pair_agreement(truth: np.ndarray, found: np.ndarray) -> tuple[float, float]:
    """P(same true cluster | same found cluster) and its chance level."""
    off_diagonal = ~np.eye(len(truth), dtype=bool)
    same_found = (found[:, None] == found[None, :]) & off_diagonal
    same_truth = (truth[:, None] == truth[None, :]) & off_diagonal
    return (same_found & same_truth).sum() / same_found.sum(), same_truth.sum() / off_diagonal.sum()


def test_item2vec_kmeans_recovers_the_synthetic_clusters() -> None:
    from recall_core.data.synthetic import SyntheticConfig, generate
    from recall_plugins.dnc_ebr.clusters import assign_clusters
    from recall_plugins.dnc_ebr.config import DncEbrConfig

    dataset = generate(SyntheticConfig(users=400, items=200, clusters=8, seed=3))
    labels = assign_clusters(DncEbrConfig(clusters=8), dataset)
    assert labels.shape == (200,) and set(labels.tolist()) == set(range(8))
    precision, chance = pair_agreement(dataset.item_category, labels)
    assert precision > 3 * chance, f"pair precision {precision:.2f} vs chance {chance:.2f}"
    np.testing.assert_array_equal(labels, assign_clusters(DncEbrConfig(clusters=8), dataset))


def test_cold_items_get_a_cluster_and_categories_map_one_to_one() -> None:
    from recall_core.data.dataset import Dataset
    from recall_plugins.dnc_ebr.clusters import assign_clusters
    from recall_plugins.dnc_ebr.config import DncEbrConfig
    from recall_core.testing.datasets import tiny_dataset

    dataset = tiny_dataset()
    cold = dataset.select_rows(dataset.items != 0)  # item 0 has no interactions any more
    labels = assign_clusters(DncEbrConfig(clusters=5), cold)
    assert len(labels) == dataset.num_items and (labels >= 0).all()
    by_category = assign_clusters(DncEbrConfig(cluster_by="category"), dataset)
    np.testing.assert_array_equal(by_category, np.unique(dataset.item_category, return_inverse=True)[1])
    uncategorised = Dataset.from_raw(np.array(["u"] * 3), np.array(["a", "b", "c"]),
                                     item_categories={"a": "x"})
    np.testing.assert_array_equal(assign_clusters(DncEbrConfig(cluster_by="category"),
                                                  uncategorised), [0, 1, 1])


@pytest.mark.parametrize("negatives,loss", [("in_cluster", "sampled_softmax"), ("mixed", "bce")])
def test_negatives_come_from_the_positive_cluster(negatives: str, loss: str) -> None:
    import torch

    from recall_plugins.dnc_ebr.config import DncEbrConfig
    from recall_plugins.dnc_ebr.train import make_loss

    item_cluster = np.repeat(np.arange(5), 20)
    config = DncEbrConfig(negatives=negatives, loss=loss, num_negatives=40, hard_ratio=0.25)
    objective = make_loss(config, np.ones(100, np.int64), item_cluster)
    positives = torch.arange(0, 100, 7)
    drawn = objective.sampler.sample(positives, 40)
    assert drawn.ids.shape == (len(positives), 40)
    same = item_cluster[drawn.ids.numpy()] == item_cluster[positives.numpy()][:, None]
    if negatives == "in_cluster":
        assert same.all()
    else:
        assert same[:, :10].all()  # the hard quarter; the easy rest is global
        assert 0.05 < same[:, 10:].mean() < 0.4  # uniform: about 1/5 land in the cluster by chance
        assert torch.isfinite(drawn.log_q).all() and torch.isfinite(drawn.positive_log_q).all()


@pytest.mark.parametrize("prompt", ["none", "hadamard", "hadamard_next"])
def test_all_clusters_in_one_product_equals_one_search_per_cluster(prompt: str) -> None:
    import torch

    from recall_core.training.encoders import EncoderSpec
    from recall_core.training.faiss_index import IndexSettings
    from recall_plugins.dnc_ebr.model import DncEbrNet, DncEbrSpec
    from recall_plugins.dnc_ebr.retrieval import DncEbrHandle, build_indexes

    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    item_cluster = rng.permutation(np.arange(40) % 4)  # 4 clusters of 10, interleaved ids
    net = DncEbrNet(DncEbrSpec(EncoderSpec(40, 8, 16, 1), 4, prompt)).eval()
    handle = DncEbrHandle(net, item_cluster, build_indexes(net, item_cluster, IndexSettings("flat")))
    histories = [rng.choice(40, size=int(n), replace=False) for n in rng.integers(1, 8, 6)]
    queries = QueryBatch.from_histories(histories)
    assert handle.exact is not None
    exact = handle.cluster_lists(queries, 12)  # wider than a cluster: padding per cluster
    handle.quota = "score"  # its fast path: the global top k straight from the product
    for k in (12, 3):
        fast, merged = handle.retrieve(queries, k), handle.merge(handle.cluster_lists(queries, k), k)
        np.testing.assert_array_equal(fast.items, merged.items)
        np.testing.assert_array_equal(fast.groups, merged.groups)
        np.testing.assert_allclose(fast.scores, merged.scores, rtol=1e-6)
        assert (fast.groups == np.where(fast.items >= 0, item_cluster[fast.items], -1)).all()
    handle.exact = None
    searched = handle.cluster_lists(queries, 12)
    np.testing.assert_array_equal(exact.items, searched.items)
    np.testing.assert_allclose(exact.scores, searched.scores, rtol=1e-5, atol=1e-5)
    assert (exact.items[:, :, 10:] == -1).all()


# ---- trained end to end on the synthetic data -----------------------------------------
@pytest.fixture(scope="module", params=[
    {}, {"prompt": "hadamard", "intent_input": "items"},
    {"prompt": "hadamard", "intent_input": "task_state", "prompt_targets": "next_in_task",
     "task_sampling": "one"}, {"prompt": "hadamard_next"}],
    ids=["defaults", "hadamard-item-intent", "hadamard-task-state", "hadamard-next"])
def synthetic_run(request: pytest.FixtureRequest,  # noqa: ANN201
                  tmp_path_factory: pytest.TempPathFactory):
    """The defaults (no prompt, encoder-state intent), the paper's Hadamard prompt, the
    Hadamard prompt at one pass per window (targets ahead, task-state intent), and the
    per-position Hadamard prompts (hadamard_next)."""
    from recall_core.data.synthetic import SyntheticConfig, generate

    host = make_host(load_entry_points=False, builtins=False, extra_plugins=[dnc_plugin])
    dataset = generate(SyntheticConfig(users=300, items=120, seed=11))
    split = make_split(dataset, "paper")
    config = host.validate_config("dnc_ebr", {
        "dim": 32, "max_len": 30, "layers": 1, "epochs": 8, "patience": 3, "batch_size": 32,
        "lr": 3e-3, "seed": 1, "clusters": 6, "item2vec_epochs": 2, **request.param})
    root = tmp_path_factory.mktemp("dnc")
    model_dir, index_dir = root / "model", root / "index"
    model_dir.mkdir()
    index_dir.mkdir()
    context = TrainContext(model_dir, SilentProgress(), threads=2, validation=split.valid)
    metrics = host.train("dnc_ebr", config, split.train, context)
    handle = host.index("dnc_ebr", config, model_dir, index_dir)
    return host, split, metrics, handle, model_dir, index_dir


def served_intent(net: Any, inputs: Any, lengths: Any) -> Any:
    """p_uk as served, computed eagerly: a task-state head averages its distribution over the
    K task passes, one pass per task here."""
    import torch

    if not net.intent_reads_task_state:
        return net.intent_probabilities(inputs, lengths)
    per_task = [torch.softmax(net.intent(net.user_vectors(
        inputs, lengths, torch.full((len(inputs),), task))), dim=-1)
        for task in range(net.spec.num_clusters)]
    return torch.stack(per_task).mean(dim=0)


def test_dnc_ebr_beats_popularity_on_the_synthetic_sequences(synthetic_run) -> None:  # noqa: ANN001
    from recall_core.ranking import top_k_excluding

    host, split, metrics, handle, _, _ = synthetic_run
    assert metrics["best_epoch"] >= 1 and metrics["samples_per_second"] > 0
    queries, num_items = split.test.queries, split.train.num_items
    answer = host.retrieve("dnc_ebr", handle, queries, 10)
    hr = ranking_metrics(answer.items, split.test.targets, [10], num_items)["HR@10"]
    counts = np.bincount(split.train.items, minlength=num_items).astype(np.float32)
    popular = top_k_excluding(np.tile(counts, (len(queries), 1)), queries.exclude, 10)
    pop_hr = ranking_metrics(popular.items, split.test.targets, [10], num_items)["HR@10"]
    assert hr > 2 * pop_hr, f"HR@10 {hr:.3f} is not clearly above popularity ({pop_hr:.3f})"


def test_groups_are_the_candidates_clusters_and_quotas_hold(synthetic_run) -> None:  # noqa: ANN001
    import torch

    from recall_core.training.batching import pad_histories

    host, split, _, _, model_dir, index_dir = synthetic_run
    config = host.validate_config("dnc_ebr", {"dim": 32, "max_len": 30, "layers": 1,
                                              "clusters": 6, "quota": "intent"})
    handle = host.load("dnc_ebr", config, model_dir, index_dir)
    item_cluster = np.load(model_dir / "clusters.npy")
    queries = split.test.queries.slice(0, 40)
    answer = host.retrieve("dnc_ebr", handle, queries, 12)
    valid = answer.items >= 0
    assert answer.groups is not None and valid.all()
    np.testing.assert_array_equal(answer.groups[valid], item_cluster[answer.items[valid]])
    inputs, lengths = pad_histories(queries.histories, 30, split.train.num_items)
    with torch.no_grad():
        p = served_intent(handle.net, torch.from_numpy(inputs), torch.from_numpy(lengths))
    supply = np.array([[np.setdiff1d(np.flatnonzero(item_cluster == k), e).size
                        for k in range(handle.num_clusters)] for e in queries.exclude])
    expected = allocate_quota(p.numpy(), 12, handle.alpha, np.minimum(supply, 12))
    counts = np.stack([(answer.groups == k).sum(axis=1) for k in range(handle.num_clusters)], 1)
    np.testing.assert_array_equal(counts, expected)
    assert (answer.groups[:, :4] != answer.groups[:, :1]).any()  # lists mix clusters


def test_equal_quota_and_per_cluster_indexes_on_disk(synthetic_run) -> None:  # noqa: ANN001
    host, split, _, handle, model_dir, index_dir = synthetic_run
    config = host.validate_config("dnc_ebr", {"dim": 32, "max_len": 30, "layers": 1,
                                              "clusters": 6, "quota": "equal"})
    assert len(list(Path(index_dir).glob("cluster_*.faiss"))) == handle.num_clusters
    equal = host.load("dnc_ebr", config, model_dir, index_dir)
    queries = split.test.queries.slice(0, 20)
    k = 2 * handle.num_clusters
    answer = host.retrieve("dnc_ebr", equal, queries, k)
    counts = np.stack([(answer.groups == c).sum(axis=1) for c in range(handle.num_clusters)], 1)
    assert (counts == 2).all()  # every cluster supplies M / K (all have enough items here)
    cold = host.retrieve("dnc_ebr", equal, QueryBatch.from_histories([np.empty(0, np.int64)]), 5)
    assert (cold.items == -1).all()



def test_score_merge_is_the_top_of_every_clusters_list_by_log_probability(synthetic_run) -> None:  # noqa: ANN001,E501
    host, split, _, handle, model_dir, index_dir = synthetic_run
    config = host.validate_config("dnc_ebr", {"dim": 32, "max_len": 30, "layers": 1,
                                              "clusters": 6, "quota": "score"})
    by_score = host.load("dnc_ebr", config, model_dir, index_dir)
    queries = split.test.queries.slice(0, 20)
    answer = host.retrieve("dnc_ebr", by_score, queries, 15)
    lists = by_score.cluster_lists(queries, 15)
    for i in range(len(queries)):
        pool = lists.scores[i].ravel()
        expected = np.sort(pool[np.isfinite(pool)])[::-1][:15]
        np.testing.assert_allclose(answer.scores[i], expected, rtol=1e-6)
    assert np.all(np.diff(answer.scores, axis=1) <= 0)
    with pytest.raises(Exception, match="intent head"):
        host.validate_config("dnc_ebr", {"quota": "score", "intent_weight": 0})


def test_the_serving_user_cache_changes_no_answer(synthetic_run) -> None:  # noqa: ANN001
    host, split, _, handle, model_dir, index_dir = synthetic_run
    config = host.validate_config("dnc_ebr", {"dim": 32, "max_len": 30, "layers": 1,
                                              "clusters": 6, "user_cache": 0})
    uncached = host.load("dnc_ebr", config, model_dir, index_dir)
    queries = split.test.queries.slice(0, 30)
    expected = host.retrieve("dnc_ebr", uncached, queries, 15)
    hits_before = handle.user_cache.hits
    for _ in range(2):  # the second round is answered from the cache
        answer = host.retrieve("dnc_ebr", handle, queries, 15)
        np.testing.assert_array_equal(answer.items, expected.items)
        np.testing.assert_array_equal(answer.groups, expected.groups)
        np.testing.assert_allclose(answer.scores, expected.scores, rtol=1e-5, atol=1e-6)
    assert handle.user_cache.hits - hits_before >= len(queries)
    assert len(uncached.user_cache) == 0


def test_exact_parallel_and_serial_cluster_work_give_the_same_answer(synthetic_run, monkeypatch) -> None:  # noqa: ANN001
    from recall_plugins.dnc_ebr import retrieval

    host, split, _, _, model_dir, index_dir = synthetic_run
    config = host.validate_config("dnc_ebr", {"dim": 32, "max_len": 30, "layers": 1,
                                              "clusters": 6, "user_cache": 0, "threads": 3})
    queries = split.test.queries.slice(0, 25)
    per_cluster = host.load("dnc_ebr", config, model_dir, index_dir)
    assert per_cluster.exact is not None  # flat indexes: all clusters in one product ...
    exact = host.retrieve("dnc_ebr", per_cluster, queries, 12)
    exact_lists = per_cluster.cluster_lists(queries, 12)
    per_cluster.exact = None  # ... unless disabled: one search per cluster, serially
    serial = host.retrieve("dnc_ebr", per_cluster, queries, 12)
    serial_lists = per_cluster.cluster_lists(queries, 12)
    monkeypatch.setattr(retrieval, "PARALLEL_MIN_SCORES", 0)
    handle = host.load("dnc_ebr", config, model_dir, index_dir)
    handle.exact = None
    parallel = host.retrieve("dnc_ebr", handle, queries, 12)
    assert handle._pool is not None, "the thread pool was used"
    for other in (parallel, exact):
        np.testing.assert_array_equal(serial.items, other.items)
        np.testing.assert_array_equal(serial.groups, other.groups)
        np.testing.assert_allclose(serial.scores, other.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(serial_lists.items, exact_lists.items)
    np.testing.assert_allclose(serial_lists.scores, exact_lists.scores, rtol=1e-5, atol=1e-5)


def test_encoded_users_equal_one_pass_per_task_and_a_separate_intent(synthetic_run, monkeypatch) -> None:  # noqa: ANN001,E501
    """The served (traced) encoder's stacked task passes (or the one shared pass, whose state
    an encoder-intent head reuses) equal eager passes, one per task, and a separate intent."""
    import torch

    from recall_core.training.batching import pad_histories
    from recall_plugins.dnc_ebr import retrieval

    _, split, _, handle, _, _ = synthetic_run
    monkeypatch.setattr(retrieval, "TASK_ROWS", 2 * handle.num_clusters)  # several stacked chunks
    assert all(is_compiled(forward) for forward in handle.forwards.values())  # served: compiled
    histories = list(split.test.queries.histories[:7])
    encoded = handle._encode(histories)  # (Q, K + V·d), V = K with prompts, else 1
    k, dim = handle.num_clusters, handle.net.spec.encoder.dim
    inputs, lengths = (torch.from_numpy(a) for a in pad_histories(histories, 30, handle.num_items))
    tasks = range(k) if handle.net.task_dependent else [None]
    assert encoded.shape == (len(histories), k + len(tasks) * dim)
    with torch.no_grad():
        p = served_intent(handle.net, inputs, lengths)
        for slot, task in enumerate(tasks):
            rows = None if task is None else torch.full((len(histories),), task)
            one = handle.net.user_vectors(inputs, lengths, rows)
            np.testing.assert_allclose(encoded[:, k + slot * dim : k + (slot + 1) * dim],
                                       one.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoded[:, :k], p.numpy(), rtol=1e-4, atol=1e-6)
