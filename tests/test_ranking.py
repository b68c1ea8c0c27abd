"""The compiled top-k against a plain full sort."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall_core.ranking import top_k_excluding


def reference(scores: np.ndarray, exclude: list[np.ndarray], k: int) -> tuple[list, list]:
    items, values = [], []
    for row, excluded in zip(scores, exclude):
        row = row.astype(np.float64).copy()
        row[[e for e in excluded if 0 <= e < len(row)]] = -np.inf
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]  # ties: lower id
        kept = [i for i in order if np.isfinite(row[i])]
        items.append(kept + [-1] * (min(k, len(row)) - len(kept)))
        values.append([float(np.float32(row[i])) for i in kept])
    return items, values


@settings(max_examples=120, deadline=None)
@given(data=st.data(), rows=st.integers(1, 5), n=st.integers(1, 40), k=st.integers(0, 50),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_top_k_is_a_full_sort_with_ties_by_id(data: st.DataObject, rows: int, n: int, k: int,
                                              dtype: type) -> None:
    values = st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 0.5, 2.0, 3.25])  # many ties
    scores = np.array(data.draw(st.lists(st.lists(values, min_size=n, max_size=n),
                                         min_size=rows, max_size=rows)), dtype=dtype)
    exclude = [np.array(data.draw(st.lists(st.integers(-2, n + 2), max_size=6)), np.int64)
               for _ in range(rows)]
    items, expected_scores = reference(scores, exclude, k)
    found = top_k_excluding(scores.copy(), exclude, k)
    assert found.items.tolist() == items
    assert found.items.dtype == np.int64 and found.scores.dtype == np.float32
    for row, expected in zip(found.scores, expected_scores):
        assert row[: len(expected)].tolist() == expected
        assert np.isneginf(row[len(expected):]).all()


def test_non_contiguous_and_integer_scores_are_accepted() -> None:
    scores = np.arange(20, dtype=np.int64).reshape(4, 5)[:, ::-1]
    found = top_k_excluding(scores, [np.array([0])] * 4, 2)
    assert found.items.tolist() == [[1, 2]] * 4  # column 0 holds the best, but it is excluded


@pytest.mark.parametrize("k", [0, 3])
def test_empty_catalogue(k: int) -> None:
    found = top_k_excluding(np.zeros((2, 0), np.float32), [np.empty(0, np.int64)] * 2, k)
    assert found.items.shape == (2, 0)


def sorted_reference(values: np.ndarray, exclude: list[np.ndarray], k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The top k by a full lexicographic sort (float32 value descending, column ascending)."""
    items = np.full((len(values), k), -1, np.int64)
    scores = np.full((len(values), k), -np.inf, np.float32)
    for b, row in enumerate(values.astype(np.float32)):
        candidate = np.isfinite(row)
        candidate[exclude[b][(exclude[b] >= 0) & (exclude[b] < len(row))]] = False
        columns = np.flatnonzero(candidate)
        best = columns[np.lexsort((columns, -row[columns]))][:k]
        items[b, : len(best)], scores[b, : len(best)] = best, row[best]
    return items, scores


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rows=st.integers(1, 4), n=st.integers(1, 5000),
       shape=st.sampled_from(["normal", "ties", "skewed", "sparse", "constant", "sorted"]))
def test_long_rows_equal_a_full_sort(data: st.DataObject, rows: int, n: int, shape: str) -> None:
    """Rows long enough for the sampled threshold, in the score shapes sources produce,
    with exclusions, NaN and infinities among them."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = {"normal": lambda: rng.normal(size=(rows, n)),
              "ties": lambda: np.round(rng.normal(size=(rows, n)), 1),
              "skewed": lambda: np.exp(8 * rng.normal(size=(rows, n))),  # many exponents
              "sparse": lambda: np.where(rng.random((rows, n)) < 0.9, -np.inf,
                                         rng.random((rows, n))),  # mostly -inf (i2i)
              "constant": lambda: np.full((rows, n), 0.25),
              "sorted": lambda: np.sort(rng.normal(size=(rows, n)))[:, ::-1],  # by column
              }[shape]().astype(np.float32)
    odd = rng.random((rows, n))
    values[odd < 0.01] = np.nan
    values[(odd > 0.01) & (odd < 0.015)] = np.inf
    k = data.draw(st.integers(1, n))
    exclude = [rng.choice(n + 5, size=rng.integers(0, n // 4 + 1)) - 2 for _ in range(rows)]
    found = top_k_excluding(values, exclude, k)
    items, scores = sorted_reference(values, exclude, k)
    np.testing.assert_array_equal(found.items, items)
    np.testing.assert_array_equal(found.scores, scores)


def test_an_unrepresentative_sample_falls_back_to_keying_every_column() -> None:
    """The strided sample sees only the best columns, so its threshold passes fewer than k:
    the row is keyed again in full and the answer stays exact."""
    from recall_core import selection

    n, k = 4096, 600
    stride = n // selection._SAMPLE
    values = np.ones((1, n), np.float32)
    values[0, ::stride] = 10.0  # every sampled column, and fewer than k of them
    found = top_k_excluding(values, [np.empty(0, np.int64)], k)
    best = list(range(0, n, stride))
    rest = [c for c in range(n) if c % stride][: k - len(best)]
    assert found.items[0].tolist() == best + rest
    assert found.scores[0].tolist() == [10.0] * len(best) + [1.0] * len(rest)


def test_scores_are_left_as_they_were() -> None:
    scores = np.array([[3.0, np.nan, 1.0, np.inf]], np.float32)
    top_k_excluding(scores, [np.array([0])], 2)
    np.testing.assert_array_equal(scores, np.array([[3.0, np.nan, 1.0, np.inf]], np.float32))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), queries=st.integers(1, 4), interests=st.integers(1, 5),
       n=st.integers(1, 700), k=st.integers(1, 200))
def test_best_interest_top_k_is_a_max_with_ties_to_the_lower_interest(
        data: st.DataObject, queries: int, interests: int, n: int, k: int) -> None:
    """The fused max-over-interests top-k against the max taken first, then a full sort."""
    from recall_core.ranking import flat_exclusions
    from recall_core.selection import best_interest_keys, ranked_grouped_keys

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = np.array([np.nan, -np.inf, -1.0, 0.0, 0.5, 2.0], np.float32)
    scores = np.where(rng.random((queries, interests, n)) < 0.7,  # ties, NaN and -inf
                      np.round(rng.normal(size=(queries, interests, n)), 1),
                      rng.choice(values, (queries, interests, n))).astype(np.float32)
    valid = rng.random((queries, interests)) < 0.8
    exclude = [rng.choice(n + 4, size=rng.integers(0, n // 3 + 1)) - 2 for _ in range(queries)]
    best = np.full((queries, n), -np.inf, np.float32)
    giver = np.full((queries, n), -1, np.int64)
    for q in range(queries):
        for interest in range(interests):  # strictly better only: NaN never wins
            better = valid[q, interest] & (scores[q, interest] > best[q])
            best[q, better], giver[q, better] = scores[q, interest, better], interest
    k = min(k, n)
    items, values_found, groups = ranked_grouped_keys(
        best_interest_keys(scores, valid, *flat_exclusions(exclude), k), k)
    expected_items, expected_scores = sorted_reference(best, exclude, k)
    np.testing.assert_array_equal(items, expected_items)
    np.testing.assert_array_equal(values_found, expected_scores)
    expected_groups = np.where(expected_items >= 0, np.take_along_axis(
        giver, np.maximum(expected_items, 0), axis=1), -1)
    np.testing.assert_array_equal(groups, expected_groups)
