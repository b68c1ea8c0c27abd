"""The shared training kit: batching, samplers, losses, encoder, loop, validation, index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recall_core.data.dataset import Dataset

torch = pytest.importorskip("torch")

from recall_core.native import torch as load_torch  # noqa: E402

load_torch()

from recall_core.training import batching, losses, samplers  # noqa: E402
from recall_core.training.encoders import EncoderSpec, SequenceEncoder  # noqa: E402
from recall_core.training.faiss_index import IndexSettings, ItemIndex, as_vectors  # noqa: E402
from recall_core.training.loop import LoopSettings, fit  # noqa: E402
from recall_core.training.validation import holdout_validation  # noqa: E402

F = torch.nn.functional


def sequences_dataset(sequences: list[list[int]], num_items: int | None = None) -> Dataset:
    """A dataset whose user u has exactly ``sequences[u]`` (item ids as dense ids)."""
    users = np.concatenate([[u] * len(s) for u, s in enumerate(sequences)])
    items = np.concatenate(sequences)
    # Zero-padded raw ids keep dense ids equal to the numbers used here.
    width = len(str(max(num_items or 0, items.max())))
    all_items = range(num_items or items.max() + 1)
    raw_users = np.array([f"u{u:04d}" for u in users])
    raw_items = np.array([f"{i:0{width}d}" for i in items])
    # Make every catalogue item appear: pad a dummy user holding the whole catalogue.
    extra_users = np.array(["zzzz"] * len(all_items))
    extra_items = np.array([f"{i:0{width}d}" for i in all_items])
    return Dataset.from_raw(np.concatenate([raw_users, extra_users]),
                            np.concatenate([raw_items, extra_items]))


# ---- batching ----------------------------------------------------------------
def test_windows_cover_every_position_with_next_item_targets() -> None:
    data = sequences_dataset([[0, 1, 2, 3, 4, 5, 6], [7, 8], [9]], num_items=10)
    windows = batching.make_windows(data, max_len=3)
    # user 0: 6 positions -> two full windows; user 1: one of length 1; user 2: none.
    user0 = windows.users == 0
    assert user0.sum() == 2 and (windows.users == 1).sum() == 1 and not (windows.users == 2).any()
    assert windows.inputs.shape == (len(windows), 3)
    np.testing.assert_array_equal(windows.inputs[user0], [[4, 5, 6], [1, 2, 3]])  # ids + 1
    np.testing.assert_array_equal(windows.targets[user0], [[4, 5, 6], [1, 2, 3]])  # next items
    short = windows.users == 1
    np.testing.assert_array_equal(windows.inputs[short], [[8, 0, 0]])  # right padding
    np.testing.assert_array_equal(windows.targets[short], [[8, -1, -1]])
    assert windows.num_positions == 6 + 1 + (10 - 1)  # + the catalogue user's 9 positions


def test_last_window_only_keeps_the_most_recent_items() -> None:
    data = sequences_dataset([[0, 1, 2, 3, 4, 5, 6]], num_items=7)
    windows = batching.make_windows(data, max_len=3, windows="last")
    np.testing.assert_array_equal(windows.inputs[windows.users == 0], [[4, 5, 6]])


def test_batches_are_seeded_complete_and_trimmed() -> None:
    data = sequences_dataset([[i % 10 for i in range(n, n + 2 + n % 5)] for n in range(40)], 10)
    windows = batching.make_windows(data, max_len=4)
    batcher = batching.WindowBatcher(windows, batch_size=8, seed=3)
    first = [b.tolist() for b in batcher.batch_indices(1)]
    assert first == [b.tolist() for b in batching.WindowBatcher(windows, 8, seed=3).batch_indices(1)]
    assert first != [b.tolist() for b in batcher.batch_indices(2)]
    assert sorted(sum(first, [])) == list(range(len(windows)))
    for batch in batcher.epoch(1):
        assert batch.inputs.shape == batch.targets.shape
        assert batch.inputs.shape[1] == int(batch.lengths.max())
        assert ((batch.targets >= 0) == (batch.inputs > 0)).all()


def test_pad_histories_keeps_the_last_known_items() -> None:
    inputs, lengths = batching.pad_histories([np.array([1, 2, 3, 4]), np.array([], np.int64),
                                              np.array([5, 99])], max_len=3, num_items=10)
    np.testing.assert_array_equal(lengths, [3, 0, 1])
    np.testing.assert_array_equal(inputs, [[3, 4, 5], [0, 0, 0], [6, 0, 0]])


@pytest.mark.parametrize("histories", [
    [np.array([], np.int64), np.array([1, 5, 99, 2]), np.array([-1]), np.array([3])],
    [np.array([4, 2]), np.array([0, 9])],  # nothing unknown: the arrays are kept
    [np.array([], np.int64)],
])
def test_known_histories_drops_unknown_ids_row_by_row(histories: list[np.ndarray]) -> None:
    known, rows = batching.known_histories(histories, num_items=10)
    expected = [h[(h >= 0) & (h < 10)] for h in histories]
    assert len(known) == len(expected)
    for got, want in zip(known, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(rows, [i for i, h in enumerate(expected) if len(h)])


# ---- samplers ----------------------------------------------------------------
COUNTS = np.array([50, 20, 10, 10, 5, 3, 1, 1, 0, 0], dtype=np.float64)


@pytest.mark.parametrize("sampler", [
    samplers.UniformSampler(10),
    samplers.PopularitySampler(COUNTS, power=0.75),
    samplers.LogUniformSampler(COUNTS),
    samplers.InBatchSampler(COUNTS),
    samplers.make_sampler("mixed", target_counts=COUNTS, corpus_share=0.25),
], ids=lambda s: s.name)
def test_proposals_sum_to_one(sampler: samplers.NegativeSampler) -> None:
    q = sampler.probabilities()
    assert q.shape == (10,) and (q >= 0).all()
    assert q.sum() == pytest.approx(1.0)


def test_proposals_match_their_definitions() -> None:
    np.testing.assert_allclose(samplers.UniformSampler(10).probabilities(), 0.1)
    pop = samplers.PopularitySampler(COUNTS, power=0.5).probabilities()
    np.testing.assert_allclose(pop, COUNTS**0.5 / (COUNTS**0.5).sum())
    log_uniform = samplers.LogUniformSampler(COUNTS).probabilities()
    assert log_uniform[0] == pytest.approx(math.log(2) / math.log(11))  # rank 0
    assert log_uniform[1] == pytest.approx((math.log(3) - math.log(2)) / math.log(11))  # rank 1
    np.testing.assert_allclose(samplers.InBatchSampler(COUNTS).probabilities(), COUNTS / COUNTS.sum())
    mixed = samplers.make_sampler("mixed", target_counts=COUNTS, corpus_share=0.25)
    np.testing.assert_allclose(mixed.probabilities(), 0.75 * COUNTS / COUNTS.sum() + 0.25 * 0.1)


@pytest.mark.parametrize("sampler", [
    samplers.PopularitySampler(COUNTS, power=1.0, seed=1),
    samplers.LogUniformSampler(COUNTS, seed=1),
    samplers.UniformSampler(10, seed=1),
], ids=lambda s: s.name)
def test_draws_follow_the_reported_proposal(sampler: samplers.NegativeSampler) -> None:
    negatives = sampler.sample(torch.tensor([0, 1]), 40_000)
    frequency = np.bincount(negatives.ids.numpy(), minlength=10) / 40_000
    np.testing.assert_allclose(frequency, sampler.probabilities(), atol=0.01)
    np.testing.assert_allclose(negatives.log_q.exp().numpy(),
                               sampler.probabilities()[negatives.ids.numpy()], rtol=1e-5)
    np.testing.assert_allclose(negatives.positive_log_q.exp().numpy(),
                               sampler.probabilities()[[0, 1]], rtol=1e-5)


def test_in_cluster_negatives_stay_in_the_positive_cluster() -> None:
    cluster = np.array([0, 0, 0, 1, 1, 2, -1, -1, 2, 2])
    sampler = samplers.InClusterSampler(cluster, counts=COUNTS + 1, power=1.0, seed=2)
    q = sampler.probabilities()
    mapped = np.where(cluster < 0, 3, cluster)
    for c in range(4):
        assert q[mapped == c].sum() == pytest.approx(1.0)  # Q(j | c) sums to 1 per cluster
    positives = torch.tensor([0, 3, 5, 6])
    negatives = sampler.sample(positives, 20_000)
    assert negatives.ids.shape == (4, 20_000)
    for row, positive in enumerate(positives.tolist()):
        drawn = negatives.ids[row].numpy()
        assert (mapped[drawn] == mapped[positive]).all()
        frequency = np.bincount(drawn, minlength=10)[mapped == mapped[positive]] / 20_000
        np.testing.assert_allclose(frequency, q[mapped == mapped[positive]], atol=0.015)
    np.testing.assert_allclose(negatives.positive_log_q.exp().numpy(), q[positives.numpy()], rtol=1e-6)


def test_in_batch_and_mixed_draw_from_the_batch_and_the_cache() -> None:
    positives = torch.tensor([3, 3, 4, 5, 6, 7])
    in_batch = samplers.InBatchSampler(COUNTS, seed=0).sample(positives, 3)
    assert set(in_batch.ids.tolist()) <= set(positives.tolist()) and in_batch.shared
    mixed = samplers.make_sampler("mixed", target_counts=COUNTS, corpus_share=0.5,
                                  cache_size=4, dim=2)
    cold = mixed.sample(positives, 4)
    assert len(cold.ids) == 4 and cold.vectors is None  # empty cache: corpus draw
    mixed.observe(torch.tensor([8, 9, 8, 9]), torch.ones(4, 2))
    warm = mixed.sample(positives, 4, item_vectors=lambda ids: torch.zeros(len(ids), 2))
    assert set(warm.ids[2:].tolist()) <= {8, 9} and warm.vectors is not None
    np.testing.assert_array_equal(warm.vectors[2:].numpy(), 1.0)  # the cached (stale) vectors


def test_samplers_are_deterministic_under_a_seed() -> None:
    def draw() -> list[int]:
        return samplers.PopularitySampler(COUNTS, seed=5).sample(torch.tensor([0]), 50).ids.tolist()
    assert draw() == draw()


# ---- losses --------------------------------------------------------------------
def hand_example() -> tuple:
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
    users = torch.tensor([[2.0, 1.0], [0.5, -1.0]])
    positives = torch.tensor([0, 1])
    return table, users, positives


def test_logq_correction_and_temperature_on_a_hand_example() -> None:
    table, users, positives = hand_example()
    log_q = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    negatives = samplers.Negatives(torch.tensor([2, 3]), log_q[[2, 3]], log_q[positives])
    logits = losses.sampled_softmax_logits(users, positives, negatives, table, temperature=0.5)
    # user 0: s(pos 0) = 2, s(2) = 3, s(3) = -1.5; divided by 0.5, minus log Q.
    expected0 = [2 / 0.5 - math.log(0.4), 3 / 0.5 - math.log(0.2), -1.5 / 0.5 - math.log(0.1)]
    np.testing.assert_allclose(logits[0].numpy(), expected0, rtol=1e-6)
    loss = losses.sampled_softmax_loss(users, positives, negatives, table, temperature=0.5)
    expected = F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert float(loss) == pytest.approx(float(expected))
    uncorrected = losses.sampled_softmax_logits(users, positives, negatives, table,
                                                logq_correction=False)
    np.testing.assert_allclose(uncorrected[0].numpy(), [2.0, 3.0, -1.5], rtol=1e-6)


def test_accidental_hits_are_masked() -> None:
    table, users, positives = hand_example()
    zeros = torch.zeros(2)
    negatives = samplers.Negatives(torch.tensor([[0, 2], [3, 1]]), torch.zeros(2, 2), zeros)
    logits = losses.sampled_softmax_logits(users, positives, negatives, table)
    assert logits[0, 1] == float("-inf") and logits[1, 2] == float("-inf")  # the positive again
    assert torch.isfinite(logits[0, [0, 2]]).all()
    # BCE skips the hit instead of pushing the positive down.
    bce = losses.bce_loss(users, positives, negatives, table)
    s = lambda u, i: float(users[u] @ table[i])  # noqa: E731
    expected = (F.softplus(torch.tensor(-s(0, 0))) + F.softplus(torch.tensor(s(0, 2)))
                + F.softplus(torch.tensor(-s(1, 1))) + F.softplus(torch.tensor(s(1, 3)))) / 2
    assert float(bce) == pytest.approx(float(expected), rel=1e-6)


def test_full_softmax_is_cross_entropy_and_the_limit_of_sampled_softmax() -> None:
    table, users, positives = hand_example()
    full = losses.full_softmax_loss(users, positives, table, temperature=2.0)
    assert float(full) == pytest.approx(float(F.cross_entropy(users @ table.T / 2.0, positives)))
    # Every item as a negative with a uniform Q: the correction cancels, the hit is masked.
    uniform = samplers.Negatives(torch.arange(4), torch.full((4,), math.log(0.25)),
                                 torch.full((2,), math.log(0.25)))
    sampled = losses.sampled_softmax_loss(users, positives, uniform, table, temperature=2.0)
    assert float(sampled) == pytest.approx(float(full), rel=1e-6)


@pytest.mark.parametrize("loss,sampler", [("bce", "uniform"), ("sampled_softmax", "log_uniform"),
                                          ("sampled_softmax", "mixed"), ("softmax", "uniform")])
def test_objective_runs_every_loss(loss: str, sampler: str) -> None:
    from recall_core.training.config import NeuralConfig

    config = NeuralConfig(loss=loss, sampler=sampler, num_negatives=3, embedding_cache=8, dim=2)
    objective = losses.Objective.from_config(config, COUNTS + 1)
    table, users, positives = hand_example()
    table = torch.nn.Parameter(torch.cat([table, torch.ones(6, 2)]))
    value = objective(users, positives, table)
    value.backward()
    assert torch.isfinite(value) and table.grad is not None


# ---- encoder -------------------------------------------------------------------
def test_encoder_is_causal_and_ignores_right_padding() -> None:
    torch.manual_seed(0)
    encoder = SequenceEncoder(EncoderSpec(num_items=20, max_len=8, dim=8, layers=2, heads=2)).eval()
    a = torch.tensor([[3, 4, 5, 6, 0, 0]])
    b = torch.tensor([[3, 4, 5, 9, 7, 2]])
    with torch.no_grad():
        ha, hb = encoder(a), encoder(b)
    assert ha.shape == (1, 6, 8)
    torch.testing.assert_close(ha[:, :3], hb[:, :3])  # later items never leak backwards
    last = encoder.encode_last(a, torch.tensor([4]))
    torch.testing.assert_close(last, ha[:, 3])
    assert encoder.item_vectors().shape == (20, 8)


def test_encoder_prompt_hooks() -> None:
    torch.manual_seed(0)
    spec = EncoderSpec(num_items=20, max_len=8, dim=8, layers=1, prefix_tokens=1)
    encoder = SequenceEncoder(spec).eval()
    inputs = torch.tensor([[3, 4, 5], [6, 7, 0]])
    task = torch.randn(2, 8)
    with torch.no_grad():
        plain = encoder(inputs)
        scaled = encoder(inputs, input_transform=lambda e: e * task[:, None, :])
        prefixed = encoder(inputs, prefix=task[:, None, :])
    assert plain.shape == scaled.shape == prefixed.shape == (2, 3, 8)
    assert not torch.allclose(plain, scaled) and not torch.allclose(plain, prefixed)
    with pytest.raises(ValueError, match="exceeds max_len"):
        encoder(torch.ones(1, 9, dtype=torch.long))



@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("hook", ["none", "transform", "prefix"])
def test_encode_last_equals_the_full_pass_at_each_last_position(layers: int, hook: str) -> None:
    # encode_last skips the last block's other positions; it must not change a number.
    torch.manual_seed(1)
    spec = EncoderSpec(num_items=30, max_len=10, dim=8, layers=layers, heads=2, prefix_tokens=1)
    encoder = SequenceEncoder(spec).eval()
    inputs = torch.tensor([[3, 4, 5, 6, 7, 8, 9], [6, 7, 0, 0, 0, 0, 0], [1, 2, 3, 4, 0, 0, 0]])
    lengths = torch.tensor([7, 2, 4])
    task = torch.randn(3, 8)
    hooks = {"none": {}, "transform": {"input_transform": lambda e: e * task[:, None, :]},
             "prefix": {"prefix": task[:, None, :]}}[hook]
    with torch.no_grad():
        full = encoder(inputs, **hooks)[torch.arange(3), lengths - 1]
        last = encoder.encode_last(inputs, lengths, **hooks)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-6)


# ---- loop and validation --------------------------------------------------------
def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path) -> None:
    module = torch.nn.Linear(2, 1)
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.29, 0.5, 0.6])
    seen = []

    def validate() -> dict[str, float]:
        seen.append({k: v.clone() for k, v in module.state_dict().items()})
        return {"NDCG@10": next(scores)}

    def step(batch):  # noqa: ANN001, ANN202
        return (module(batch) ** 2).mean(), len(batch)

    settings = LoopSettings(epochs=7, patience=3, lr=0.1)
    result = fit(module, lambda epoch: [torch.randn(4, 2)], step, validate, settings,
                 checkpoint=tmp_path / "best.pt")
    assert result.stopped_early and result.epochs_run == 5 and result.best_epoch == 2
    assert result.best_metrics == {"NDCG@10": 0.3}
    torch.testing.assert_close(module.state_dict()["weight"], seen[1]["weight"])
    assert (tmp_path / "best.pt").is_file() and result.samples_per_second > 0


def test_rounds_before_patience_from_never_stop_training() -> None:
    module = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])

    def step(batch):  # noqa: ANN001, ANN202
        return (module(batch) ** 2).mean(), len(batch)

    settings = LoopSettings(epochs=8, patience=2, lr=0.1, patience_from=4)
    result = fit(module, lambda epoch: [torch.randn(4, 2)], step,
                 lambda: {"NDCG@10": next(scores)}, settings)
    # Epochs 2-4 are stale but inside the warm-up; 5 and 6 are the two rounds of patience.
    assert result.stopped_early and result.epochs_run == 6 and result.best_epoch == 1


def test_holdout_validation_removes_one_last_item_per_sampled_user() -> None:
    data = sequences_dataset([[0, 1, 2, 3], [4, 5, 6], [7, 8], [1, 2, 3, 4, 5]], num_items=10)
    train, queries = holdout_validation(data, users=2, seed=0)
    assert queries is not None and len(queries) == 2
    assert train.num_interactions == data.num_interactions - 2
    for user, target in zip(queries.queries.users, queries.targets):
        assert data.sequence(user)[-1] == target[0]
        np.testing.assert_array_equal(train.sequence(user), data.sequence(user)[:-1])
    again = holdout_validation(data, users=2, seed=0)[1]
    np.testing.assert_array_equal(again.queries.users, queries.queries.users)


# ---- faiss index ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_search_matches_brute_force_and_honours_exclusions(kind: str) -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(200, 8)).astype(np.float32)
    users = rng.normal(size=(5, 8)).astype(np.float32)
    exclude = [np.argsort(-(items @ u))[:3] for u in users]  # the three best are excluded
    settings = IndexSettings(kind=kind, ivf_lists=4, ivf_probe=4, hnsw_ef_search=200)
    found = ItemIndex.build(items, settings).search(users, 10, exclude)
    for row, user in enumerate(users):
        expected = np.argsort(-(items @ user))[3:13]
        assert not np.isin(found.items[row], exclude[row]).any()
        np.testing.assert_array_equal(found.items[row], expected)


def test_index_round_trip_and_boundary_checks(tmp_path) -> None:
    items = np.random.default_rng(1).normal(size=(30, 4))
    index = ItemIndex.build(items, IndexSettings(kind="hnsw"))
    index.save(tmp_path / "items.faiss")
    loaded = ItemIndex.load(tmp_path / "items.faiss", IndexSettings(kind="hnsw"))
    query = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(index.search(query, 5, [np.array([], np.int64)]).items,
                                  loaded.search(query, 5, [np.array([], np.int64)]).items)
    with pytest.raises(ValueError, match="dimension 3"):
        index.search(np.ones((1, 3)), 5, [np.array([])])
    with pytest.raises(ValueError, match="2-D"):
        as_vectors(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        as_vectors(np.full((2, 2), np.nan))


# ---- cluster-aware pieces (dnc_ebr) ---------------------------------------------------
def test_hard_easy_sampler_mixes_in_cluster_and_global_negatives() -> None:
    cluster = np.repeat(np.arange(4), 25)
    hard = samplers.InClusterSampler(cluster, seed=3)
    easy = samplers.UniformSampler(100, seed=4, shared=False)
    sampler = samplers.HardEasySampler(hard, easy, hard_ratio=0.5)
    positives = torch.tensor([0, 30, 60, 99])
    drawn = sampler.sample(positives, 2000)
    same = cluster[drawn.ids.numpy()] == cluster[positives.numpy()][:, None]
    assert same[:, :1000].all() and 0.2 < same[:, 1000:].mean() < 0.3  # chance: 1/4
    # Q(j | c): in-cluster j gets 0.5/25 + 0.5/100, outside 0.5/100.
    q = drawn.log_q.exp().numpy()
    np.testing.assert_allclose(q[same], 0.5 / 25 + 0.5 / 100, rtol=1e-5)
    np.testing.assert_allclose(q[~same], 0.5 / 100, rtol=1e-5)
    np.testing.assert_allclose(drawn.positive_log_q.exp().numpy(), 0.5 / 25 + 0.5 / 100, rtol=1e-5)
    with pytest.raises(ValueError, match="hard_ratio"):
        samplers.HardEasySampler(hard, easy, 1.5)


def test_cluster_softmax_is_cross_entropy_inside_the_positive_cluster() -> None:
    torch.manual_seed(0)
    users, table = torch.randn(5, 4), torch.randn(12, 4)
    cluster = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    positives = torch.tensor([1, 4, 8, 11, 0])
    loss = losses.cluster_softmax_loss(users, positives, table, cluster, temperature=0.5)
    expected = []
    for u, p in zip(users, positives):
        members = (cluster == cluster[p]).nonzero()[:, 0]
        logits = table[members] @ u / 0.5
        expected.append(-(logits[(members == p).nonzero()[0, 0]] - torch.logsumexp(logits, 0)))
    torch.testing.assert_close(loss, torch.stack(expected).mean())


def test_intent_head_is_causal() -> None:
    from recall_core.training.encoders import IntentHead

    torch.manual_seed(0)
    head = IntentHead(8, 3)
    a = torch.randn(2, 5, 8)
    b = a.clone()
    b[:, 3:] = torch.randn(2, 2, 8)  # change only the future
    la, lb = head(a), head(b)
    assert la.shape == (2, 5, 3)
    torch.testing.assert_close(la[:, :3], lb[:, :3])
