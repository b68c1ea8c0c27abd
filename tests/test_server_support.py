"""Fixtures of the server tests: a tiny dataset, fault-injecting fake sources, projects, servers.

``FakeSources`` provides two kinds registered the way a third-party plugin
would be (``make_host(load_entry_points=False, extra_plugins=[...])``):

- ``fake``: a deterministic ranked list that depends on the query's last
  history item (so answers are personal), with groups;
- ``fakepop``: item popularity, the fallback of the test projects.

Faults are switched at run time through :data:`FAULTS` (keyed by a source's
``tag``): ``"fail"`` raises, a number sleeps that many seconds before
answering, and ``FAULTS["load_delay"]`` slows every load (health tests).
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recall_core import hookimpl
from recall_core.artifacts import ArtifactStore
from recall_core.contract import Candidates, QueryBatch, SourceConfig, SourceKind, TrainContext
from recall_core.data.dataset import Dataset
from recall_core.host import PluginHost, make_host
from recall_core.project import Project
from recall_core.sources import SourceManager

FAULTS: dict[str, Any] = {}
BATCH_SIZES: dict[str, list[int]] = {}
"""Per tag, the batch size of every retrieve call (to see coalescing happen)."""
NUM_USERS, NUM_ITEMS = 40, 60


class FakeConfig(SourceConfig):
    tag: str = ""
    offset: int = 0


class FakeSources:
    """The ``fake`` and ``fakepop`` kinds."""

    @hookimpl
    def recall_source_kinds(self) -> list[SourceKind]:
        return [SourceKind("fake", FakeConfig, "a deterministic personal list (tests)"),
                SourceKind("fakepop", FakeConfig, "item popularity (tests)")]

    @hookimpl
    def recall_train(self, kind: str, config: FakeConfig, dataset: Dataset,
                     context: TrainContext) -> dict[str, Any]:
        if kind == "fakepop":
            order = np.argsort(-dataset.item_popularity(), kind="stable")
        else:
            order = (np.arange(dataset.num_items) * 7 + config.offset) % dataset.num_items
        np.save(context.workdir / "order.npy", order.astype(np.int64))
        return {"items": int(dataset.num_items)}

    @hookimpl
    def recall_index(self, kind: str, config: FakeConfig, artifact_dir: Path,
                     index_dir: Path) -> Any:
        (index_dir / "index.json").write_text(json.dumps({"kind": kind}))
        return self.recall_load(kind=kind, config=config, artifact_dir=artifact_dir,
                                index_dir=index_dir)

    @hookimpl
    def recall_load(self, kind: str, config: FakeConfig, artifact_dir: Path,
                    index_dir: Path) -> Any:
        time.sleep(FAULTS.get("load_delay", 0.0))
        order = np.load(artifact_dir / "order.npy")
        return {"kind": kind, "tag": config.tag, "order": order, "num_items": len(order)}

    @hookimpl
    def recall_retrieve(self, kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates:
        BATCH_SIZES.setdefault(handle["tag"], []).append(len(queries))
        fault = FAULTS.get(handle["tag"])
        if fault == "fail":
            raise RuntimeError(f"injected failure of {handle['tag']}")
        if isinstance(fault, (int, float)):
            time.sleep(fault)
        order: np.ndarray = handle["order"]
        items = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf)
        for i, (history, excluded) in enumerate(zip(queries.histories, queries.exclude)):
            shift = int(history[-1]) if kind == "fake" and len(history) else 0
            row = np.roll(order, -shift)
            row = row[~np.isin(row, excluded)][: k if kind == "fakepop" else min(k, 20)]
            items[i, : len(row)] = row
            scores[i, : len(row)] = np.linspace(1.0, 0.1, len(row)) if len(row) else []
        groups = np.where(items >= 0, items % 3, -1) if kind == "fake" else None
        return Candidates(items, scores, groups)


def tiny_dataset(seed: int = 0) -> Dataset:
    """40 users, 60 items (i0..i59), 12 interactions each, two categories."""
    rng = np.random.default_rng(seed)
    users, items, stamps = [], [], []
    for u in range(NUM_USERS):
        chosen = rng.choice(NUM_ITEMS, size=12, replace=False, p=_skew(NUM_ITEMS))
        users += [f"u{u}"] * len(chosen)
        items += [f"i{i}" for i in chosen]
        stamps += list(range(1000 * u, 1000 * u + len(chosen)))
    categories = {f"i{i}": "even" if i % 2 == 0 else "odd" for i in range(NUM_ITEMS)}
    return Dataset.from_raw(np.array(users), np.array(items), np.array(stamps),
                            item_categories=categories, name="tiny")


def _skew(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


def real_popular_available() -> bool:
    return importlib.util.find_spec("recall_plugins.popular") is not None


def make_test_host() -> PluginHost:
    """Merge policies, the fakes, and the real ``popular`` plugin when it exists."""
    from recall_plugins import merge_policies

    plugins: list[object] = [merge_policies, FakeSources()]
    if real_popular_available():
        from recall_plugins import popular

        plugins.insert(0, popular)
    return make_host(load_entry_points=False, builtins=False, extra_plugins=plugins)


def build_project(root: Path, host: PluginHost, sources: dict[str, tuple[str, dict]],
                  untrained: tuple[str, ...] = (), fallback: str = "popular",
                  weights: dict[str, float] | None = None) -> Path:
    """A project with the tiny dataset, every source trained and indexed except ``untrained``.

    The fallback weighs 0 unless ``weights`` says otherwise: it only fills shortfalls.
    """
    project = Project.init(root, name=root.name)
    for name, (kind, config) in sources.items():
        project.add_source(name, kind, config)
    project.settings.merge.fallback = fallback
    project.settings.merge.weights = weights if weights is not None else {fallback: 0.0}
    project.save()
    dataset = tiny_dataset()
    dataset.save(project.dataset_path)
    for name, (kind, config) in sources.items():
        if name not in untrained:
            publish(root, host, name, indexed=True)
    return root


def publish(root: Path, host: PluginHost, name: str, indexed: bool = True) -> str:
    """Train (and index) ``name`` again: a new current artifact version."""
    project = Project.load(root)
    entry = project.source(name)
    manager = SourceManager(host, ArtifactStore(project.artifacts_path), threads=1)
    spec = manager.spec(name, entry.kind, entry.config)
    version = manager.train(spec, Dataset.load(project.dataset_path))
    if indexed:
        manager.index(spec)
    return version.version


@pytest.fixture
def faults() -> Iterator[dict[str, Any]]:
    """The fault switches, cleared after the test."""
    FAULTS.clear()
    yield FAULTS
    FAULTS.clear()
