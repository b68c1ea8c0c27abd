"""Truncated neighbour tables: each item's strongest partners, stored as CSR arrays.

Both i2i algorithms produce a :class:`NeighbourTable`; retrieval multiplies a
sparse trigger matrix by it. On disk it is one uncompressed ``.npz`` of plain
arrays (no pickles), so loading is a few ``np.load`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recall_core.errors import ArtifactError

TABLE_FILE = "neighbours.npz"
_BLOCK_CELLS = 1 << 22  # dense cells per truncation block: bounds memory at ~32 MB


@dataclass(frozen=True)
class NeighbourTable:
    """Row ``i`` lists item i's neighbours (``indices``) and similarities (``scores``).

    Rows are sorted by descending score; scores are positive and finite.
    """

    indptr: np.ndarray  # (num_items + 1,) int64
    indices: np.ndarray  # (pairs,) int32 neighbour item
    scores: np.ndarray  # (pairs,) float32 similarity

    @property
    def num_items(self) -> int:
        return len(self.indptr) - 1

    @property
    def pairs(self) -> int:
        return len(self.indices)

    def neighbours(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``item``'s neighbours and scores, strongest first."""
        start, stop = self.indptr[item], self.indptr[item + 1]
        return self.indices[start:stop], self.scores[start:stop]

    def to_csr(self) -> sp.csr_matrix:
        """The table as a ``(num_items, num_items)`` float32 CSR matrix."""
        n = self.num_items
        return sp.csr_matrix((self.scores, self.indices, self.indptr), shape=(n, n))

    def save(self, directory: Path) -> Path:
        path = Path(directory) / TABLE_FILE
        with open(path, "wb") as handle:  # a file object keeps np.savez from renaming it
            np.savez(handle, indptr=self.indptr, indices=self.indices, scores=self.scores)
        return path

    @classmethod
    def load(cls, directory: Path, num_items: int | None = None) -> NeighbourTable:
        """Read and validate a table written by :meth:`save`."""
        path = Path(directory) / TABLE_FILE
        if not path.is_file():
            raise ArtifactError(f"i2i neighbour table missing: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                table = cls(data["indptr"], data["indices"], data["scores"])
        except (OSError, KeyError, ValueError) as error:
            raise ArtifactError(f"unreadable i2i neighbour table {path}: {error}") from None
        table.validate(num_items)
        return table

    def validate(self, num_items: int | None = None) -> None:
        """Raise :class:`ArtifactError` unless the arrays form a well-shaped table."""
        problems = []
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            problems.append("bad indptr")
        elif self.indptr[-1] != len(self.indices) or np.any(np.diff(self.indptr) < 0):
            problems.append("indptr does not match the pairs")
        if len(self.indices) != len(self.scores):
            problems.append("indices and scores differ in length")
        n = self.num_items
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            problems.append("neighbour id out of range")
        if not np.all(np.isfinite(self.scores)) or np.any(self.scores <= 0):
            problems.append("non-positive or non-finite score")
        if num_items is not None and n != num_items:
            problems.append(f"{n} items, expected {num_items}")
        if problems:
            raise ArtifactError("corrupt i2i neighbour table: " + ", ".join(problems))


def normalise(matrix: sp.csr_matrix, counts: np.ndarray, exponent: float) -> sp.csr_matrix:
    """``c_ij / (n_i**exponent * n_j**(1 - exponent))`` with the diagonal dropped."""
    matrix = matrix.tocsr(copy=True)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    n = np.maximum(counts.astype(np.float64), 1.0)
    matrix.data = matrix.data / (n[rows] ** exponent * n[matrix.indices] ** (1.0 - exponent))
    matrix.data[rows == matrix.indices] = 0.0  # an item is not its own neighbour
    matrix.eliminate_zeros()
    return matrix


def truncate(matrix: sp.csr_matrix, keep: int) -> NeighbourTable:
    """Keep each row's ``keep`` largest positive entries (dense row blocks, argpartition)."""
    matrix = matrix.tocsr()
    n_rows, n_cols = matrix.shape
    block = max(1, _BLOCK_CELLS // max(n_cols, 1))
    parts = [
        top_n_dense(matrix[start : start + block].toarray(), keep)
        for start in range(0, n_rows, block)
    ]
    if not parts:
        return from_rows(np.zeros(n_rows, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    counts = np.concatenate([p[0] for p in parts])
    return from_rows(counts, np.concatenate([p[1] for p in parts]),
                     np.concatenate([p[2] for p in parts]))


def top_n_dense(block: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a dense block: (count kept, column ids, scores), strongest first.

    Ties break towards the lower column id, so results do not depend on the
    order argpartition happens to leave them in.
    """
    rows, cols = block.shape
    keep = min(keep, cols)
    if keep == 0 or rows == 0:
        return np.zeros(rows, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    if keep < cols:
        top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
        # argpartition may cut inside a run of equal scores: widen the cut to the whole run.
        threshold = np.take_along_axis(block, top, axis=1).min(axis=1, keepdims=True)
        candidates = block >= threshold
    else:
        candidates = np.ones_like(block, dtype=bool)
    candidates &= block > 0
    row_ids, col_ids = np.nonzero(candidates)
    values = block[row_ids, col_ids]
    order = np.lexsort((col_ids, -values, row_ids))
    row_ids, col_ids, values = row_ids[order], col_ids[order], values[order]
    starts = np.searchsorted(row_ids, np.arange(rows))
    rank = np.arange(len(row_ids)) - starts[row_ids]
    kept = rank < keep
    counts = np.bincount(row_ids[kept], minlength=rows)
    return counts, col_ids[kept], values[kept].astype(np.float32)


def from_rows(counts: np.ndarray, indices: np.ndarray, scores: np.ndarray) -> NeighbourTable:
    """Assemble a table from per-row neighbour counts and the concatenated rows."""
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return NeighbourTable(indptr, np.asarray(indices, np.int32),
                          np.asarray(scores, np.float32))
