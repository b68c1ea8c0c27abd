"""Small seeded datasets for tests (built from the synthetic generator)."""

from __future__ import annotations

from functools import cache

from recall_core.data.dataset import Dataset


@cache
def tiny_dataset(seed: int = 7) -> Dataset:
    """A few dozen users and items with real co-occurrence structure; same seed, same data."""
    from recall_core.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(users=80, items=60, seed=seed))
