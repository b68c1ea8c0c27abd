"""``lazy_source_hooks``: hooks that import their implementation on first use, for one kind."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from recall_core.contract import Candidates, QueryBatch, SourceConfig
from recall_core.lazy_source import lazy_source_hooks


def test_hooks_load_the_implementation_only_when_called_and_only_for_their_kind() -> None:
    calls: list[str] = []
    implementation = types.ModuleType("lazy_impl_for_test")
    implementation.train = lambda config, dataset, context: calls.append("train") or {"ok": 1}
    implementation.build = lambda config, artifact_dir, index_dir: calls.append("build") or "h"
    hooks = lazy_source_hooks("lazy", SourceConfig, "a test kind",
                              train="lazy_impl_for_test:train", build="lazy_impl_for_test:build",
                              load="lazy_impl_for_test:build")
    [kind] = hooks.recall_source_kinds()
    assert (kind.name, kind.description) == ("lazy", "a test kind")
    sys.modules["lazy_impl_for_test"] = implementation
    try:
        assert hooks.recall_train(kind="other", config=None, dataset=None, context=None) is None
        assert calls == []
        assert hooks.recall_train(kind="lazy", config=None, dataset=None, context=None) == {"ok": 1}
        assert hooks.recall_load(kind="lazy", config=None, artifact_dir=Path("."),
                                 index_dir=Path(".")) == "h"
    finally:
        del sys.modules["lazy_impl_for_test"]
    assert calls == ["train", "build"]

    class Handle:
        def retrieve(self, queries: QueryBatch, k: int) -> Candidates:
            return Candidates(np.zeros((len(queries), k), np.int64), np.zeros((len(queries), k)))

    queries = QueryBatch.from_histories([np.array([1, 2])])
    assert hooks.recall_retrieve(kind="other", handle=Handle(), queries=queries, k=3) is None
    assert hooks.recall_retrieve(kind="lazy", handle=Handle(), queries=queries, k=3).items.shape == (1, 3)
