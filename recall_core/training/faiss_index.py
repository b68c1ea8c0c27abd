"""Inner-product item indexes on faiss: exact (flat), IVF or HNSW, with exclusions.

:class:`ItemIndex` holds a faiss index over the item vectors (faiss id = dense
item id) and answers user vectors with :class:`~recall_core.contract.Candidates`
that never contain a query's exclusions:

- a flat index over a catalogue of at most ``DENSE_LIMIT`` items scores every
  item (one matrix product per chunk of queries) and masks the exclusions, which
  is exact and as fast as faiss' own flat search at this size;
- otherwise the search over-fetches ``k + max exclusion length`` neighbours and
  filters, so every row still gets k valid items whenever the catalogue has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recall_core import native
from recall_core.contract import Candidates
from recall_core.errors import ArtifactError
from recall_core.ranking import top_k_excluding

DENSE_LIMIT = 200_000
INDEX_KINDS = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexSettings:
    kind: str = "flat"
    ivf_lists: int = 1024  # clamped to catalogue size / 39 (faiss' training minimum)
    ivf_probe: int = 32
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    seed: int = 0


def as_vectors(array: Any, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Validate at the boundary: a 2-D, C-contiguous float32 matrix (copied only if needed)."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, dim), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have dimension {array.shape[1]}, the index expects {dim}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {array.dtype}")
    out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return out


def build_faiss_index(vectors: np.ndarray, settings: IndexSettings) -> Any:
    """A faiss inner-product index over ``vectors`` (row i gets id i)."""
    faiss = native.faiss()
    vectors = as_vectors(vectors, what="item vectors")
    n, dim = vectors.shape
    if settings.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif settings.kind == "ivf":
        lists = max(1, min(settings.ivf_lists, n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = settings.seed
        index.train(vectors)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {settings.kind!r} (choose from {', '.join(INDEX_KINDS)})")
    index.add(vectors)
    _set_search_params(index, settings)
    return index


def _set_search_params(index: Any, settings: IndexSettings) -> None:
    if settings.kind == "ivf":
        index.nprobe = min(settings.ivf_probe, index.nlist)
    elif settings.kind == "hnsw":
        index.hnsw.efSearch = settings.hnsw_ef_search


class ItemIndex:
    """A faiss index over item vectors that searches with per-query exclusions."""

    def __init__(self, index: Any, settings: IndexSettings) -> None:
        self.index = index
        self.settings = settings
        self.dim = int(index.d)
        self.num_items = int(index.ntotal)
        self._dense = None
        if settings.kind == "flat" and self.num_items <= DENSE_LIMIT:
            self._dense = index.reconstruct_n(0, self.num_items)  # (N, d) float32

    @classmethod
    def build(cls, vectors: np.ndarray, settings: IndexSettings) -> ItemIndex:
        return cls(build_faiss_index(vectors, settings), settings)

    def save(self, path: Path) -> None:
        native.faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, settings: IndexSettings) -> ItemIndex:
        if not Path(path).is_file():
            raise ArtifactError(f"faiss index {path} is missing")
        index = native.faiss().read_index(str(path))
        _set_search_params(index, settings)
        return cls(index, settings)

    @property
    def exact_scores(self) -> bool:
        """Whether :meth:`search` scores every item exactly (a small flat index): a caller may
        then score the same vectors itself and get the same answer."""
        return self._dense is not None

    def score_all(self, user_vectors: np.ndarray) -> np.ndarray:
        """``(n, N)`` inner products with every item (only where :attr:`exact_scores`)."""
        if self._dense is None:
            raise ValueError("score_all needs an exact (flat, small) index")
        return as_vectors(user_vectors, self.dim, "user vectors") @ self._dense.T

    def search(self, user_vectors: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               chunk_size: int = 1024) -> Candidates:
        """The k best items by inner product for each row, exclusions removed."""
        queries = as_vectors(user_vectors, self.dim, "user vectors")
        if len(queries) != len(exclude):
            raise ValueError("one exclusion array per query is required")
        parts = []
        for start in range(0, len(queries), chunk_size):
            rows = slice(start, start + chunk_size)
            parts.append(self._search_chunk(queries[rows], k, exclude[rows]))
        if not parts:
            return Candidates.padding(0, k)
        return Candidates.concat(parts)

    def _search_chunk(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> Candidates:
        if self._dense is not None:
            return top_k_excluding(queries @ self._dense.T, exclude, k)
        longest = max((len(e) for e in exclude), default=0)
        fetch = min(self.num_items, k + longest)
        D, I = self.index.search(queries, fetch)
        D = D.astype(np.float32)
        keys = np.where(I >= 0, I, 0)
        blocked = _membership(keys, exclude) | (I < 0)
        D[blocked] = -np.inf
        order = np.argsort(-D, axis=1, kind="stable")[:, :k]
        items = np.take_along_axis(I, order, axis=1).astype(np.int64)
        scores = np.take_along_axis(D, order, axis=1)
        items[~np.isfinite(scores)] = -1
        return Candidates(items, scores)


def _membership(ids: np.ndarray, exclude: Sequence[np.ndarray]) -> np.ndarray:
    """Bool ``(Q, F)``: ``ids[i, f]`` is in ``exclude[i]``."""
    out = np.zeros(ids.shape, dtype=bool)
    for row, excluded in enumerate(exclude):
        if len(excluded):
            out[row] = np.isin(ids[row], excluded)
    return out
