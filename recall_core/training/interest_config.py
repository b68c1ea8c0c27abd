"""Config keys shared by the multi-interest sources (``comirec``, ``mind``); no torch.

Defaults follow the ComiRec reference implementation (Cen et al. KDD'20, the
authors' TensorFlow code): the last 20 items, d = 64, K = 4, batch 128,
Adam 1e-3, sampled softmax with 10 × batch = 1280 shared popularity-sampled
negatives and logQ correction, no dropout.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recall_core.training.config import LossName, NeuralConfig, SamplerName


class MultiInterestConfig(NeuralConfig):
    """The kit's keys with the ComiRec reference's defaults, plus interests and aggregation."""

    loss: LossName = "sampled_softmax"
    sampler: SamplerName = "popularity"
    num_negatives: int = Field(1280, ge=1)
    """Shared negatives per batch (the reference: 10 per sequence x batch 128)."""
    max_len: int = Field(20, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the history's item embeddings (the references use none)."""
    layers: int = Field(1, ge=1, le=1)
    """One interest-extraction layer (kept for the kit's schema; only 1 is valid)."""
    heads: int = Field(1, ge=1, le=1)
    """Unused by multi-interest models (their K heads are ``interests``); only 1 is valid."""

    interests: int = Field(4, ge=1, le=64)
    """K: interest vectors per user (each searched separately at retrieval)."""
    train_positions: int | None = Field(None, ge=1)
    """Target positions trained per window and epoch: None = every position (each from its
    own prefix); an int samples that many positions per window (seeded) to save time."""

    diversity_lambda: float = Field(0.0, ge=0.0)
    """Controllable aggregation: the final list greedily maximises score − λ · (items already
    chosen in the same category); 0 = plain max-score merge."""
    diversity_pool: int = Field(1, ge=1, le=64)
    """With ``diversity_lambda > 0``: candidates each interest fetches for the greedy, as a
    multiple of k (1 = k per interest, the ComiRec reference's pool)."""
    categories: Literal["auto", "dataset", "clusters"] = "auto"
    """Categories the diversity term uses: the dataset's item categories (``dataset``), a
    K-means over the trained item embeddings (``clusters``), or ``auto`` = the dataset's when
    at least half the items have one, else clusters. Uncategorised items share one category."""
    category_clusters: int = Field(20, ge=1)
    """Clusters of the K-means fallback."""
