"""The seeded synthetic generator: determinism, shape, and structure a recommender can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recall_core.data.dataset import Dataset
from recall_core.data.synthetic import SyntheticConfig, generate
from recall_core.evaluation.protocols import make_split

TINY = SyntheticConfig(users=60, items=40, seed=5)


def test_same_seed_gives_a_byte_identical_dataset() -> None:
    first, second = generate(TINY), generate(TINY)
    assert first.fingerprint == second.fingerprint
    for name in ("users", "items", "timestamps", "item_category"):
        assert getattr(first, name).tobytes() == getattr(second, name).tobytes()
    assert generate(TINY.model_copy(update={"seed": 6})).fingerprint != first.fingerprint


def test_default_size_has_the_promised_shape() -> None:
    dataset = generate()
    assert (dataset.num_users, dataset.num_items) == (1000, 600)
    assert dataset.name == "synthetic"
    assert 20 <= dataset.num_interactions / dataset.num_users <= 40
    assert dataset.category_names == tuple(f"cat{c:02d}" for c in range(12))
    assert dataset.item_category.min() == 0 and dataset.item_category.dtype == np.int32
    assert dataset.users.dtype == np.int32 and dataset.items.dtype == np.int32
    assert dataset.feedback is None


def test_sequences_are_time_ordered_without_repeats() -> None:
    dataset = generate(TINY)
    assert dataset.num_users == 60 and dataset.num_items == 40
    assert np.all(np.diff(dataset.users) >= 0)
    same_user = np.diff(dataset.users) == 0
    assert np.all(np.diff(dataset.timestamps)[same_user] > 0)
    lengths = np.diff(dataset.indptr)
    assert lengths.min() >= 3  # every user is evaluable under leave-one-out
    for sequence in dataset.sequences():
        assert len(np.unique(sequence)) == len(sequence)


def test_users_have_several_interests_in_skewed_proportions() -> None:
    dataset = generate(SyntheticConfig(users=400, items=300, drift=0.0, seed=2))
    top_shares, interest_counts = [], []
    for sequence in dataset.sequences():
        counts = np.bincount(dataset.item_category[sequence], minlength=len(dataset.category_names))
        shares = np.sort(counts / counts.sum())[::-1]
        top_shares.append(shares[0])
        interest_counts.append(int((shares >= 0.15).sum()))
    interest_counts = np.array(interest_counts)
    assert np.mean(interest_counts >= 2) > 0.3  # many users are multi-interest ...
    assert np.mean(interest_counts == 1) > 0.1  # ... some are not
    assert 0.45 < np.mean(top_shares) < 0.95  # ... and one interest usually dominates
    assert interest_counts.max() <= 4


def test_drift_changes_the_interest_mix_along_the_sequence() -> None:
    def mean_shift(drift: float) -> float:
        dataset = generate(SyntheticConfig(users=300, items=200, drift=drift, seed=4))
        shifts = []
        for sequence in dataset.sequences():
            third = len(sequence) // 3
            early, late = (np.bincount(dataset.item_category[part], minlength=20) / len(part)
                           for part in (sequence[:third], sequence[-third:]))
            shifts.append(0.5 * np.abs(early - late).sum())
        return float(np.mean(shifts))

    assert mean_shift(1.0) > mean_shift(0.0) + 0.1


def test_popularity_is_skewed() -> None:
    popularity = np.sort(generate().item_popularity())[::-1]
    assert popularity[:60].sum() / popularity.sum() > 0.2  # top 10% of items: > 2x their share


def test_feedback_is_higher_on_the_dominant_interest() -> None:
    dataset = generate(SyntheticConfig(users=200, items=400, feedback=True, seed=1))
    assert dataset.feedback is not None and dataset.feedback.dtype == np.float32
    assert dataset.feedback.min() >= 0.0 and dataset.feedback.max() <= 1.0
    on_top, elsewhere = [], []
    for user, sequence in enumerate(dataset.sequences()):
        rows = slice(dataset.indptr[user], dataset.indptr[user + 1])
        categories = dataset.item_category[sequence]
        dominant = categories == np.bincount(categories).argmax()
        on_top.extend(dataset.feedback[rows][dominant])
        elsewhere.extend(dataset.feedback[rows][~dominant])
    assert np.mean(on_top) > np.mean(elsewhere) + 0.08


def test_item_cf_and_transitions_clearly_beat_popularity() -> None:
    dataset = generate(SyntheticConfig(users=400, items=300, seed=9))
    split = make_split(dataset, "paper")
    train = split.train
    matrix = sp.csr_matrix((np.ones(train.num_interactions), (train.users, train.items)),
                           shape=(dataset.num_users, dataset.num_items))
    matrix.data[:] = 1.0
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel()) + 1e-9
    cosine = (matrix.T @ matrix).toarray() / norms[:, None] / norms[None, :]
    np.fill_diagonal(cosine, 0.0)
    successors = np.zeros((dataset.num_items,) * 2)
    for sequence in train.sequences():
        np.add.at(successors, (sequence[:-1], sequence[1:]), 1.0)

    def hit_rate(score) -> float:  # type: ignore[no-untyped-def]
        hits = []
        for history, exclude, target in zip(split.test.queries.histories,
                                            split.test.queries.exclude, split.test.targets):
            scores = np.array(score(history), dtype=float)
            scores[exclude] = -np.inf
            hits.append(target[0] in np.argsort(-scores, kind="stable")[:10])
        return float(np.mean(hits))

    popular = hit_rate(lambda history: train.item_popularity())
    item_cf = hit_rate(lambda history: (cosine[history[-5:][::-1]]
                                        * 0.7 ** np.arange(min(5, len(history)))[:, None]).sum(0))
    markov = hit_rate(lambda history: successors[history[-1]])
    assert item_cf > max(3 * popular, 0.2), (item_cf, popular)
    assert markov > 2 * popular, (markov, popular)


def test_survives_a_save_and_load_round_trip(tmp_path: Path) -> None:
    dataset = generate(TINY.model_copy(update={"feedback": True}))
    dataset.save(tmp_path / "data")
    assert Dataset.load(tmp_path / "data").fingerprint == dataset.fingerprint


@pytest.mark.parametrize("values", [
    {"users": 10, "colour": "red"},
    {"min_interests": 3, "max_interests": 2},
    {"items": 10, "clusters": 6},
    {"drift": 1.5},
])
def test_config_rejects_bad_values(values: dict) -> None:
    with pytest.raises(ValidationError):
        SyntheticConfig.model_validate(values)


def test_config_accepts_cli_strings() -> None:
    config = SyntheticConfig.model_validate({"users": "50", "items": "30", "feedback": "true"})
    assert (config.users, config.items, config.feedback) == (50, 30, True)
    assert config.num_clusters == 3
