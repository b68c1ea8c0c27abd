"""Top-k selection over dense score matrices, the hot path of every source.

Sources that can score the whole catalogue for a chunk of queries (popular,
i2i, embedding sources on small catalogues) build a ``(chunk, num_items)``
score matrix and call :func:`top_k_excluding`, which masks each query's
exclusions in one vectorised scatter and keeps the k best by compiled selection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recall_core.contract import Candidates, QueryBatch

DEFAULT_CHUNK = 512


def flat_exclusions(exclude: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every query's excluded items concatenated (int64), and each query's bounds in them:
    query b's are ``flat[bounds[b]:bounds[b + 1]]`` (the compiled kernels' layout)."""
    arrays = [np.asarray(e, dtype=np.int64).ravel() for e in exclude]
    bounds = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=bounds[1:])
    return (np.concatenate(arrays) if arrays else np.empty(0, np.int64)), bounds


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

    ``scores`` (float, shape ``(batch, num_items)``) is modified in place (the
    exclusions). Items are ranked by their float32 score, equal scores by lower
    item id; non-finite scores (-inf: excluded or never scored) become padding.
    """
    from recall_core import selection  # numba: imported only when a source retrieves

    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32)
    mask_exclusions(scores, exclude)
    batch, num_items = scores.shape
    k_eff = min(k, num_items)
    if k_eff <= 0:
        return Candidates(np.full((batch, 0), -1, np.int64), np.zeros((batch, 0), np.float32))
    values = np.ascontiguousarray(scores, dtype=np.float32)
    # NaN/+inf are never candidates (and NaN sorts last); -inf needs no rewrite (it is
    # already padding), which spares the sparse sources (i2i: mostly -inf) a full copy.
    if not (values < np.inf).all():
        values = np.where(values < np.inf, values, np.float32(-np.inf))
    # A compiled selection finds each row's k-th best value; a compiled scan keys the
    # columns at or above it as (value desc, column asc) integers; numpy sorts those.
    thresholds = selection.kth_largest(values, k_eff)
    return Candidates(*selection.ranked_keys(selection.top_keys(values, thresholds, k_eff),
                                             k_eff))


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
