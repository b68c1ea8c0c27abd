"""The engine: fan-out, degradation on failure or deadline, fallback fill, provenance."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_core import hookimpl
from recall_core.contract import Candidates, QueryBatch, SourceConfig, SourceKind
from recall_core.engine import MergeSettings, RecallEngine
from recall_core.errors import AllSourcesFailedError, ConfigError, UnknownSourceError
from recall_core.host import make_host
from recall_core.sources import LoadedSource, SourceSpec
from recall_plugins import merge_policies


class FixedConfig(SourceConfig):
    items: list[int] = []
    fail: bool = False
    delay: float = 0.0


class FixedSource:
    """A source answering a fixed list (minus exclusions), or failing / sleeping on demand."""

    @hookimpl
    def recall_source_kinds(self) -> list[SourceKind]:
        return [SourceKind("fixed", FixedConfig, "a fixed list")]

    @hookimpl
    def recall_retrieve(self, kind: str, handle: Any, queries: QueryBatch, k: int) -> Candidates:
        config: FixedConfig = handle
        if config.fail:
            raise RuntimeError("index corrupted")
        time.sleep(config.delay)
        rows = []
        for excluded in queries.exclude:
            rows.append([i for i in config.items if i not in set(excluded.tolist())][:k])
        width = max(1, max(len(r) for r in rows))
        items = np.full((len(rows), width), -1, np.int64)
        scores = np.full((len(rows), width), -np.inf, np.float32)
        for r, row in enumerate(rows):
            items[r, : len(row)] = row
            scores[r, : len(row)] = np.arange(len(row), 0, -1)
        return Candidates(items, scores)


def engine(sources: dict[str, dict], **settings: Any) -> RecallEngine:
    host = make_host(load_entry_points=False, builtins=False,
                     extra_plugins=[merge_policies, FixedSource()])
    loaded = {}
    for name, values in sources.items():
        config = host.validate_config("fixed", values)
        loaded[name] = LoadedSource(SourceSpec(name, "fixed", config), config, "v0001", None)
    return RecallEngine(host, loaded, MergeSettings(**settings))


def one_query(history: list[int] = (), exclude: list[int] = ()) -> QueryBatch:
    return QueryBatch.from_histories([np.array(history, np.int64)], np.array([0]),
                                     [np.array(exclude, np.int64)])


def test_merge_keeps_provenance_and_fills_from_the_fallback() -> None:
    e = engine({"a": {"items": [1, 2, 3]}, "b": {"items": [3, 4]},
                "popular": {"items": [9, 8, 7, 1]}},
               policy="rrf", weights={"popular": 0.0}, fallback="popular")
    result = e.retrieve(one_query(history=[2], exclude=[4]), k=4)
    merged = result.merged.lists[0]
    assert 2 not in merged.items and 4 not in merged.items
    assert merged.items[0] in (1, 3)
    assert len(merged.items) == 4 and merged.fallback_count >= 1
    provenance = dict(zip(merged.items.tolist(), merged.provenance))
    assert {p.source for p in provenance[3]} == {"a", "b"}
    assert [p.rank for p in provenance[3] if p.source == "a"] == [2]  # 1, (2 excluded), 3
    filled = [item for item in merged.items.tolist() if item in (9, 8, 7)]
    assert filled and all(p.source == "popular" for item in filled for p in provenance[item])


def test_a_failing_source_degrades_the_answer() -> None:
    e = engine({"good": {"items": [1, 2]}, "bad": {"fail": True}}, fallback=None)
    result = e.retrieve(one_query(), k=2)
    assert result.failed == {"bad": "RuntimeError: index corrupted"}
    assert result.merged.lists[0].items.tolist() == [1, 2]


def test_a_late_source_counts_as_failed() -> None:
    e = engine({"fast": {"items": [1]}, "slow": {"items": [2], "delay": 1.0}}, fallback=None)
    result = e.retrieve(one_query(), k=2, timeout=0.2)
    assert result.failed == {"slow": "deadline exceeded"}



def test_measured_sources_share_lanes_and_still_honour_the_budget() -> None:
    e = engine({"a": {"items": [1]}, "b": {"items": [2]}, "c": {"items": [3], "delay": 0.1}},
               fallback=None)
    e.lanes = 1  # the shared ones in one task
    assert e._isolated("a", 1, None), "a source never measured runs on its own"
    e.retrieve(one_query(), k=3)  # measures every source
    assert not any(e._isolated(name, 1, None) for name in "abc")  # no budget: all share
    e.isolate_fraction = 0.25  # c (~0.1 s) reaches a quarter of a 0.3 s budget; a, b (~0.1 ms) don't
    assert [e._isolated(name, 1, 0.3) for name in "abc"] == [False, False, True]
    slow = e.host.validate_config("fixed", {"items": [1], "delay": 1.0})
    e.sources["a"] = LoadedSource(SourceSpec("a", "fixed", slow), slow, "v0001", None)
    started = time.perf_counter()
    result = e.retrieve(one_query(), k=3, timeout=0.3)
    assert time.perf_counter() - started < 0.6, "a shared source turned slow held the caller"
    # b queued behind a in the shared lane, so it missed the budget too; c had its own task.
    assert result.failed == {"a": "deadline exceeded", "b": "deadline exceeded"}
    assert result.merged.lists[0].items.tolist() == [3]
    assert e._isolated("a", 1, 0.3)  # its timeout raised the estimate: now on its own


def test_shared_sources_are_spread_over_lanes_by_predicted_cost() -> None:
    e = engine({name: {"items": [1]} for name in "abcde"}, fallback=None)
    e._cost_per_query.update(a=4e-4, b=1e-4, c=3e-4, d=2e-4, e=2e-4)
    e.min_lane_seconds = 1e-4
    e.lanes = 2
    assert e._lanes(list("abcde"), 1) == [["a", "e"], ["b", "c", "d"]]  # 6e-4 each
    e.lanes = 8
    assert len(e._lanes(list("abcde"), 1)) == 5  # never an empty lane
    e.lanes = 1
    assert e._lanes(list("abcde"), 1) == [list("abcde")]


def test_a_call_with_little_predicted_work_runs_in_one_lane() -> None:
    e = engine({name: {"items": [1]} for name in "abcde"}, fallback=None)
    e._cost_per_query.update(a=4e-4, b=1e-4, c=3e-4, d=2e-4, e=2e-4)  # 1.2 ms per query
    e.lanes, e.min_lane_seconds = 8, 2e-3
    assert e._lanes(list("abcde"), 1) == [list("abcde")]  # below one lane's minimum
    assert len(e._lanes(list("abcde"), 4)) == 2  # 4.8 ms: two lanes of at least 2 ms
    assert len(e._lanes(list("abcde"), 100)) == 5  # every source a lane of its own


def test_every_source_failing_is_an_error() -> None:
    e = engine({"bad": {"fail": True}}, fallback=None)
    with pytest.raises(AllSourcesFailedError, match="index corrupted"):
        e.retrieve(one_query(), k=2)


def test_request_overrides_and_validation() -> None:
    e = engine({"a": {"items": [1, 2, 3]}, "b": {"items": [7, 8, 9]}}, fallback=None, policy="quota")
    only_b = e.retrieve(one_query(), k=3, sources=["b"])
    assert only_b.merged.lists[0].items.tolist() == [7, 8, 9]
    leaning_a = e.retrieve(one_query(), k=4, weights={"a": 3.0, "b": 1.0})
    assert sorted(leaning_a.merged.lists[0].items.tolist()) == [1, 2, 3, 7]
    with pytest.raises(UnknownSourceError, match="ghost"):
        e.retrieve(one_query(), k=3, sources=["ghost"])
    with pytest.raises(ConfigError, match="k must be"):
        e.retrieve(one_query(), k=0)
    with pytest.raises(ConfigError, match="unknown merge policy"):
        e.retrieve(one_query(), k=3, policy="magic")


@pytest.mark.parametrize("policy", ["quota", "rrf"])
@pytest.mark.parametrize("fallback_weight", [0.0, 1.0])  # popular merged, or the fill only
def test_a_large_batch_merged_in_row_blocks_equals_one_merge(policy: str,
                                                             fallback_weight: float) -> None:
    rng = np.random.default_rng(3)
    e = engine({"a": {"items": rng.permutation(60)[:25].tolist()},
                "b": {"items": rng.permutation(60)[:30].tolist()},
                "popular": {"items": list(range(60))}},
               policy=policy, weights={"popular": fallback_weight}, fallback="popular")
    queries = QueryBatch.from_histories([rng.integers(0, 60, n) for n in range(70)])
    e.lanes = 3  # 70 rows: three blocks of at least 16
    blocks = e.retrieve(queries, k=20).merged
    e.lanes = 1
    whole = e.retrieve(queries, k=20).merged
    assert len(blocks) == len(whole) == 70
    for one, other in zip(blocks.lists, whole.lists, strict=True):
        assert one.items.tolist() == other.items.tolist()
        assert one.scores.tolist() == other.scores.tolist()
        assert list(one.provenance) == list(other.provenance)
        assert one.fallback_count == other.fallback_count
    for field in ("bounds", "items", "scores", "hit", "rank", "group"):
        np.testing.assert_array_equal(getattr(blocks.columns, field),
                                      getattr(whole.columns, field))
    np.testing.assert_array_equal(blocks.columns.score, whole.columns.score)  # NaN-aware
    # The server encodes each block where it lies: the same bytes as the one-block merge's.
    from types import SimpleNamespace

    from recall_core.server.convert import _encoded_columns
    from recall_core.server.wire import EncodedIds

    assert (len(blocks.blocks), len(whole.blocks)) == (3, 1)
    catalog = SimpleNamespace(encoded_item_ids=EncodedIds([f"item{i}" for i in range(60)]))
    assert _encoded_columns(blocks, catalog) == _encoded_columns(whole, catalog)


@settings(max_examples=100, deadline=None)
@given(history=st.lists(st.integers(0, 60), max_size=40),
       extra=st.lists(st.integers(-3, 70), max_size=10))
def test_a_querys_exclusions_are_the_sorted_union_of_history_and_extras(
        history: list[int], extra: list[int]) -> None:
    batch = QueryBatch.from_histories([np.array(history, np.int64)], None,
                                      [np.array(extra, np.int64)])
    expected = np.union1d(np.array(history, np.int64), np.array(extra, np.int64))
    assert batch.exclude[0].dtype == np.int64
    np.testing.assert_array_equal(batch.exclude[0], expected)


def test_an_answer_for_some_rows_is_placed_among_padding_and_a_full_one_kept() -> None:
    found = Candidates(np.array([[4, 2], [7, -1]]), np.array([[0.9, 0.5], [0.3, -np.inf]],
                                                             np.float32))
    assert Candidates.placed(found, np.array([0, 1]), 2, 2) is found
    placed = Candidates.placed(found, np.array([0, 2]), 3, 3, grouped=True)
    assert placed.items.tolist() == [[4, 2, -1], [-1, -1, -1], [7, -1, -1]]
    assert placed.scores[0, :2].tolist() == [np.float32(0.9), np.float32(0.5)]
    assert np.isneginf(placed.scores[1]).all() and np.isneginf(placed.scores[:, 2]).all()
    assert placed.groups is not None and (placed.groups == -1).all()
    assert Candidates.placed(found, np.array([1, 0]), 2, 2).items.tolist() == [[7, -1], [4, 2]]
