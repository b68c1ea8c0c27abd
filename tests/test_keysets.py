"""Key sets of the merge: the dense table and the sorted fallback answer alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_core import keysets
from recall_core.keysets import KeyPositions, KeySet

SPACE = 500
keys_strategy = st.lists(st.integers(0, SPACE - 1), max_size=60)


@pytest.fixture(params=["dense", "sorted"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sorted":
        monkeypatch.setattr(keysets, "DENSE_LIMIT", 0)
    return request.param


@settings(max_examples=60, deadline=None)
@given(members=keys_strategy, queries=keys_strategy)
def test_membership_matches_python_sets(members: list[int], queries: list[int]) -> None:
    for limit in (keysets.DENSE_LIMIT, 0):
        original, keysets.DENSE_LIMIT = keysets.DENSE_LIMIT, limit
        try:
            found = KeySet(np.array(members, np.int64), SPACE).contains(np.array(queries, np.int64))
        finally:
            keysets.DENSE_LIMIT = original
        assert found.tolist() == [q in set(members) for q in queries]


@settings(max_examples=60, deadline=None)
@given(members=st.lists(st.integers(0, SPACE - 1), unique=True, max_size=60), queries=keys_strategy)
def test_positions_match_list_index(members: list[int], queries: list[int]) -> None:
    for limit in (keysets.DENSE_LIMIT, 0):
        original, keysets.DENSE_LIMIT = keysets.DENSE_LIMIT, limit
        try:
            at = KeyPositions(np.array(members, np.int64), SPACE).positions(np.array(queries))
        finally:
            keysets.DENSE_LIMIT = original
        assert at.tolist() == [members.index(q) if q in members else -1 for q in queries]


def test_empty_sets_find_nothing(layout: str) -> None:
    empty = np.empty(0, np.int64)
    assert not KeySet(empty, SPACE).contains(np.array([0, 3])).any()
    assert KeyPositions(empty, SPACE).positions(np.array([[0, 3]])).tolist() == [[-1, -1]]
