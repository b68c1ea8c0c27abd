"""The merge: built-in policies (hand-computed), exclusions, fallback fill, provenance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_core import kernels
from recall_core.contract import Candidates, MergePolicy, SourceList
from recall_core.errors import ConfigError, PluginError
from recall_core.merge import MergedBatch, MergedList, Provenance, merge_batch, select_policy
from recall_plugins.merge_policies import (
    POLICIES,
    RRF_C,
    fuse_quota,
    fuse_rrf,
    fuse_weighted,
    recall_merge_policies,
)

BY_NAME = {policy.name: policy for policy in POLICIES}


def sl(source: str, items: Sequence[int], scores: Sequence[float] | None = None) -> SourceList:
    """A source list; scores default to descending len..1."""
    if scores is None:
        scores = list(range(len(items), 0, -1))
    return SourceList(source, np.array(items, np.int64), np.array(scores, np.float64))


def cands(rows: Sequence[Sequence[int]], scores: Sequence[Sequence[float]] | None = None,
          groups: Sequence[Sequence[int]] | None = None) -> Candidates:
    """Candidates for a batch, padded with -1 / -inf like a real source."""
    width = max(1, max(len(r) for r in rows))
    items = np.full((len(rows), width), -1, np.int64)
    values = np.full((len(rows), width), -np.inf)
    group_matrix = np.full((len(rows), width), -1, np.int64)
    for i, row in enumerate(rows):
        items[i, : len(row)] = row
        values[i, : len(row)] = scores[i] if scores else np.arange(len(row), 0, -1)
        if groups:
            group_matrix[i, : len(row)] = groups[i]
    return Candidates(items, values, group_matrix if groups else None)


def none_excluded(batch: int = 1) -> list[np.ndarray]:
    return [np.empty(0, np.int64)] * batch


def test_the_hook_returns_the_three_builtin_policies() -> None:
    assert [p.name for p in recall_merge_policies()] == ["quota", "weighted", "rrf"]
    assert all(isinstance(p, MergePolicy) and p.description for p in recall_merge_policies())


# ---- quota -------------------------------------------------------------------------------
def apportion(total: int, weights: list[float]) -> list[int]:
    alive = np.ones(len(weights), dtype=bool)
    return kernels.apportion(total, np.array(weights, dtype=np.float64), alive).tolist()


def test_apportion_is_largest_remainder_with_ties_to_the_earlier_source() -> None:
    assert apportion(5, [1, 1]) == [3, 2]
    assert apportion(10, [3, 1, 1]) == [6, 2, 2]
    assert apportion(7, [1, 1, 1]) == [3, 2, 2]
    assert apportion(4, [0, 0]) == [0, 0]
    assert apportion(5, [0.5, 0.3, 0.2]) == [3, 1, 1]


def test_quota_interleaves_in_proportion() -> None:
    items, scores = fuse_quota([sl("a", [10, 11, 12, 13]), sl("b", [20, 21, 22, 23])], 4, {})
    assert items.tolist() == [10, 20, 11, 21]
    assert scores.tolist() == [1.0, 0.75, 0.5, 0.25]  # (k - position) / k
    # quotas 3:1; slots at (j+½)/quota -> a 1/6, a 1/2, b 1/2 (tie: a first), a 5/6
    items, _ = fuse_quota([sl("a", [1, 2, 3, 4]), sl("b", [9, 8])], 4, {"a": 3.0, "b": 1.0})
    assert items.tolist() == [1, 2, 9, 3]


def test_quota_redistributes_what_a_short_source_leaves() -> None:
    # k=5: a gets 3 slots, b 2; b runs out after one item, its spare slot goes to a.
    items, _ = fuse_quota([sl("a", [1, 2, 3, 4, 5, 6]), sl("b", [7])], 5, {})
    assert items.tolist() == [1, 7, 2, 3, 4]
    # Everything exhausted before k: all there is, no more.
    items, _ = fuse_quota([sl("a", [1, 2]), sl("b", [2, 3])], 10, {})
    assert items.tolist() == [1, 2, 3]


def test_quota_skips_items_another_source_already_took() -> None:
    items, _ = fuse_quota([sl("a", [1, 2, 3]), sl("b", [1, 4, 5])], 4, {})
    assert items.tolist() == [1, 4, 2, 5]


# ---- weighted ------------------------------------------------------------------------------
def test_weighted_sums_min_max_normalised_scores() -> None:
    a = sl("a", [1, 2, 3], [10.0, 6.0, 2.0])  # -> 1, 0.5, 0
    b = sl("b", [3, 4], [0.9, 0.1])  # -> 1, 0
    items, scores = fuse_weighted([a, b], 10, {"b": 2.0})
    assert items.tolist() == [3, 1, 2, 4]
    np.testing.assert_allclose(scores, [2.0, 1.0, 0.5, 0.0])
    items, _ = fuse_weighted([a, b], 2, {"b": 2.0})
    assert items.tolist() == [3, 1]


def test_weighted_flat_and_single_lists_normalise_to_one_and_ties_are_stable() -> None:
    items, scores = fuse_weighted([sl("a", [6, 5], [3.0, 3.0])], 5, {})
    assert items.tolist() == [6, 5] and scores.tolist() == [1.0, 1.0]  # tie: better rank first
    items, scores = fuse_weighted([sl("a", [8], [0.2]), sl("b", [7], [99.0])], 5, {})
    assert items.tolist() == [8, 7] and scores.tolist() == [1.0, 1.0]  # tie: earlier source


def test_weighted_survives_non_finite_scores() -> None:
    items, scores = fuse_weighted([sl("a", [1, 2, 3], [np.inf, 1.0, -np.inf])], 3, {})
    assert items.tolist() == [1, 2, 3] and np.isfinite(scores).all()


# ---- rrf --------------------------------------------------------------------------------
def test_rrf_follows_the_formula() -> None:
    a, b = sl("a", [1, 2]), sl("b", [2, 3])
    items, scores = fuse_rrf([a, b], 10, {})
    assert items.tolist() == [2, 1, 3]
    np.testing.assert_allclose(scores, [1 / (RRF_C + 2) + 1 / (RRF_C + 1),
                                        1 / (RRF_C + 1), 1 / (RRF_C + 2)])
    items, scores = fuse_rrf([a, b], 10, {"b": 2.0})
    assert items.tolist() == [2, 3, 1]
    np.testing.assert_allclose(scores[1], 2 / (RRF_C + 2))


# ---- weights, shared by every policy --------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_weight_edge_cases(policy: MergePolicy) -> None:
    lists = [sl("a", [1, 2]), sl("b", [3, 4])]
    items, _ = policy.fuse(lists, 4, {"b": 0.0})
    assert items.tolist() == [1, 2]  # weight 0: ignored
    assert policy.fuse(lists, 4, {"a": 0, "b": 0})[0].size == 0
    unnamed = policy.fuse(lists, 4, {})[0].tolist()
    assert policy.fuse(lists, 4, {"ghost": 5.0, "a": 1.0})[0].tolist() == unnamed  # missing: 1.0
    with pytest.raises(ValueError, match="weight of source 'a'"):
        policy.fuse(lists, 4, {"a": -1.0})


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_policies_ignore_padding_and_repeats(policy: MergePolicy) -> None:
    items, scores = policy.fuse([sl("a", [5, 5, -1, 6], [3, 2, 1, 0]), sl("b", [])], 10, {})
    assert sorted(items.tolist()) == [5, 6] and len(scores) == 2


# ---- merge_batch ---------------------------------------------------------------------------
def test_merge_enforces_exclusions_dedupes_and_keeps_true_provenance() -> None:
    per_source = {"a": cands([[1, 2, 3]], [[0.9, 0.8, 0.7]], [[4, 5, 6]]),
                  "b": cands([[3, 7, 7, 1]], [[30.0, 20.0, 19.0, 10.0]])}
    merged = merge_batch(per_source, BY_NAME["rrf"], 10, {}, [np.array([2])]).lists[0]
    assert sorted(merged.items.tolist()) == [1, 3, 7]  # 2 excluded, 7 once
    provenance = dict(zip(merged.items.tolist(), merged.provenance))
    assert provenance[1] == (Provenance("a", 1, 0.9, 4), Provenance("b", 4, 10.0, -1))
    # ranks are positions in the source's own answer, excluded item included
    assert provenance[3] == (Provenance("a", 3, pytest.approx(0.7), 6), Provenance("b", 1, 30.0))
    assert provenance[7] == (Provenance("b", 2, 20.0),)
    assert merged.fallback_count == 0


def test_fallback_fills_the_shortfall_and_is_credited() -> None:
    per_source = {"a": cands([[1, 2]])}
    popular = cands([[2, 9, 4, 8, 7]], [[50.0, 40.0, 30.0, 20.0, 10.0]])
    merged = merge_batch(per_source, BY_NAME["quota"], 5, {}, [np.array([4])],
                         fallback=("popular", popular)).lists[0]
    assert merged.items.tolist() == [1, 2, 9, 8, 7]  # 2 already there, 4 excluded
    assert merged.fallback_count == 3
    assert merged.scores.tolist() == [1.0, 0.8, 0.0, 0.0, 0.0]
    assert merged.provenance[1] == (Provenance("a", 2, 1.0),)  # popular not merged: not credited
    assert merged.provenance[2] == (Provenance("popular", 2, 40.0),)
    assert merged.provenance[4] == (Provenance("popular", 5, 10.0),)


def test_fallback_that_is_also_a_merged_source() -> None:
    popular = cands([[5, 6, 7]])
    merged = merge_batch({"a": cands([[1]]), "popular": popular}, BY_NAME["rrf"], 3, {},
                         none_excluded(), fallback=("popular", popular)).lists[0]
    assert merged.fallback_count == 0 and len(merged) == 3
    assert all(len(p) == 1 for p in merged.provenance)  # credited once, not twice
    only_fills = merge_batch({"a": cands([[1]]), "popular": popular}, BY_NAME["rrf"], 3,
                             {"popular": 0.0}, none_excluded(), fallback=("popular", popular))
    merged = only_fills.lists[0]
    assert merged.items.tolist() == [1, 5, 6] and merged.fallback_count == 2
    assert merged.provenance[1] == (Provenance("popular", 1, 3.0),)


def test_empty_rows_and_no_sources() -> None:
    per_source = {"a": cands([[1, 2], []]), "b": cands([[], []])}
    batch = merge_batch(per_source, BY_NAME["weighted"], 3, {}, none_excluded(2),
                        fallback=("popular", cands([[3], [4, 5]])))
    assert [m.items.tolist() for m in batch.lists] == [[1, 2, 3], [4, 5]]
    assert [m.fallback_count for m in batch.lists] == [1, 2]
    assert batch.items_matrix(3).tolist() == [[1, 2, 3], [4, 5, -1]]
    assert batch.items_matrix(2).tolist() == [[1, 2], [4, 5]]
    alone = merge_batch({}, BY_NAME["quota"], 2, {}, none_excluded(), ("popular", cands([[8, 9]])))
    assert alone.lists[0].items.tolist() == [8, 9]
    nothing = merge_batch({}, BY_NAME["quota"], 2, {}, none_excluded(3))
    assert [len(m) for m in nothing.lists] == [0, 0, 0]


def test_merge_validates_weights_k_and_policy_names() -> None:
    per_source = {"a": cands([[1]])}
    with pytest.raises(ConfigError, match="weight of source 'a'"):
        merge_batch(per_source, BY_NAME["quota"], 3, {"a": -1.0}, none_excluded())
    with pytest.raises(ConfigError, match="k must be"):
        merge_batch(per_source, BY_NAME["quota"], 0, {}, none_excluded())
    assert select_policy(BY_NAME, "rrf") is BY_NAME["rrf"]
    with pytest.raises(ConfigError, match=r"unknown merge policy 'magic' \(available: quota, rrf, "
                                          r"weighted\)"):
        select_policy(BY_NAME, "magic")


@pytest.mark.parametrize("answer", [([1, 1], [1.0, 1.0]), ([1, 99], [1.0, 0.5]),
                                    ([1, 2, 3], [3.0, 2.0, 1.0])],
                         ids=["twice", "invented", "over-k"])
def test_a_misbehaving_policy_is_a_plugin_error(answer: tuple[list[int], list[float]]) -> None:
    policy = MergePolicy("bad", "", lambda lists, k, weights: (np.array(answer[0]),
                                                                np.array(answer[1])))
    per_source = {"a": cands([[1, 2, 3]]), "b": cands([[100]])}
    with pytest.raises(PluginError, match="merge policy 'bad'"):
        merge_batch(per_source, policy, 2, {}, none_excluded())


# ---- properties ------------------------------------------------------------------------------
ROWS = st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(a=ROWS, b=ROWS, popular=ROWS, excluded=st.lists(st.integers(0, 30), max_size=8),
       k=st.integers(1, 15), policy=st.sampled_from(POLICIES),
       weights=st.fixed_dictionaries({"a": st.sampled_from([0.0, 0.5, 1.0, 3.0]),
                                      "b": st.sampled_from([0.0, 1.0, 2.0])}))
def test_merged_lists_are_always_well_formed(
        a: list[list[int]], b: list[list[int]], popular: list[list[int]], excluded: list[int],
        k: int, policy: MergePolicy, weights: dict[str, float]) -> None:
    batch = min(len(a), len(b), len(popular))
    sources = {"a": cands(a[:batch]), "b": cands(b[:batch])}
    fallback = cands(popular[:batch])
    exclude = [np.array(excluded, np.int64)] * batch
    merged = merge_batch(sources, policy, k, weights, exclude, ("popular", fallback))
    answers = {**sources, "popular": fallback}
    for i, row in enumerate(merged.lists):
        _check_row(i, row, answers, set(excluded), k)
        offered = {x for name in ("a", "b") if weights[name] > 0
                   for x in answers[name].row(i)[0].tolist()} | set(answers["popular"].row(i)[0])
        assert len(row) == min(k, len(offered - set(excluded)))  # filled as far as possible


def _check_row(i: int, row: MergedList, answers: dict[str, Candidates], excluded: set[int],
               k: int) -> None:
    items = row.items.tolist()
    assert len(items) <= k and len(set(items)) == len(items)
    assert not set(items) & excluded
    assert len(row.scores) == len(items) and len(row.provenance) == len(items)
    assert 0 <= row.fallback_count <= len(items)
    for item, entries in zip(items, row.provenance):
        assert entries, f"item {item} has no provenance"
        for p in entries:
            source_items, source_scores, _ = answers[p.source].row(i)
            assert source_items[p.rank - 1] == item
            assert source_scores[p.rank - 1] == p.score
            assert item not in source_items[: p.rank - 1].tolist()  # first occurrence


# ---- the compiled quota against a plain-Python reference ----------------------------------------
def reference_quota(lists: Sequence[list[int]], k: int, weights: Sequence[float]) -> list[int]:
    """The quota policy's definition written as plainly as possible (clean lists in)."""
    def split(total: int, alive_weights: list[float]) -> list[int]:
        exact = [total * w / sum(alive_weights) for w in alive_weights]
        seats = [int(e // 1) for e in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - seats[i]), i))
        for i in by_remainder[: total - sum(seats)]:
            seats[i] += 1
        return seats

    pointers, taken = [0] * len(lists), []
    exhausted = [w == 0 or not items for items, w in zip(lists, weights)]
    while len(taken) < k and not all(exhausted):
        alive = [s for s in range(len(lists)) if not exhausted[s]]
        quotas = split(k - len(taken), [weights[s] for s in alive])
        slots = sorted(((j + 0.5) / q, i) for i, q in enumerate(quotas) for j in range(q))
        for _, owner in slots:
            s = alive[owner]
            while pointers[s] < len(lists[s]) and lists[s][pointers[s]] in taken:
                pointers[s] += 1
            if pointers[s] == len(lists[s]):
                exhausted[s] = True
            else:
                taken.append(lists[s][pointers[s]])
                pointers[s] += 1
    return taken


DISTINCT_ROWS = st.lists(st.lists(st.integers(0, 40), max_size=20, unique=True),
                         min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(lists=DISTINCT_ROWS, k=st.integers(1, 30),
       weights=st.lists(st.sampled_from([0.0, 0.3, 1.0, 1.0, 2.5, 7.0]), min_size=4, max_size=4))
def test_compiled_quota_matches_the_reference(lists: list[list[int]], k: int,
                                              weights: list[float]) -> None:
    named = [sl(f"s{i}", items) for i, items in enumerate(lists)]
    by_name = {f"s{i}": w for i, w in enumerate(weights)}
    items, scores = fuse_quota(named, k, by_name)
    assert items.tolist() == reference_quota(lists, k, weights[: len(lists)])
    assert np.allclose(scores, (k - np.arange(len(items))) / k)


@settings(max_examples=60, deadline=None)
@given(a=ROWS, b=ROWS, popular=ROWS, excluded=st.lists(st.integers(0, 30), max_size=8),
       k=st.integers(1, 15), weights=st.fixed_dictionaries(
           {"a": st.sampled_from([0.0, 0.5, 1.0, 3.0]), "b": st.sampled_from([0.0, 1.0, 2.0])}))
def test_batch_quota_equals_the_row_by_row_policy(
        a: list[list[int]], b: list[list[int]], popular: list[list[int]], excluded: list[int],
        k: int, weights: dict[str, float]) -> None:
    batch = min(len(a), len(b), len(popular))
    sources = {"a": cands(a[:batch]), "b": cands(b[:batch])}
    exclude = [np.array(excluded, np.int64)] * batch
    fill = ("popular", cands(popular[:batch]))
    quota = BY_NAME["quota"]
    row_by_row = MergePolicy("quota", "", quota.fuse)  # the same policy without fuse_batch
    batched = merge_batch(sources, quota, k, weights, exclude, fill)
    single = merge_batch(sources, row_by_row, k, weights, exclude, fill)
    _assert_same_lists(batched, single)


def _assert_same_lists(one_batch: MergedBatch, other_batch: MergedBatch) -> None:
    for one, other in zip(one_batch.lists, other_batch.lists, strict=True):
        assert one.items.tolist() == other.items.tolist()
        assert one.scores.tolist() == other.scores.tolist()
        assert one.fallback_count == other.fallback_count
        assert list(one.provenance) == list(other.provenance)


def test_a_batch_policy_with_wrong_shapes_is_a_plugin_error() -> None:
    def fuse_batch(lists, k, weights):  # type: ignore[no-untyped-def]
        return np.zeros((1, k + 1), np.int64), np.zeros((1, k + 1)), np.array([k + 1])

    policy = MergePolicy("bad-batch", "", BY_NAME["quota"].fuse, fuse_batch)
    with pytest.raises(PluginError, match="merge policy 'bad-batch'"):
        merge_batch({"a": cands([[1, 2, 3]])}, policy, 2, {}, none_excluded())


def test_huge_item_ids_merge_without_catalogue_sized_tables() -> None:
    big = 10**12  # per-row hash sets: nothing is sized by the largest id
    sources = {"a": cands([[big + 3, big + 1, 7]]), "b": cands([[7, big + 9]])}
    merged = merge_batch(sources, BY_NAME["quota"], 4, {}, [np.array([big + 1])],
                         ("b", sources["b"]))
    assert merged.lists[0].items.tolist() == [big + 3, 7, big + 9]
    assert [p.source for p in merged.lists[0].provenance[1]] == ["a", "b"]


def _hash_sets_only(count: int, entries: int, *arrays: np.ndarray) -> np.ndarray:
    return np.empty((count, 0), np.int32)  # what dense_stamps gives for ids too large


@settings(max_examples=60, deadline=None)
@given(a=ROWS, b=ROWS, popular=ROWS, excluded=st.lists(st.integers(0, 40), max_size=8),
       k=st.integers(1, 15), policy=st.sampled_from(POLICIES))
def test_dense_and_hashed_sets_merge_alike(
        a: list[list[int]], b: list[list[int]], popular: list[list[int]], excluded: list[int],
        k: int, policy: MergePolicy) -> None:
    batch = min(len(a), len(b), len(popular))
    sources = {"a": cands(a[:batch]), "b": cands(b[:batch])}
    exclude = [np.array(excluded, np.int64)] * batch  # ids above every source's: skipped
    fill = ("popular", cands(popular[:batch]))
    dense = merge_batch(sources, policy, k, {}, exclude, fill)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "dense_stamps", _hash_sets_only)
        hashed = merge_batch(sources, policy, k, {}, exclude, fill)
    _assert_same_lists(dense, hashed)


def test_dense_stamps_only_for_small_id_ranges() -> None:
    small = np.array([[0, 5, -1]])
    assert kernels.dense_stamps(2, small.size, small).shape == (2, 6)
    assert kernels.dense_stamps(1, 3, np.array([10**12])).shape == (1, 0)
    assert kernels.dense_stamps(1, 3, np.full(3, -1)).shape == (1, 0)  # nothing to index
