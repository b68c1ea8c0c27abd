"""Retrieval losses over (user vectors, positive ids, sampled negatives).

All losses score by inner product against ``item_table`` (``(N, d)``, row j =
item j's vector, the item tower's output) and average over the M positives:

- :func:`bce_loss`: binary cross-entropy, positive vs each sampled negative
  (the SASRec paper's loss with one uniform negative).
- :func:`sampled_softmax_loss`: softmax over the positive and K sampled
  negatives with temperature, logQ correction and accidental-hit masking.
- :func:`full_softmax_loss`: cross-entropy over the whole catalogue (exact;
  affordable when N is small).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recall_core.native import torch as load_torch
from recall_core.training.samplers import Negatives, NegativeSampler, make_sampler

torch = load_torch()
F = torch.nn.functional
Tensor = torch.Tensor
LOSSES = ("bce", "sampled_softmax", "softmax")


def negative_logits(user_vectors: Tensor, negatives: Negatives, item_table: Tensor) -> Tensor:
    """Scores ``(M, K)`` of each user vector against its (or the shared) negatives."""
    vectors = negatives.vectors if negatives.vectors is not None else item_table[negatives.ids]
    if negatives.shared:
        return user_vectors @ vectors.T  # (M, d) @ (d, K) -> (M, K)
    return torch.einsum("md,mkd->mk", user_vectors, vectors)  # per-positive (M, K, d)


def accidental_hits(positive_ids: Tensor, negatives: Negatives) -> Tensor:
    """Bool ``(M, K)``: the negative is in fact the row's positive."""
    ids = negatives.ids[None, :] if negatives.shared else negatives.ids
    return ids == positive_ids[:, None]


def bce_loss(user_vectors: Tensor, positive_ids: Tensor, negatives: Negatives,
             item_table: Tensor) -> Tensor:
    """Mean over positives of −log σ(s⁺) − Σ_k log(1 − σ(s⁻_k)); accidental hits skipped.

    logQ is not used: BCE scores each pair independently (no partition function
    to correct). With one negative this is the SASRec paper's objective.
    """
    positive = (user_vectors * item_table[positive_ids]).sum(-1)  # (M,)
    negative = negative_logits(user_vectors, negatives, item_table)  # (M, K)
    keep = ~accidental_hits(positive_ids, negatives)
    negative_term = (F.softplus(negative) * keep).sum(-1)
    return (F.softplus(-positive) + negative_term).mean()


def sampled_softmax_logits(user_vectors: Tensor, positive_ids: Tensor, negatives: Negatives,
                           item_table: Tensor, temperature: float = 1.0,
                           logq_correction: bool = True,
                           mask_accidental_hits: bool = True) -> Tensor:
    """Corrected logits ``(M, 1 + K)``, column 0 the positive.

    logit = s / temperature − log Q (when corrected): subtracting log Q from the
    positive and every negative makes the sampled softmax an unbiased-in-the-
    limit estimate of the full one. A negative equal to the row's positive gets
    −inf so it is not pushed down as if it were irrelevant.
    """
    user_vectors = user_vectors / temperature  # cheaper than scaling the (M, K) logits
    positive = (user_vectors * item_table[positive_ids]).sum(-1, keepdim=True)
    negative = negative_logits(user_vectors, negatives, item_table)
    if logq_correction:
        positive = positive - negatives.positive_log_q[:, None]
        log_q = negatives.log_q[None, :] if negatives.shared else negatives.log_q
        negative = negative - log_q
    if mask_accidental_hits:
        negative = negative.masked_fill(accidental_hits(positive_ids, negatives), float("-inf"))
    return torch.cat([positive, negative], dim=1)


def sampled_softmax_loss(user_vectors: Tensor, positive_ids: Tensor, negatives: Negatives,
                         item_table: Tensor, temperature: float = 1.0,
                         logq_correction: bool = True,
                         mask_accidental_hits: bool = True) -> Tensor:
    """Cross-entropy of the positive against K sampled negatives (see the logits)."""
    logits = sampled_softmax_logits(user_vectors, positive_ids, negatives, item_table,
                                    temperature, logq_correction, mask_accidental_hits)
    target = torch.zeros(len(logits), dtype=torch.long)
    return F.cross_entropy(logits, target)


def full_softmax_loss(user_vectors: Tensor, positive_ids: Tensor, item_table: Tensor,
                      temperature: float = 1.0) -> Tensor:
    """Cross-entropy over every item of ``item_table``."""
    # Scaling the (M, d) user vectors is N/d times cheaper than scaling the (M, N) logits.
    logits = (user_vectors / temperature) @ item_table.T  # (M, d) @ (d, N) -> (M, N)
    return F.cross_entropy(logits, positive_ids)


def cluster_softmax_loss(user_vectors: Tensor, positive_ids: Tensor, item_table: Tensor,
                         item_cluster: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy over the items of each positive's own cluster (exact in-cluster negatives).

    ``item_cluster`` ``(N,)`` long: item j's cluster. The limit of a sampled
    softmax with in-cluster negatives and logQ correction (dnc_ebr's loss).
    """
    return ClusterSoftmax(item_cluster, temperature)(user_vectors, positive_ids, item_table)


class ClusterSoftmax:
    """:func:`cluster_softmax_loss` with the cluster membership prepared once.

    Scores each positive against its own cluster's items only — K products of
    ``(M_k, d) @ (d, N_k)`` instead of one ``(M, N)`` product masked down, so the
    loss costs about 1/K of a full softmax's.
    """

    def __init__(self, item_cluster: Tensor, temperature: float = 1.0) -> None:
        self.item_cluster = item_cluster.long()
        self.temperature = temperature
        order = torch.argsort(self.item_cluster, stable=True)
        sizes = torch.bincount(self.item_cluster).tolist()
        self.members = list(torch.split(order, sizes))  # cluster k's item ids, ascending
        self.local = torch.empty_like(self.item_cluster)  # item j's index inside its cluster
        for ids in self.members:
            self.local[ids] = torch.arange(len(ids))

    def __call__(self, user_vectors: Tensor, positive_ids: Tensor, item_table: Tensor) -> Tensor:
        clusters = self.item_cluster[positive_ids]
        total = user_vectors.new_zeros(())
        for k in torch.unique(clusters).tolist():
            rows = (clusters == k).nonzero(as_tuple=True)[0]
            logits = (user_vectors[rows] / self.temperature) @ item_table[self.members[k]].T
            total = total + F.cross_entropy(logits, self.local[positive_ids[rows]],
                                            reduction="sum")
        return total / max(1, len(positive_ids))


class Objective:
    """The configured loss of a single-vector retrieval model, negatives drawn inside.

    ``objective(user_vectors, positive_ids, item_table)`` samples negatives for
    the M positives (when the loss needs them), computes the loss, and shows the
    positives to the sampler (the ``mixed`` sampler's embedding cache).
    """

    def __init__(self, loss: str, sampler: NegativeSampler | None = None, num_negatives: int = 1,
                 temperature: float = 1.0, logq_correction: bool = True) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r} (choose from {', '.join(LOSSES)})")
        if loss != "softmax" and sampler is None:
            raise ValueError(f"the {loss} loss needs a negative sampler")
        self.loss, self.sampler, self.num_negatives = loss, sampler, num_negatives
        self.temperature, self.logq_correction = temperature, logq_correction

    @classmethod
    def from_config(cls, config: Any, target_counts: np.ndarray,
                    item_cluster: np.ndarray | None = None) -> Objective:
        """Build from a :class:`~recall_core.training.config.NeuralConfig`."""
        sampler = None
        if config.loss != "softmax":
            sampler = make_sampler(
                config.sampler, target_counts=target_counts, seed=config.seed,
                shared=config.loss == "sampled_softmax", power=config.popularity_power,
                item_cluster=item_cluster, mixed_corpus=config.mixed_corpus,
                cache_size=config.embedding_cache, dim=config.dim)
        return cls(config.loss, sampler, config.num_negatives, config.temperature,
                   config.logq_correction)

    def __call__(self, user_vectors: Tensor, positive_ids: Tensor, item_table: Tensor) -> Tensor:
        if self.loss == "softmax":
            return full_softmax_loss(user_vectors, positive_ids, item_table, self.temperature)
        assert self.sampler is not None
        negatives = self.sampler.sample(positive_ids, self.num_negatives,
                                        item_vectors=lambda ids: item_table[ids])
        if self.loss == "bce":
            loss = bce_loss(user_vectors, positive_ids, negatives, item_table)
        else:
            loss = sampled_softmax_loss(user_vectors, positive_ids, negatives, item_table,
                                        self.temperature, self.logq_correction)
        self.sampler.observe(positive_ids, item_table[positive_ids].detach())
        return loss
