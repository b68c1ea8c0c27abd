"""Top-k selection over dense score matrices, the hot path of every source.

Sources that can score the whole catalogue for a chunk of queries (popular,
i2i, embedding sources on small catalogues) build a ``(chunk, num_items)``
score matrix and call :func:`top_k_excluding`, which keeps each query's k best
unexcluded items by compiled selection.
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


def top_k_excluding(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> Candidates:
    """The k best columns of each row of ``scores`` that the row does not exclude.

    ``scores``: ``(batch, num_items)``, read only. Items are ranked by their float32 score,
    equal scores by lower item id; non-finite scores (-inf: never scored; NaN, +inf) and
    excluded items are never candidates, so a row short of k is padded with (-1, -inf).
    """
    from recall_core import selection  # numba: imported only when a source retrieves

    batch, num_items = scores.shape
    k_eff = min(k, num_items)
    if k_eff <= 0:
        return Candidates.padding(batch, 0)
    values = np.ascontiguousarray(scores, dtype=np.float32)
    # A compiled scan keys each row's k best columns as (value desc, column asc)
    # integers, skipping the exclusions; numpy sorts those.
    keys = selection.top_keys(values, *flat_exclusions(exclude), k_eff)
    return Candidates(*selection.ranked_keys(keys, k_eff))


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
        parts.append(top_k_excluding(score_chunk(chunk), chunk.exclude, k))
    if not parts:
        return Candidates.padding(0, k)
    return Candidates.concat(parts)
