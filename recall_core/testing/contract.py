"""The source contract test: subclass it once per source kind.

Example (a third-party package's ``tests/test_contract.py``)::

    from recall_core.testing import SourceContractTests

    class TestMySource(SourceContractTests):
        kind = "my-kind"
        config = {"dim": 8}

By default the host loads installed entry points, so the test also proves the
package is discoverable; set ``plugins = (my_module,)`` and
``load_entry_points = False`` to test a plugin object directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from recall_core.contract import Candidates, QueryBatch, SourceConfig, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.errors import ConfigError
from recall_core.host import PluginHost, make_host
from recall_core.progress import SilentProgress
from recall_core.testing.datasets import tiny_dataset


@dataclass(frozen=True)
class TrainedSource:
    """A source trained and indexed into temporary directories."""

    host: PluginHost
    kind: str
    config: SourceConfig
    model_dir: Path
    index_dir: Path
    handle: Any
    metrics: Any


class SourceContractTests:
    """Train → index → retrieve on a tiny dataset, and the promises every source keeps."""

    kind: ClassVar[str]
    config: ClassVar[dict[str, Any]] = {}
    plugins: ClassVar[Sequence[object]] = ()
    load_entry_points: ClassVar[bool] = True
    k: ClassVar[int] = 10
    num_queries: ClassVar[int] = 24

    # ---- fixtures -------------------------------------------------------
    @pytest.fixture
    def contract_host(self) -> PluginHost:
        return make_host(load_entry_points=self.load_entry_points, extra_plugins=self.plugins)

    @pytest.fixture
    def contract_dataset(self) -> Dataset:
        # Function-scoped: generating it takes milliseconds, and class-scoped fixtures
        # on instances are deprecated by pytest (third-party suites run this class).
        return tiny_dataset()

    @pytest.fixture
    def trained(self, contract_host: PluginHost, contract_dataset: Dataset,
                tmp_path: Path) -> TrainedSource:
        return self.train_and_index(contract_host, contract_dataset, tmp_path / "first")

    def train_and_index(self, host: PluginHost, dataset: Dataset, root: Path) -> TrainedSource:
        config = host.validate_config(self.kind, dict(self.config))
        model_dir, index_dir = root / "model", root / "index"
        model_dir.mkdir(parents=True)
        index_dir.mkdir(parents=True)
        context = TrainContext(model_dir, SilentProgress(), threads=1)
        metrics = host.train(self.kind, config, dataset, context)
        handle = host.index(self.kind, config, model_dir, index_dir)
        return TrainedSource(host, self.kind, config, model_dir, index_dir, handle, metrics)

    def queries(self, dataset: Dataset, extra_exclude: Sequence[np.ndarray] | None = None
                ) -> QueryBatch:
        users = np.arange(min(self.num_queries, dataset.num_users))
        sequences = dataset.sequences()
        return QueryBatch.from_histories([sequences[u] for u in users], users, extra_exclude)

    def retrieve(self, trained: TrainedSource, queries: QueryBatch, k: int,
                 handle: Any = None) -> Candidates:
        answer = trained.host.retrieve(trained.kind, handle or trained.handle, queries, k)
        assert isinstance(answer, Candidates), "recall_retrieve must return Candidates"
        return answer

    # ---- the contract ---------------------------------------------------
    def test_kind_is_declared_with_a_strict_schema(self, contract_host: PluginHost) -> None:
        info = contract_host.kind(self.kind)
        assert info.kind.description.strip(), "a kind needs a description"
        assert issubclass(info.kind.config_model, SourceConfig)
        contract_host.validate_config(self.kind, dict(self.config))
        with pytest.raises(ConfigError, match="unknown key"):
            contract_host.validate_config(self.kind, {**self.config, "no_such_key_xyz": 1})

    def test_training_metrics_are_json(self, trained: TrainedSource) -> None:
        json.dumps(trained.metrics if trained.metrics is not None else {})

    def test_rows_are_valid_sorted_and_unique(self, trained: TrainedSource,
                                              contract_dataset: Dataset) -> None:
        queries = self.queries(contract_dataset)
        answer = self.retrieve(trained, queries, self.k)
        assert answer.items.shape[0] == len(queries) and answer.items.shape[1] <= self.k
        assert answer.items.dtype.kind == "i" and answer.scores.dtype.kind == "f"
        assert ((answer.items >= -1) & (answer.items < contract_dataset.num_items)).all()
        for i in range(len(queries)):
            items, scores, _ = answer.row(i)
            assert len(np.unique(items)) == len(items), f"row {i} has duplicates"
            assert np.all(np.diff(scores) <= 1e-6), f"row {i} is not sorted by score"
            assert np.isfinite(scores).all(), f"row {i} has a non-finite score"
            padding = answer.items[i] < 0
            assert not padding[: len(items)].any(), "padding must come after the candidates"
        assert (answer.items >= 0).any(), "the source returned nothing at all"

    def test_history_and_exclusions_are_never_returned(self, trained: TrainedSource,
                                                        contract_dataset: Dataset) -> None:
        plain = self.retrieve(trained, self.queries(contract_dataset), self.k)
        # Exclude each query's own first three answers: they must disappear.
        extra = [plain.row(i)[0][:3] for i in range(len(plain))]
        queries = self.queries(contract_dataset, extra)
        answer = self.retrieve(trained, queries, self.k)
        for i in range(len(queries)):
            returned = answer.row(i)[0]
            assert not np.isin(returned, queries.exclude[i]).any(), f"row {i} returned an excluded item"

    @pytest.mark.parametrize("k", [1, 3])
    def test_k_is_respected(self, trained: TrainedSource, contract_dataset: Dataset, k: int) -> None:
        answer = self.retrieve(trained, self.queries(contract_dataset), k)
        assert answer.items.shape[1] <= k

    def test_k_larger_than_the_catalogue(self, trained: TrainedSource,
                                         contract_dataset: Dataset) -> None:
        queries = self.queries(contract_dataset)
        answer = self.retrieve(trained, queries, contract_dataset.num_items + 5)
        for i in range(len(queries)):
            items = answer.row(i)[0]
            assert len(items) <= contract_dataset.num_items - len(queries.exclude[i])

    def test_cold_start_query_does_not_fail(self, trained: TrainedSource) -> None:
        queries = QueryBatch.from_histories([np.empty(0, np.int64)], np.array([-1]))
        answer = self.retrieve(trained, queries, self.k)
        assert answer.items.shape[0] == 1

    def test_reloaded_artifacts_answer_identically(self, trained: TrainedSource,
                                                   contract_dataset: Dataset) -> None:
        queries = self.queries(contract_dataset)
        before = self.retrieve(trained, queries, self.k)
        handle = trained.host.load(trained.kind, trained.config, trained.model_dir, trained.index_dir)
        after = self.retrieve(trained, queries, self.k, handle=handle)
        np.testing.assert_array_equal(before.items, after.items)
        np.testing.assert_allclose(before.scores, after.scores, rtol=1e-5)

    def test_same_seed_same_result(self, trained: TrainedSource, contract_dataset: Dataset,
                                   tmp_path: Path) -> None:
        again = self.train_and_index(trained.host, contract_dataset, tmp_path / "second")
        queries = self.queries(contract_dataset)
        first, second = self.retrieve(trained, queries, self.k), self.retrieve(again, queries, self.k)
        np.testing.assert_array_equal(first.items, second.items)
        np.testing.assert_allclose(first.scores, second.scores, rtol=1e-5)
