"""Validation for early stopping: full-ranking HR/NDCG on held-out next items.

The evaluator passes its protocol's validation split (``context.validation``).
Production training (``recall train``) has none, so :func:`holdout_validation`
holds out the last item of a seeded sample of users from the training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recall_core.contract import Candidates, QueryBatch
from recall_core.data.dataset import Dataset
from recall_core.evaluation.metrics import ranking_metrics
from recall_core.evaluation.protocols import MIN_LEAVE_ONE_OUT_LENGTH, EvalQueries
from recall_core.ranking import retrieve_in_chunks

Retrieve = Callable[[QueryBatch, int], Candidates]
VALIDATION_KS = (10, 20, 50)


def holdout_validation(dataset: Dataset, users: int, seed: int = 0
                       ) -> tuple[Dataset, EvalQueries | None]:
    """Hold out the last item of ``users`` sampled users (seeded).

    Returns the training data without those items and the validation queries
    (history = the rest of the sequence, target = the held-out item); ``None``
    when no user has the three interactions this needs.
    """
    lengths = np.diff(dataset.indptr)
    eligible = np.flatnonzero(lengths >= MIN_LEAVE_ONE_OUT_LENGTH)
    if len(eligible) == 0:
        return dataset, None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=min(users, len(eligible)), replace=False))
    last_rows = dataset.indptr[chosen + 1] - 1
    keep = np.ones(dataset.num_interactions, dtype=bool)
    keep[last_rows] = False
    items = dataset.items.astype(np.int64)
    histories = [items[dataset.indptr[u] : dataset.indptr[u + 1] - 1] for u in chosen]
    targets = [items[row : row + 1] for row in last_rows]
    exclude = [np.setdiff1d(h, t) for h, t in zip(histories, targets)]
    queries = EvalQueries(QueryBatch(histories, exclude, chosen.astype(np.int64)), targets)
    return dataset.select_rows(keep), queries


def full_ranking_validator(retrieve: Retrieve, queries: EvalQueries, num_items: int,
                           ks: Sequence[int] = VALIDATION_KS) -> Callable[[], dict[str, float]]:
    """A no-argument function computing HR@K/NDCG@K of ``retrieve`` on ``queries``.

    ``retrieve`` is any function answering a :class:`QueryBatch` with
    :class:`Candidates` (the source's own retrieval, so validation ranks exactly
    like serving does, minus the index approximation).
    """
    def validate() -> dict[str, float]:
        candidates = retrieve(queries.queries, max(ks))
        metrics = ranking_metrics(candidates.items, queries.targets, ks, num_items)
        return {name: value for name, value in metrics.items() if not name.startswith("Recall")}

    return validate


def dense_retriever(encode: Callable[[QueryBatch], np.ndarray], item_vectors: Callable[[], np.ndarray],
                    chunk_size: int = 1024) -> Retrieve:
    """Exact retrieval for single-vector models: score every item, mask exclusions, top k.

    ``encode`` maps a batch of queries to user vectors ``(Q, d)``;
    ``item_vectors`` returns the current ``(N, d)`` item matrix (called once per
    retrieval, so it follows training).
    """
    def retrieve(queries: QueryBatch, k: int) -> Candidates:
        items = np.ascontiguousarray(item_vectors(), dtype=np.float32)
        return retrieve_in_chunks(queries, k, lambda chunk: encode(chunk) @ items.T, chunk_size)

    return retrieve
