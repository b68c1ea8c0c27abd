"""Arithmetic that benchmark result files state as findings (not the benchmarks themselves)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.multi_interest_ml1m import best_spread_diversity, most_in_one_genre
from recall_core.training.multi_interest import category_diversity


def _diversity_of(counts: list[int]) -> float:
    """Diversity of one list holding ``counts[c]`` items of category c (the metric's own code)."""
    row = np.repeat(np.arange(len(counts)), counts)[None, :]
    return category_diversity(row, np.arange(len(counts)), row.shape[1])


def test_even_spread_is_the_metrics_value_of_that_list() -> None:
    # 50 items over 18 categories: 14 of them hold 3 items, 4 hold 2.
    assert best_spread_diversity(18, 50) == pytest.approx(_diversity_of([3] * 14 + [2] * 4))
    assert best_spread_diversity(1, 50) == 0.0


def test_one_heavy_category_with_the_rest_spread_evenly() -> None:
    # 13 of one category, 37 over the other 17: 3 of them hold 3 items, 14 hold 2.
    assert best_spread_diversity(18, 50, top=13) == pytest.approx(
        _diversity_of([13] + [3] * 3 + [2] * 14))


def test_most_in_one_genre_is_the_largest_count_that_still_reaches_the_target() -> None:
    target = 0.9163
    top = most_in_one_genre(target, 18)
    assert best_spread_diversity(18, 50, top) >= target > best_spread_diversity(18, 50, top + 1)
    assert most_in_one_genre(1.0, 18) == 0  # no 50-item list over 18 categories reaches 1
