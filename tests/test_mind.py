"""The ``mind`` source: contract (adaptive and fixed K), adaptive K'_u, readout, and learning."""

from __future__ import annotations

import math
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
from recall_plugins.mind import plugin as mind_plugin

FAST = {"dim": 16, "max_len": 20, "epochs": 2, "batch_size": 32, "patience": 1,
        "num_negatives": 64}


class TestMindAdaptiveContract(SourceContractTests):
    kind = "mind"
    config = FAST
    plugins = (mind_plugin,)
    load_entry_points = False

    @pytest.fixture
    def contract_host(self) -> PluginHost:
        return make_host(load_entry_points=False, builtins=False, extra_plugins=self.plugins)


class TestMindFixedKContract(TestMindAdaptiveContract):
    config = {**FAST, "adaptive": False, "interests": 3, "pow_p": math.inf,
              "train_positions": 4}


@pytest.fixture
def host() -> PluginHost:
    return make_host(load_entry_points=False, builtins=False, extra_plugins=[mind_plugin])


def test_adaptive_interest_count_follows_the_formula() -> None:
    import torch

    from recall_core.training.interests import (
        InterestSpec, MultiInterestModel, adaptive_interest_count)

    lengths = torch.tensor([0, 1, 2, 3, 4, 7, 8, 15, 16, 100])
    expected = [max(1, min(4, math.floor(math.log2(max(n, 1))))) for n in lengths.tolist()]
    assert adaptive_interest_count(lengths, 4).tolist() == expected
    model = MultiInterestModel(InterestSpec(30, "mind", max_len=20, dim=8, interests=4,
                                            adaptive=True)).eval()
    inputs = torch.zeros(4, 20, dtype=torch.long)
    sizes = torch.tensor([1, 3, 5, 20])
    for row, size in enumerate(sizes.tolist()):
        inputs[row, :size] = torch.arange(1, size + 1)
    with torch.no_grad():
        interests, valid = model(inputs, sizes)
    assert valid.sum(1).tolist() == [1, 1, 2, 4]
    assert torch.all(interests[~valid] == 0)


def test_large_power_equals_hard_readout() -> None:
    import torch

    from recall_core.training.interests import readout

    generator = torch.Generator().manual_seed(0)
    interests = torch.randn(50, 4, 8, generator=generator)
    targets = torch.randn(50, 8, generator=generator)
    valid = torch.ones(50, 4, dtype=torch.bool)
    valid[:10, 2:] = False  # masked interests are never read out
    hard = readout(interests, valid, targets, math.inf)
    chosen = torch.einsum("mkd,md->mk", interests, targets).masked_fill(~valid, -1e9).argmax(1)
    torch.testing.assert_close(hard, interests[torch.arange(50), chosen])
    torch.testing.assert_close(readout(interests, valid, targets, 1e4), hard)
    mean = readout(interests, torch.ones_like(valid), targets, 0.0)
    torch.testing.assert_close(mean, interests.mean(1))


def test_eval_routing_is_fixed_and_training_resamples() -> None:
    import torch

    from recall_core.training.interests import InterestSpec, MultiInterestModel

    model = MultiInterestModel(InterestSpec(30, "mind", max_len=10, dim=8, interests=3))
    inputs, lengths = torch.randint(1, 31, (2, 10)), torch.full((2,), 10)
    with torch.no_grad():
        first, second = model(inputs, lengths)[0], model(inputs, lengths)[0]
        assert not torch.allclose(first, second), "training draws fresh routing logits"
        model.eval()
        torch.testing.assert_close(model(inputs, lengths)[0], model(inputs, lengths)[0])


def train_synthetic(host: PluginHost, tmp_path: Path, values: dict):  # noqa: ANN201
    from recall_core.data.synthetic import SyntheticConfig, generate

    dataset = generate(SyntheticConfig(users=300, items=120, seed=11))
    split = make_split(dataset, "paper")
    config = host.validate_config("mind", values)
    model_dir, index_dir = tmp_path / "model", tmp_path / "index"
    model_dir.mkdir()
    index_dir.mkdir()
    context = TrainContext(model_dir, SilentProgress(), threads=2, validation=split.valid)
    metrics = host.train("mind", config, split.train, context)
    return dataset, split, metrics, host.index("mind", config, model_dir, index_dir)


def test_mind_learns_and_masked_interests_give_no_candidates(host, tmp_path: Path) -> None:  # noqa: ANN001
    from recall_core.ranking import top_k_excluding

    values = {"dim": 32, "max_len": 30, "epochs": 6, "patience": 3, "batch_size": 32,
              "lr": 5e-3, "num_negatives": 64, "seed": 1}
    dataset, split, metrics, handle = train_synthetic(host, tmp_path, values)
    assert metrics["best_epoch"] >= 1
    assert is_compiled(handle.forward)  # the routing's serving pass compiled, checked below
    answer = host.retrieve("mind", handle, split.test.queries, 10)
    hr = ranking_metrics(answer.items, split.test.targets, [10], dataset.num_items)["HR@10"]
    counts = np.bincount(split.train.items, minlength=dataset.num_items).astype(np.float32)
    popular = top_k_excluding(np.repeat(counts[None], len(split.test), 0),
                              split.test.queries.exclude, 10)
    baseline = ranking_metrics(popular.items, split.test.targets, [10], dataset.num_items)["HR@10"]
    assert hr > 1.5 * baseline + 0.02, f"HR@10 {hr:.3f} vs popularity {baseline:.3f}"
    # A 2-item history uses K' = 1 interest, a 5-item one K' = 2: no other group appears.
    sequences = dataset.sequences()
    queries = QueryBatch.from_histories([sequences[0][:2], sequences[1][:5], sequences[2][:30]])
    found = host.retrieve("mind", handle, queries, 60)
    _, valid = handle.interests(list(queries.histories))
    long_count = max(1, min(4, int(math.log2(min(len(queries.histories[2]), 30)))))
    assert valid.sum(1).tolist() == [1, 2, long_count]
    assert set(found.row(0)[2].tolist()) == {0}
    assert set(found.row(1)[2].tolist()) <= {0, 1}
    assert set(found.row(2)[2].tolist()) <= set(range(long_count))


def test_config_keys(host) -> None:  # noqa: ANN001
    from recall_core.errors import ConfigError

    config = host.validate_config("mind", {})
    assert config.adaptive and config.interests == 4 and config.pow_p == 2.0
    assert host.validate_config("mind", {"pow_p": "inf"}).pow_p == math.inf
    with pytest.raises(ConfigError):
        host.validate_config("mind", {"pow_p": -1})
