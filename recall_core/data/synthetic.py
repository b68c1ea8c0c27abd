"""A seeded synthetic dataset with structure a recommender can learn.

The world it simulates: items fall into clusters (the item categories), and
each cluster is a *chain* of items, like the episodes of a series or the
levels of a game, whose early items are the popular ones. A user has one to a
few interests (clusters) in skewed proportions; an interest's interactions walk
along its chain (mostly one step at a time, sometimes skipping), with a few
random popularity-weighted jumps inside the cluster as noise. Users stay with
one interest for a while before switching, and some users drift: midway their
interest mix changes and a new interest replaces an old one.

This gives item-to-item co-occurrence (neighbouring chain items), sequential
patterns (the next item follows the last one of the same interest), category
structure and popularity skew, so item-CF and sequential models clearly beat
popularity under leave-one-out, and multi-interest models have something to
find. Everything is vectorised numpy; the same config gives a byte-identical
dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recall_core.data.dataset import Dataset

_TIME_ORIGIN = 1_600_000_000  # 2020-09-13, in Unix seconds: plausible timestamps
_SESSION_GAP_S = 600.0  # mean gap between interactions inside a session
_BREAK_GAP_S = 2 * 86_400.0  # mean gap between sessions
_BREAK_PROBABILITY = 0.15
_OVERSAMPLE = 1.4  # generate extra positions: repeats are removed afterwards


class SyntheticConfig(BaseModel):
    """Size and shape of the synthetic world (unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(1000, ge=2)
    items: int = Field(600, ge=4)
    clusters: int | None = Field(None, ge=1)
    """Item clusters, which are also the categories; default ``clamp(items // 10, 2, 12)``."""
    min_interests: int = Field(1, ge=1)
    max_interests: int = Field(4, ge=1)
    interest_concentration: float = Field(0.6, gt=0)
    """Dirichlet concentration of a user's interest shares: smaller is more skewed."""
    mean_length: float = Field(30.0, ge=3)
    """Mean interactions per user (log-normal; capped by what the user's clusters hold)."""
    min_length: int = Field(5, ge=3)
    popularity_skew: float = Field(1.0, ge=0)
    """Zipf exponent of popularity along each cluster's chain (0 = uniform)."""
    sequential: float = Field(0.7, ge=0, le=1)
    """Probability that an interaction follows its interest's chain (else a random jump)."""
    stickiness: float = Field(0.75, ge=0, lt=1)
    """Probability that the next interaction stays with the current interest."""
    drift: float = Field(0.3, ge=0, le=1)
    """Probability that a user's interest mix changes once along the sequence."""
    feedback: bool = False
    """Add a ``feedback`` value in [0, 1], high when the item matches the dominant interest."""
    seed: int = 0

    @model_validator(mode="after")
    def _check_ranges(self) -> SyntheticConfig:
        if self.max_interests < self.min_interests:
            raise ValueError("max_interests must be >= min_interests")
        if self.clusters is not None and self.clusters * 2 > self.items:
            raise ValueError("every cluster needs at least 2 items (clusters <= items / 2)")
        return self

    @property
    def num_clusters(self) -> int:
        """The cluster count actually used."""
        return self.clusters if self.clusters is not None else min(12, max(2, self.items // 10))


def generate(config: SyntheticConfig | None = None) -> Dataset:
    """Generate the dataset ``config`` describes (default: 1,000 users, 600 items)."""
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    world = _World.build(config, rng)
    users, slots, phase_b = _interest_timeline(config, world, rng)
    items, walked = _pick_items(config, world, users, slots, rng)
    keep = _first_occurrences(users, items, world.lengths, config.items)
    users, items, slots, phase_b, walked = (a[keep] for a in (users, items, slots, phase_b, walked))
    feedback = None
    if config.feedback:
        feedback = _feedback(world, users, slots, phase_b, walked, rng)
    return Dataset(
        users=users.astype(np.int32),
        items=items.astype(np.int32),
        timestamps=_timestamps(users, config.users, rng),
        user_ids=_ids("u", config.users),
        item_ids=_ids("i", config.items),
        item_category=world.item_cluster.astype(np.int32),
        category_names=tuple(f"cat{c:02d}" for c in range(world.num_clusters)),
        feedback=feedback,
        name="synthetic",
        meta={"generator": "synthetic", "config": config.model_dump()},
    )


@dataclass(frozen=True)
class _World:
    """Clusters, chains and users' interests: everything drawn before the sequences.

    Items sit in *chain slots*: cluster c owns slots ``offsets[c]:offsets[c + 1]``
    in chain order, and slot j holds item ``slot_item[j]``.
    """

    num_clusters: int
    sizes: np.ndarray  # (clusters,) items per cluster
    offsets: np.ndarray  # (clusters + 1,) first slot of each cluster
    slot_item: np.ndarray  # (items,) item in each chain slot
    item_cluster: np.ndarray  # (items,) cluster = category of each item
    global_cdf: np.ndarray  # (items,) cluster index + popularity CDF inside the cluster
    clusters: np.ndarray  # (users, max_interests + 1) cluster of each interest slot
    shares_a: np.ndarray  # (users, max_interests + 1) interest shares before a drift
    shares_b: np.ndarray  # (users, max_interests + 1) ... and after it
    lengths: np.ndarray  # (users,) target sequence length
    change: np.ndarray  # (users,) generated position of the drift; inf = none

    @classmethod
    def build(cls, config: SyntheticConfig, rng: np.random.Generator) -> _World:
        num_clusters = config.num_clusters
        sizes = _cluster_sizes(config.items, num_clusters, rng)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        slot_item = rng.permutation(config.items)  # shuffled: ids do not reveal clusters
        slot_cluster = np.repeat(np.arange(num_clusters), sizes)
        item_cluster = np.empty(config.items, np.int64)
        item_cluster[slot_item] = slot_cluster
        # Zipf over chain positions; the cluster index is added so the CDF rises
        # monotonically across clusters and one searchsorted samples every cluster.
        position = np.arange(config.items) - offsets[slot_cluster]
        weight = 1.0 / (position + 1.0) ** config.popularity_skew
        cluster_cdf = _segment_cumsum(weight, offsets) / np.repeat(
            np.add.reduceat(weight, offsets[:-1]), sizes)
        clusters, shares_a, shares_b = _draw_interests(config, num_clusters, rng)
        lengths = _lengths(config, rng)
        drifts = rng.random(config.users) < config.drift
        change = np.where(drifts, rng.uniform(0.3, 0.8, config.users) * lengths * _OVERSAMPLE,
                          np.inf)
        return cls(num_clusters, sizes, offsets, slot_item, item_cluster,
                   cluster_cdf + slot_cluster, clusters, shares_a, shares_b, lengths, change)

    def sample_slot(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A popularity-weighted chain slot inside each of ``clusters``."""
        target = clusters + rng.random(len(clusters))
        slot = np.searchsorted(self.global_cdf, target, side="right")
        return np.minimum(slot, self.offsets[clusters + 1] - 1)


def _cluster_sizes(items: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Unequal cluster sizes, at least 2 items each, summing to ``items``."""
    shares = rng.dirichlet(np.full(clusters, 4.0))
    return 2 + rng.multinomial(items - 2 * clusters, shares)


def _draw_interests(
    config: SyntheticConfig, num_clusters: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's interest clusters and their shares before and after a drift.

    A user has ``max_interests + 1`` slots: the first ``k_u`` are active from the
    start; a drifting user's phase B drops one of them and activates the last slot.
    """
    users, width = config.users, config.max_interests + 1
    cluster_weight = 1.0 / (rng.permutation(num_clusters) + 1.0) ** 0.7
    keys = np.log(cluster_weight)[None, :] + rng.gumbel(size=(users, num_clusters))
    ranked = np.argsort(-keys, axis=1, kind="stable")  # Gumbel top-k: weighted, no repeats
    clusters = ranked[:, np.arange(width) % num_clusters]
    most = min(config.max_interests, num_clusters)
    counts = np.arange(min(config.min_interests, most), most + 1)
    k = rng.choice(counts, size=users, p=(1.0 / counts) / (1.0 / counts).sum())  # few is common
    active_a = np.arange(width)[None, :] < k[:, None]
    active_b = active_a.copy()
    active_b[np.arange(users), rng.integers(0, k)] = False
    active_b[:, -1] = True
    shares_a = _shares(active_a, config.interest_concentration, rng)
    shares_b = _shares(active_b, config.interest_concentration, rng)
    return clusters, shares_a, shares_b


def _shares(active: np.ndarray, concentration: float, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet shares over the active slots, the largest on the first active slot."""
    raw = rng.gamma(concentration, size=active.shape) * active + 1e-12 * active
    ordered = -np.sort(-raw, axis=1)
    # Give the sorted shares to the active slots in order, so slot order = dominance.
    shares = np.zeros_like(raw)
    rank = np.cumsum(active, axis=1) - 1
    rows, cols = np.nonzero(active)
    shares[rows, cols] = ordered[rows, rank[rows, cols]]
    return shares / shares.sum(axis=1, keepdims=True)


def _lengths(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    sigma = 0.6
    mu = np.log(config.mean_length) - sigma**2 / 2
    lengths = np.rint(rng.lognormal(mu, sigma, config.users)).astype(np.int64)
    return np.clip(lengths, config.min_length, max(config.min_length, config.items // 2))


def _interest_timeline(
    config: SyntheticConfig, world: _World, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per generated position: its user, its interest slot, and whether it is after the drift."""
    generated = np.ceil(world.lengths * _OVERSAMPLE).astype(np.int64) + 2
    users = np.repeat(np.arange(config.users), generated)
    starts = np.concatenate([[0], np.cumsum(generated)[:-1]])
    position = np.arange(len(users)) - starts[users]
    phase_b = position >= world.change[users]
    shares = np.where(phase_b[:, None], world.shares_b[users], world.shares_a[users])
    fresh = (np.cumsum(shares, axis=1) < rng.random(len(users))[:, None]).sum(axis=1)
    fresh = np.minimum(fresh, shares.shape[1] - 1)
    # Sticky interests: a run keeps the slot drawn at its start; the first position
    # and the drift point always start a new run.
    switch = rng.random(len(users)) >= config.stickiness
    switch |= position == 0
    switch[1:] |= phase_b[1:] & ~phase_b[:-1]
    run_start = np.maximum.accumulate(np.where(switch, np.arange(len(users)), 0))
    return users, fresh[run_start], phase_b


def _pick_items(
    config: SyntheticConfig, world: _World, users: np.ndarray, slots: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Walk each (user, interest) along its cluster's chain; some positions jump instead."""
    clusters = world.clusters[users, slots]
    group = users * world.clusters.shape[1] + slots
    order = np.lexsort((np.arange(len(users)), group))  # stable: time order inside a group
    g_sorted = group[order]
    first = np.concatenate([[True], g_sorted[1:] != g_sorted[:-1]])
    steps = np.where(first, 0, rng.geometric(0.75, len(users)))  # mostly 1, sometimes a skip
    walked_steps = np.cumsum(steps)
    walked_steps -= np.maximum.accumulate(np.where(first, walked_steps, 0))
    c_sorted = clusters[order]
    # Each (user, interest) starts at a popularity-weighted point of its chain.
    start_slot = world.sample_slot(c_sorted[first], rng)[np.cumsum(first) - 1]
    base = world.offsets[c_sorted]
    chain_slot = base + (start_slot - base + walked_steps) % world.sizes[c_sorted]
    slot = np.empty(len(users), np.int64)
    slot[order] = chain_slot
    walked = rng.random(len(users)) < config.sequential
    slot = np.where(walked, slot, world.sample_slot(clusters, rng))
    return world.slot_item[slot], walked


def _first_occurrences(
    users: np.ndarray, items: np.ndarray, lengths: np.ndarray, num_items: int
) -> np.ndarray:
    """Rows to keep: each user's first sight of an item, at most ``lengths[user]`` of them."""
    _, first = np.unique(users * num_items + items, return_index=True)
    keep = np.zeros(len(users), bool)
    keep[first] = True
    kept_before = np.cumsum(keep) - keep
    user_start = np.searchsorted(users, np.arange(lengths.size))
    rank = kept_before - kept_before[user_start][users]
    return keep & (rank < lengths[users])


def _feedback(
    world: _World, users: np.ndarray, slots: np.ndarray, phase_b: np.ndarray,
    walked: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """Play-rate-like values: high on the dominant interest, low on other and random items."""
    dominant = np.where(phase_b, world.shares_b[users].argmax(1), world.shares_a[users].argmax(1))
    on_dominant = (slots == dominant) & walked
    high = rng.beta(6.0, 2.0, len(users))  # mean 0.75
    mid = rng.beta(2.0, 3.0, len(users))  # mean 0.40
    low = rng.beta(1.2, 4.0, len(users))  # mean 0.23
    value = np.where(on_dominant, high, np.where(walked, mid, low))
    return value.astype(np.float32)


def _timestamps(users: np.ndarray, num_users: int, rng: np.random.Generator) -> np.ndarray:
    """Strictly increasing per user: sessions of short gaps separated by breaks."""
    n = len(users)
    gaps = np.where(rng.random(n) < _BREAK_PROBABILITY,
                    rng.exponential(_BREAK_GAP_S, n), rng.exponential(_SESSION_GAP_S, n))
    gaps = 1 + gaps.astype(np.int64)
    start = _TIME_ORIGIN + rng.integers(0, 180 * 86_400, num_users)
    first = np.concatenate([[True], users[1:] != users[:-1]])
    total = np.cumsum(gaps)
    since_first = total - np.maximum.accumulate(np.where(first, total, 0))
    return (start[users] + since_first).astype(np.int64)


def _segment_cumsum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every ``offsets`` boundary."""
    total = np.cumsum(values)
    before = np.concatenate([[0.0], total[offsets[1:-1] - 1]])
    return total - np.repeat(before, np.diff(offsets))


def _ids(prefix: str, count: int) -> np.ndarray:
    """Zero-padded ids, so string order equals numeric order (as ``Dataset.from_raw`` sorts)."""
    width = len(str(count - 1))
    return np.char.mod(f"{prefix}%0{width}d", np.arange(count)).astype(str)
