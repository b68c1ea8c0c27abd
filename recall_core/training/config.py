"""The config keys every neural source shares (a pydantic base to subclass).

A neural source kind declares ``class MyConfig(NeuralConfig)`` and adds its own
keys; the training kit reads only the keys defined here. Import-light: no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recall_core.contract import SourceConfig

LossName = Literal["bce", "sampled_softmax", "softmax"]
SamplerName = Literal["uniform", "popularity", "log_uniform", "in_batch", "in_cluster", "mixed"]
IndexName = Literal["flat", "ivf", "hnsw"]
MonitorName = Literal["HR@10", "NDCG@10", "HR@20", "HR@50", "NDCG@20", "NDCG@50"]


class NeuralConfig(SourceConfig):
    """Shared keys of sequence-encoder sources: loss, sampler, model size, optimisation, index."""

    # ---- loss and negatives ---------------------------------------------------
    loss: LossName = "softmax"
    """``bce`` (sampled negatives), ``sampled_softmax`` (logQ-corrected) or ``softmax`` (full)."""
    num_negatives: int = Field(1, ge=1)
    """Negatives per positive (bce) or per batch (sampled_softmax: shared by all positions)."""
    sampler: SamplerName = "uniform"
    """Proposal of the negatives; ignored by the full softmax."""
    popularity_power: float = Field(0.75, ge=0.0)
    """Exponent of the ``popularity`` sampler (and of ``mixed``'s corpus part): Q ∝ count^power."""
    mixed_corpus: Literal["uniform", "popularity"] = "uniform"
    """Where ``mixed`` draws its corpus negatives from (besides the in-batch ones)."""
    embedding_cache: int = Field(0, ge=0)
    """``mixed`` only: draw corpus negatives from a FIFO cache of this many recent item embeddings (0 = off)."""
    temperature: float = Field(1.0, gt=0.0)
    """Logits are divided by it in the softmax losses."""
    logq_correction: bool = True
    """Subtract log Q(j) from sampled-softmax logits (the sampling-bias correction)."""

    # ---- encoder ----------------------------------------------------------------
    max_len: int = Field(200, ge=1)
    """Most recent items the encoder reads; longer histories are cut into windows for training."""
    windows: Literal["all", "last"] = "all"
    """``all``: train every position of long sequences (in max_len windows); ``last``: only the newest window."""
    dim: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    # ---- optimisation -------------------------------------------------------------
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0)
    """Clip the gradient norm to this (None = no clipping)."""
    batch_size: int = Field(128, ge=1)
    """Sequence windows per batch (every position of a window is trained)."""
    epochs: int = Field(200, ge=1)
    """Upper bound; early stopping on validation usually ends training before."""
    patience: int = Field(5, ge=1)
    """Validation rounds without improvement before stopping."""
    eval_every: int = Field(1, ge=1)
    """Validate every this many epochs."""
    monitor: MonitorName = "NDCG@10"
    """Validation metric (full ranking) that early stopping and the best checkpoint follow."""
    time_budget_minutes: float | None = Field(None, gt=0.0)
    """Stop after the epoch that crosses this wall-clock budget (None = epochs/patience only)."""
    validation_users: int = Field(1000, ge=1)
    """Without a validation split (``recall train``): hold out the last item of this many users."""
    threads: int | None = Field(None, ge=1)
    """torch threads; None = the project's thread budget (``context.threads``)."""

    # ---- index --------------------------------------------------------------------
    index: IndexName = "flat"
    """``flat`` = exact inner product; ``ivf`` / ``hnsw`` for large catalogues."""
    ivf_lists: int = Field(1024, ge=1)
    ivf_probe: int = Field(32, ge=1)
    hnsw_m: int = Field(32, ge=2)
    hnsw_ef_search: int = Field(128, ge=1)
    user_cache: int = Field(50_000, ge=0)
    """Serving: memoise the user representation of this many recent histories (0 = off).

    Exact: the key is the history the encoder reads; a reload starts it empty."""
    precomputed_users: int = Field(1_000_000, ge=0)
    """``recall index`` precomputes the user representation of this many stored users (most
    recently active first) into the index; serving reads them from there, one memory-mapped
    copy for every worker process (0 = none).

    Exact: a history other than the stored one misses the table and is encoded."""

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> NeuralConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self
