"""Item clusters of ``dnc_ebr``: K-means over item2vec embeddings, or the item category.

item2vec is skip-gram with negative sampling (Mikolov et al. 2013; Barkan &
Koenigstein 2016) over the users' training sequences, written as a few batched
torch ops: every pass draws a seeded sample of (center, context) pairs from a
window around each interaction, plus unigram^0.75 negatives. On ml-1m-3k
(3.6k items) the embeddings and the K-means take seconds. Items never seen in
training keep their random initial vector and are assigned to its nearest
centroid, so every item has a cluster. Cluster ids are compacted to 0..K'-1
(K' < K only when there are fewer distinct items or categories than K).
"""

from __future__ import annotations

import numpy as np

from recall_core import native
from recall_core.data.dataset import Dataset
from recall_plugins.dnc_ebr.config import DncEbrConfig

PAIR_BATCH = 4096
ITEM2VEC_LR = 0.01
UNIGRAM_POWER = 0.75


def assign_clusters(config: DncEbrConfig, dataset: Dataset) -> np.ndarray:
    """Cluster id ``(N,)`` int64 of every item of ``dataset``, compacted to 0..K'-1."""
    if config.cluster_by == "category":
        labels = dataset.item_category.astype(np.int64)
        labels = np.where(labels < 0, labels.max(initial=-1) + 1, labels)  # uncategorised: one more
    else:
        vectors = item2vec(dataset, config.item2vec_dim, config.item2vec_window,
                           config.item2vec_negatives, config.item2vec_epochs,
                           config.item2vec_max_pairs, config.seed)
        warm = np.bincount(dataset.items, minlength=dataset.num_items) > 0
        labels = kmeans_labels(vectors, warm, config.clusters, config.kmeans_iterations, config.seed)
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def skipgram_pairs(dataset: Dataset, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All (center, context) pairs at most ``window`` apart inside one user's sequence."""
    items, users = dataset.items.astype(np.int64), dataset.users
    centers, contexts = [], []
    for offset in range(1, window + 1):
        same_user = users[offset:] == users[:-offset]
        before, after = items[:-offset][same_user], items[offset:][same_user]
        centers += [before, after]  # both directions: the context is symmetric
        contexts += [after, before]
    if not centers:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(centers), np.concatenate(contexts)


def item2vec(dataset: Dataset, dim: int, window: int, negatives: int, epochs: int,
             max_pairs: int, seed: int) -> np.ndarray:
    """Skip-gram-with-negative-sampling item vectors ``(N, dim)`` float32 (seeded)."""
    torch = native.torch()
    generator = torch.Generator().manual_seed(seed)
    n = dataset.num_items
    # word2vec's init: small random input vectors, zero output vectors.
    center_table = torch.nn.Parameter((torch.rand(n, dim, generator=generator) - 0.5) / dim)
    context_table = torch.nn.Parameter(torch.zeros(n, dim))
    optimizer = torch.optim.Adam([center_table, context_table], lr=ITEM2VEC_LR)
    centers, contexts = (torch.from_numpy(a) for a in skipgram_pairs(dataset, window))
    unigram = torch.from_numpy(dataset.item_popularity() ** UNIGRAM_POWER)
    for _ in range(epochs if len(centers) else 0):
        order = torch.randperm(len(centers), generator=generator)[:max_pairs]
        for start in range(0, len(order), PAIR_BATCH):
            rows = order[start : start + PAIR_BATCH]
            sampled = torch.multinomial(unigram, len(rows) * negatives, replacement=True,
                                        generator=generator).view(len(rows), negatives)
            loss = _sgns_loss(center_table[centers[rows]], context_table[contexts[rows]],
                              context_table[sampled])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return center_table.detach().numpy().astype(np.float32)


def _sgns_loss(center, context, sampled):  # type: ignore[no-untyped-def]
    """−log σ(c·o) − Σ log σ(−c·o⁻): (B, d), (B, d), (B, K, d) -> scalar."""
    F = native.torch().nn.functional
    positive = (center * context).sum(-1)  # (B,)
    negative = (sampled @ center[:, :, None]).squeeze(-1)  # (B, K, d) @ (B, d, 1) -> (B, K)
    return (F.softplus(-positive) + F.softplus(negative).sum(-1)).mean()


def kmeans_labels(vectors: np.ndarray, warm: np.ndarray, k: int, iterations: int,
                  seed: int) -> np.ndarray:
    """Spherical K-means on the items seen in training; every item gets its nearest centroid."""
    faiss = native.faiss()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    train = unit[warm] if warm.any() else unit
    k = max(1, min(k, len(train)))
    kmeans = faiss.Kmeans(unit.shape[1], k, niter=iterations, seed=seed, spherical=True,
                          min_points_per_centroid=1, verbose=False)
    kmeans.train(train)
    _, labels = kmeans.index.search(unit, 1)
    return labels[:, 0].astype(np.int64)
