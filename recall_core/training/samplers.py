"""Negative samplers, each reporting its proposal probability Q(j).

Every sampler draws negatives for a set of positives and returns them as
:class:`Negatives` with ``log Q`` of each negative and of each positive, which
the sampled-softmax loss subtracts from the logits (sampling-bias correction,
Bengio & Senécal 2008; Yi et al., RecSys'19). Negatives are either *shared*
(shape ``(K,)``, one set for every positive of the batch: cheap, one matrix
product) or *per positive* (shape ``(M, K)``).

| sampler | Q(j) |
|---|---|
| ``uniform`` | 1 / N |
| ``popularity`` | count_j^power / Σ count^power |
| ``log_uniform`` | (log(r_j + 2) − log(r_j + 1)) / log(N + 1), r_j = popularity rank (0 = most popular) |
| ``in_batch`` | count_j / Σ count (the chance a random training target is j) |
| ``in_cluster`` | w_j / Σ_{c(j)} w, conditional on the positive's cluster c (w = 1 or count^power) |
| ``mixed`` | (K_b Q_batch(j) + K_c Q_corpus(j)) / (K_b + K_c), the mixture of both draws |
| ``HardEasySampler`` | r Q_in(j ∣ c) [c(j) = c] + (1 − r) Q_easy(j): hard in-cluster plus easy global (per positive) |

Samplers own a seeded ``torch.Generator``: same seed, same negatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from recall_core.native import torch as load_torch

torch = load_torch()
Tensor = torch.Tensor
ItemVectors = Callable[[Tensor], Tensor]
"""Looks up current item vectors by dense id: ``(...,)`` long -> ``(..., d)``."""


@dataclass(frozen=True)
class Negatives:
    """Sampled negatives for M positives.

    ``ids``: ``(K,)`` shared by every positive, or ``(M, K)`` per positive.
    ``log_q``: log Q of each negative, same shape as ``ids``.
    ``positive_log_q``: ``(M,)`` log Q of each positive under the same proposal.
    ``vectors``: optional ``(K, d)`` / ``(M, K, d)`` embeddings to score instead
    of looking ``ids`` up (e.g. cached, stale embeddings of recent items).
    """

    ids: Tensor
    log_q: Tensor
    positive_log_q: Tensor
    vectors: Tensor | None = None

    @property
    def shared(self) -> bool:
        return self.ids.dim() == 1


def _log(probabilities: np.ndarray) -> Tensor:
    return torch.from_numpy(np.log(np.maximum(probabilities, 1e-30))).float()


class NegativeSampler:
    """Base: a proposal distribution over the N items of the catalogue."""

    name = "base"

    def __init__(self, num_items: int, seed: int = 0, shared: bool = True) -> None:
        if num_items < 1:
            raise ValueError("a sampler needs at least one item")
        self.num_items = num_items
        self.shared = shared
        self.generator = torch.Generator().manual_seed(int(seed))

    def probabilities(self) -> np.ndarray:
        """Q(j) for every item (float64, sums to 1)."""
        raise NotImplementedError

    def sample(self, positives: Tensor, num: int, item_vectors: ItemVectors | None = None
               ) -> Negatives:
        """Draw ``num`` negatives (shared or for each of the M ``positives``)."""
        shape = (num,) if self.shared else (len(positives), num)
        ids = self._draw(int(np.prod(shape))).reshape(shape)
        log_q = self._log_q[ids]
        return Negatives(ids, log_q, self._log_q[positives])

    def observe(self, ids: Tensor, vectors: Tensor) -> None:
        """See the positives of a finished step (only caching samplers care)."""

    @cached_property
    def _log_q(self) -> Tensor:
        return _log(self.probabilities())

    def _draw(self, count: int) -> Tensor:
        raise NotImplementedError


class UniformSampler(NegativeSampler):
    name = "uniform"

    def probabilities(self) -> np.ndarray:
        return np.full(self.num_items, 1.0 / self.num_items)

    def _draw(self, count: int) -> Tensor:
        return torch.randint(self.num_items, (count,), generator=self.generator)


class PopularitySampler(NegativeSampler):
    """Unigram sampler: Q ∝ count^power (power 0 = uniform, 1 = unigram, 0.75 = word2vec)."""

    name = "popularity"

    def __init__(self, counts: np.ndarray, power: float = 1.0, seed: int = 0,
                 shared: bool = True) -> None:
        super().__init__(len(counts), seed, shared)
        weights = np.asarray(counts, dtype=np.float64) ** power
        if not weights.sum() > 0:
            weights = np.ones(len(counts))
        self._probabilities = weights / weights.sum()
        self._torch_probabilities = torch.from_numpy(self._probabilities)

    def probabilities(self) -> np.ndarray:
        return self._probabilities

    def _draw(self, count: int) -> Tensor:
        return torch.multinomial(self._torch_probabilities, count, replacement=True,
                                 generator=self.generator)


class LogUniformSampler(NegativeSampler):
    """Zipfian by popularity rank: Q(rank r) = log((r + 2) / (r + 1)) / log(N + 1)."""

    name = "log_uniform"

    def __init__(self, counts: np.ndarray, seed: int = 0, shared: bool = True) -> None:
        super().__init__(len(counts), seed, shared)
        # Rank 0 = most popular; ties broken by id so the ranking is deterministic.
        self.by_rank = torch.from_numpy(np.argsort(-np.asarray(counts), kind="stable").copy())
        ranks = np.empty(self.num_items, np.int64)
        ranks[self.by_rank.numpy()] = np.arange(self.num_items)
        self.ranks = ranks

    def probabilities(self) -> np.ndarray:
        r = self.ranks.astype(np.float64)
        return (np.log(r + 2) - np.log(r + 1)) / math.log(self.num_items + 1)

    def _draw(self, count: int) -> Tensor:
        # Inverse CDF: P(rank <= r) = log(r + 2) / log(N + 1).
        u = torch.rand(count, generator=self.generator, dtype=torch.float64)
        rank = torch.floor(torch.exp(u * math.log(self.num_items + 1))).long() - 1
        return self.by_rank[rank.clamp_(0, self.num_items - 1)]


class InBatchSampler(NegativeSampler):
    """The other positives of the batch (``num`` of them, drawn over positions), shared.

    Draws positions of the batch uniformly, so Q(j) is j's share of the training
    targets (``counts`` must count targets, not all interactions).
    """

    name = "in_batch"

    def __init__(self, target_counts: np.ndarray, seed: int = 0) -> None:
        super().__init__(len(target_counts), seed, shared=True)
        counts = np.asarray(target_counts, dtype=np.float64)
        self._probabilities = counts / max(counts.sum(), 1.0)

    def probabilities(self) -> np.ndarray:
        return self._probabilities

    def sample(self, positives: Tensor, num: int, item_vectors: ItemVectors | None = None
               ) -> Negatives:
        if num >= len(positives):
            ids = positives.clone()
        else:
            ids = positives[torch.randperm(len(positives), generator=self.generator)[:num]]
        return Negatives(ids, self._log_q[ids], self._log_q[positives])


class InClusterSampler(NegativeSampler):
    """Negatives from the positive's own cluster (per positive, shape ``(M, K)``).

    ``item_cluster[j]`` is item j's cluster (-1 = none: such items form one
    cluster of their own). Within a cluster items are drawn uniformly, or ∝
    count^power when ``counts`` is given. Q(j | c) sums to 1 over each cluster.
    """

    name = "in_cluster"

    def __init__(self, item_cluster: np.ndarray, counts: np.ndarray | None = None,
                 power: float = 1.0, seed: int = 0) -> None:
        super().__init__(len(item_cluster), seed, shared=False)
        cluster = np.asarray(item_cluster, dtype=np.int64)
        cluster = np.where(cluster < 0, cluster.max(initial=-1) + 1, cluster)
        self.item_cluster = torch.from_numpy(cluster)
        weights = np.ones(len(cluster)) if counts is None else np.asarray(counts, np.float64) ** power
        order = np.lexsort((np.arange(len(cluster)), cluster))  # items grouped by cluster
        totals = np.bincount(cluster, weights=weights)
        totals = np.where(totals > 0, totals, 1.0)
        self._probabilities = weights / totals[cluster]  # Q(j | c(j))
        sorted_weights = weights[order]
        # Global inverse CDF over items sorted by cluster: cluster c spans [start_c, end_c).
        self._cdf = torch.from_numpy(np.cumsum(sorted_weights))
        cum_before = np.concatenate([[0.0], np.cumsum(sorted_weights)[:-1]])
        first = np.searchsorted(cluster[order], np.arange(len(totals)))
        self._cluster_start = torch.from_numpy(cum_before[np.minimum(first, len(order) - 1)])
        self._cluster_total = torch.from_numpy(np.bincount(cluster, weights=weights))
        self._sorted_items = torch.from_numpy(order)
        self._cluster_end_index = torch.from_numpy(
            np.searchsorted(cluster[order], np.arange(len(totals)), side="right") - 1)

    def probabilities(self) -> np.ndarray:
        """Q(j | cluster of j): sums to 1 within every cluster."""
        return self._probabilities

    def sample(self, positives: Tensor, num: int, item_vectors: ItemVectors | None = None
               ) -> Negatives:
        cluster = self.item_cluster[positives]  # (M,)
        u = torch.rand((len(positives), num), generator=self.generator, dtype=torch.float64)
        target = self._cluster_start[cluster, None] + u * self._cluster_total[cluster, None]
        index = torch.searchsorted(self._cdf, target, right=True)
        index = torch.minimum(index, self._cluster_end_index[cluster, None])  # float round-off
        ids = self._sorted_items[index]
        return Negatives(ids, self._log_q[ids], self._log_q[positives])


class HardEasySampler(NegativeSampler):
    """Per positive: ``hard_ratio`` of the negatives from its own cluster, the rest global.

    The hard part comes from an :class:`InClusterSampler`, the easy part from
    ``easy`` (any per-positive sampler, usually uniform). Q(j | c) is the mixture
    (r Q_in(j | c) [c(j) = c] + (1 − r) Q_easy(j)), r the realised hard share —
    the proposal of the paper's "SASRec+" negatives (hard in-cluster + easy global).
    """

    name = "hard_easy"

    def __init__(self, hard: InClusterSampler, easy: NegativeSampler, hard_ratio: float = 0.5
                 ) -> None:
        super().__init__(hard.num_items, 0, shared=False)
        if not 0.0 <= hard_ratio <= 1.0:
            raise ValueError("hard_ratio must be in [0, 1]")
        self.hard, self.easy, self.hard_ratio = hard, easy, hard_ratio
        self.generator = hard.generator
        easy.shared = False
        self._q_hard = torch.from_numpy(hard.probabilities())
        self._q_easy = torch.from_numpy(easy.probabilities())

    def probabilities(self) -> np.ndarray:
        """The easy part's Q(j) (the hard part is conditional on the positive's cluster)."""
        return self.easy.probabilities()

    def sample(self, positives: Tensor, num: int, item_vectors: ItemVectors | None = None
               ) -> Negatives:
        num_hard = int(round(num * self.hard_ratio))
        parts = []
        if num_hard:
            parts.append(self.hard.sample(positives, num_hard).ids)
        if num - num_hard:
            parts.append(self.easy.sample(positives, num - num_hard).ids)
        ids = torch.cat(parts, dim=1)  # (M, K)
        share = num_hard / num
        cluster = self.hard.item_cluster
        same = cluster[ids] == cluster[positives][:, None]
        q = share * self._q_hard[ids] * same + (1 - share) * self._q_easy[ids]
        q_positive = share * self._q_hard[positives] + (1 - share) * self._q_easy[positives]
        return Negatives(ids, _log_tensor(q), _log_tensor(q_positive))


def _log_tensor(probabilities: Tensor) -> Tensor:
    return torch.log(probabilities.clamp(min=1e-30)).float()


class EmbeddingCache:
    """A FIFO of the most recent positives' (id, embedding), for cross-batch negatives."""

    def __init__(self, size: int, dim: int) -> None:
        self.ids = torch.full((size,), -1, dtype=torch.long)
        self.vectors = torch.zeros(size, dim)
        self.cursor = 0
        self.filled = 0

    def push(self, ids: Tensor, vectors: Tensor) -> None:
        ids, vectors = ids[-len(self.ids):], vectors[-len(self.ids):].detach()
        slots = (self.cursor + torch.arange(len(ids))) % len(self.ids)
        self.ids[slots], self.vectors[slots] = ids, vectors.to(self.vectors.dtype)
        self.cursor = int((self.cursor + len(ids)) % len(self.ids))
        self.filled = min(len(self.ids), self.filled + len(ids))


class MixedSampler(NegativeSampler):
    """In-batch negatives plus corpus negatives (Yang et al., WWW'20), shared by the batch.

    Of ``num`` negatives, ``corpus_share`` come from ``corpus`` (uniform or
    popularity) and the rest are positives of the batch. With a warm ``cache``
    the corpus part is drawn from the cached embeddings of recent positives
    instead (stale vectors, no gradient; their Q is the target frequency, like
    in-batch). Q(j) is the mixture weighted by the two parts' sizes.
    """

    name = "mixed"

    def __init__(self, in_batch: InBatchSampler, corpus: NegativeSampler,
                 corpus_share: float = 0.5, cache: EmbeddingCache | None = None) -> None:
        super().__init__(in_batch.num_items, 0, shared=True)
        if not 0.0 <= corpus_share <= 1.0:
            raise ValueError("corpus_share must be in [0, 1]")
        self.generator = in_batch.generator
        self.in_batch, self.corpus, self.corpus_share, self.cache = in_batch, corpus, corpus_share, cache
        corpus.shared = True

    def probabilities(self, cached: bool = False) -> np.ndarray:  # type: ignore[override]
        """The nominal mixture proposal (``cached``: the corpus part comes from the cache)."""
        return self._mixture(1.0 - self.corpus_share, self.corpus_share, cached)

    def _mixture(self, batch_part: float, corpus_part: float, cached: bool) -> np.ndarray:
        corpus = self.in_batch.probabilities() if cached else self.corpus.probabilities()
        total = max(batch_part + corpus_part, 1e-12)
        return (batch_part * self.in_batch.probabilities() + corpus_part * corpus) / total

    def sample(self, positives: Tensor, num: int, item_vectors: ItemVectors | None = None
               ) -> Negatives:
        num_corpus = int(round(num * self.corpus_share))
        batch = self.in_batch.sample(positives, num - num_corpus)
        cached = self.cache is not None and self.cache.filled >= num_corpus > 0
        q = _log(self._mixture(len(batch.ids), num_corpus, cached))
        if not cached:
            ids = torch.cat([batch.ids, self.corpus.sample(positives, num_corpus).ids])
            return Negatives(ids, q[ids], q[positives])
        if item_vectors is None:
            raise ValueError("the mixed sampler with an embedding cache needs item_vectors")
        assert self.cache is not None
        slots = torch.randint(self.cache.filled, (num_corpus,), generator=self.generator)
        ids = torch.cat([batch.ids, self.cache.ids[slots]])
        vectors = torch.cat([item_vectors(batch.ids), self.cache.vectors[slots]])
        return Negatives(ids, q[ids], q[positives], vectors)

    def observe(self, ids: Tensor, vectors: Tensor) -> None:
        if self.cache is not None:
            self.cache.push(ids, vectors)


SAMPLERS = ("uniform", "popularity", "log_uniform", "in_batch", "in_cluster", "mixed")


def make_sampler(name: str, *, target_counts: np.ndarray, seed: int = 0, shared: bool = True,
                 power: float = 1.0, item_cluster: np.ndarray | None = None,
                 mixed_corpus: str = "uniform", corpus_share: float = 0.5,
                 cache_size: int = 0, dim: int = 0) -> NegativeSampler:
    """Build a sampler by config name.

    ``target_counts[j]``: how often item j is a training target (popularity and
    in-batch proposals). ``shared``: one set of negatives per batch, else per
    positive (uniform, popularity, log_uniform). ``item_cluster`` is required by
    ``in_cluster``; ``cache_size`` > 0 gives ``mixed`` an embedding cache of width ``dim``.
    """
    num_items = len(target_counts)
    if name == "uniform":
        return UniformSampler(num_items, seed, shared)
    if name == "popularity":
        return PopularitySampler(target_counts, power, seed, shared)
    if name == "log_uniform":
        return LogUniformSampler(target_counts, seed, shared)
    if name == "in_batch":
        return InBatchSampler(target_counts, seed)
    if name == "in_cluster":
        if item_cluster is None:
            raise ValueError("the in_cluster sampler needs an item -> cluster array")
        return InClusterSampler(item_cluster, seed=seed)
    if name == "mixed":
        corpus = make_sampler(mixed_corpus, target_counts=target_counts, seed=seed + 1,
                              power=power)
        cache = EmbeddingCache(cache_size, dim) if cache_size > 0 else None
        return MixedSampler(InBatchSampler(target_counts, seed), corpus, corpus_share, cache)
    raise ValueError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
