"""Config schema of the ``sasrec`` source kind (defaults = the best measured settings)."""

from __future__ import annotations

from pydantic import Field

from recall_core.training.config import NeuralConfig


class SasrecConfig(NeuralConfig):
    """SASRec (Kang & McAuley, ICDM'18) trained with the shared kit.

    Defaults (full softmax, the last 50 items, d 64, 2 blocks) are row 2f of
    ``benchmarks/results/dnc_ebr_ml-1m-3k.md``; they were not tuned beyond rows 2 and 2f.
    The SASRec paper's baseline, row 1, is ``loss="bce", sampler="uniform", num_negatives=1``
    (with ``max_len=200``, the paper's length for ML-1M).
    """

    max_len: int = Field(50, ge=1)
    """Most recent items the encoder reads (the kit's default is 200). On ml-1m-3k the last
    50 beat the last 200: HR@10/20/50 0.3051/0.4045/0.5529 against 0.2928/0.3878/0.5388
    (rows 2f and 2), converged in 29 epochs against 40; serving encodes a quarter of the
    tokens."""
