"""The ``sasrec`` source: the source contract, config checks, and that it learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recall_core.contract import TrainContext
from recall_core.errors import ConfigError
from recall_core.evaluation.metrics import ranking_metrics
from recall_core.evaluation.protocols import make_split
from recall_core.host import PluginHost, make_host
from recall_core.progress import SilentProgress
from recall_core.testing import SourceContractTests
from recall_core.training.inference import OnnxForward, is_compiled
from recall_plugins.sasrec import plugin as sasrec_plugin

FAST = {"dim": 16, "max_len": 20, "epochs": 2, "batch_size": 32, "layers": 1, "patience": 1}


class TestSasrecContract(SourceContractTests):
    kind = "sasrec"
    config = FAST
    plugins = (sasrec_plugin,)
    load_entry_points = False

    @pytest.fixture
    def contract_host(self) -> PluginHost:
        # The sasrec plugin alone: the test does not depend on the other built-ins.
        return make_host(load_entry_points=False, builtins=False, extra_plugins=self.plugins)


class TestSasrecBceHnswContract(TestSasrecContract):
    """The paper's baseline loss, and the approximate index's over-fetch path."""

    config = {**FAST, "loss": "bce", "sampler": "uniform", "index": "hnsw"}


@pytest.fixture
def host():  # noqa: ANN201
    return make_host(load_entry_points=False, builtins=False, extra_plugins=[sasrec_plugin])


def test_config_rejects_bad_values(host) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="multiple of heads"):
        host.validate_config("sasrec", {"dim": 10, "heads": 3})
    with pytest.raises(ConfigError, match="loss"):
        host.validate_config("sasrec", {"loss": "hinge"})
    assert host.validate_config("sasrec", {}).loss == "softmax"


def test_plugin_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import recall_plugins.sasrec.plugin; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"PYTHONPATH": ":".join(sys.path)})


@pytest.mark.parametrize("loss,sampler", [("sampled_softmax", "mixed"), ("softmax", "uniform")])
def test_sasrec_learns_the_synthetic_sequences(host, tmp_path: Path, loss: str, sampler: str) -> None:  # noqa: ANN001
    from recall_core.data.synthetic import SyntheticConfig, generate

    dataset = generate(SyntheticConfig(users=300, items=120, seed=11))
    split = make_split(dataset, "paper")
    config = host.validate_config("sasrec", {
        "loss": loss, "sampler": sampler, "num_negatives": 32, "dim": 32, "max_len": 30,
        "layers": 1, "epochs": 12, "patience": 3, "batch_size": 32, "lr": 3e-3, "seed": 1})
    model_dir, index_dir = tmp_path / "model", tmp_path / "index"
    model_dir.mkdir()
    index_dir.mkdir()
    context = TrainContext(model_dir, SilentProgress(), threads=2, validation=split.valid)
    metrics = host.train("sasrec", config, split.train, context)
    assert metrics["best_epoch"] >= 1 and metrics["samples_per_second"] > 0
    handle = host.index("sasrec", config, model_dir, index_dir)
    answer = host.retrieve("sasrec", handle, split.test.queries, 10)
    assert is_compiled(handle.forward)  # the served user-vector pass is the compiled graph
    if isinstance(handle.forward, OnnxForward):  # its graph is kept in the index for loads
        assert (index_dir / "SequenceEncoder.encode_last.onnx").read_bytes() == handle.forward.model
    hr = ranking_metrics(answer.items, split.test.targets, [10], dataset.num_items)["HR@10"]
    rankable = [dataset.num_items - len(e) for e in split.test.queries.exclude]
    random_hr = float(np.mean(np.minimum(10 / np.maximum(rankable, 1), 1.0)))
    assert hr > 2 * random_hr, f"HR@10 {hr:.3f} is not clearly above random ({random_hr:.3f})"


def test_the_serving_user_cache_changes_no_answer(host, tmp_path: Path) -> None:  # noqa: ANN001
    from recall_core.data.synthetic import SyntheticConfig, generate

    dataset = generate(SyntheticConfig(users=120, items=80, seed=5))
    split = make_split(dataset, "paper")
    answers = []
    for cache in (0, 1000):
        config = host.validate_config("sasrec", {**FAST, "user_cache": cache})
        model_dir, index_dir = tmp_path / f"model{cache}", tmp_path / f"index{cache}"
        model_dir.mkdir()
        index_dir.mkdir()
        host.train("sasrec", config, split.train, TrainContext(model_dir, SilentProgress(), 1))
        handle = host.index("sasrec", config, model_dir, index_dir)
        first = host.retrieve("sasrec", handle, split.test.queries, 20)
        second = host.retrieve("sasrec", handle, split.test.queries, 20)  # all hits when cached
        np.testing.assert_array_equal(first.items, second.items)
        assert handle.user_cache.hits == (len(split.test) if cache else 0)
        answers.append(second)
    np.testing.assert_array_equal(answers[0].items, answers[1].items)
    np.testing.assert_allclose(answers[0].scores, answers[1].scores, rtol=1e-5, atol=1e-6)
