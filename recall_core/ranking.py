"""Top-k selection over dense score matrices, the hot path of every source.

Sources that can score the whole catalogue for a chunk of queries (popular,
i2i, embedding sources on small catalogues) build a ``(chunk, num_items)``
score matrix and call :func:`top_k_excluding`, which masks each query's
exclusions in one vectorised scatter and keeps the k best by argpartition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recall_core.contract import Candidates, QueryBatch

DEFAULT_CHUNK = 512


def mask_exclusions(scores: np.ndarray, exclude: Sequence[np.ndarray]) -> None:
    """Set ``scores[i, exclude[i]] = -inf`` for every row, in place."""
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    if lengths.sum() == 0:
        return
    rows = np.repeat(np.arange(len(exclude)), lengths)
    cols = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
    valid = (cols >= 0) & (cols < scores.shape[1])
    scores[rows[valid], cols[valid]] = -np.inf


def top_k_excluding(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> Candidates:
    """The k best columns of each row of ``scores`` after masking exclusions.

    ``scores`` (float, shape ``(batch, num_items)``) is modified in place.
    Items whose score is -inf (excluded, or never scored) become padding.
    """
    mask_exclusions(scores, exclude)
    batch, num_items = scores.shape
    k_eff = min(k, num_items)
    if k_eff <= 0:
        return Candidates(np.full((batch, 0), -1, np.int64), np.zeros((batch, 0), np.float32))
    if k_eff < num_items:
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.tile(np.arange(num_items), (batch, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    items[~np.isfinite(top_scores)] = -1
    top_scores[items < 0] = -np.inf
    return Candidates(items, top_scores)


def retrieve_in_chunks(
    queries: QueryBatch,
    k: int,
    score_chunk: Callable[[QueryBatch], np.ndarray],
    chunk_size: int = DEFAULT_CHUNK,
) -> Candidates:
    """Score ``queries`` chunk by chunk with ``score_chunk`` and keep the top k.

    Bounds memory at ``chunk_size × num_items`` floats whatever the batch size.
    """
    parts = []
    for start in range(0, max(len(queries), 1), chunk_size):
        chunk = queries.slice(start, start + chunk_size)
        if len(chunk) == 0:
            break
        scores = np.array(score_chunk(chunk), dtype=np.float32, copy=True)
        parts.append(top_k_excluding(scores, chunk.exclude, k))
    if not parts:
        return Candidates(np.full((0, k), -1, np.int64), np.zeros((0, k), np.float32))
    return Candidates.concat(parts)
