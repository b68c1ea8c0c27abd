"""Config schema of the ``sasrec`` source kind (defaults = the best measured settings)."""

from __future__ import annotations

from recall_core.training.config import NeuralConfig


class SasrecConfig(NeuralConfig):
    """SASRec (Kang & McAuley, ICDM'18) trained with the shared kit.

    Defaults (full softmax, length 200, d 64, 2 blocks) are row 2 of
    ``benchmarks/results/dnc_ebr_ml-1m-3k.md``; they were not tuned beyond that run.
    The SASRec paper's baseline, row 1, is ``loss="bce", sampler="uniform", num_negatives=1``.
    """
