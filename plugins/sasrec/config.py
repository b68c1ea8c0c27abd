"""Config schema of the ``sasrec`` source kind (defaults = the best measured settings)."""

from __future__ import annotations

from recall_core.training.config import NeuralConfig


class SasrecConfig(NeuralConfig):
    """SASRec (Kang & McAuley, ICDM'18) trained with the shared kit.

    Defaults are row 2 of ``benchmarks/results/sasrec_ml1m_3k.md`` (tuned on the
    ml-1m-3k validation split); the paper's baseline is
    ``loss="bce", sampler="uniform", num_negatives=1``.
    """
