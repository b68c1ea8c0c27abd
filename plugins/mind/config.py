"""Config schema of the ``mind`` source kind."""

from __future__ import annotations

from pydantic import Field

from recall_core.training.interest_config import MultiInterestConfig


class MindConfig(MultiInterestConfig):
    """MIND (Li et al. CIKM'19): behaviour-to-interest routing, adaptive K, label-aware attention.

    Training and retrieval defaults are the ComiRec reference's (which also
    re-implements MIND); unlike the public ports, K adapts to the history length.
    """

    adaptive: bool = True
    """K'_u = max(1, min(K, ⌊log2 |I_u|⌋)) interests, |I_u| = items the extractor reads
    (at most ``max_len``); False = always K. Unused interests never produce candidates."""
    pow_p: float = Field(2.0, ge=0.0)
    """Label-aware attention power: training weights ∝ (e^{<v_k, e_target>})^p = softmax(p·s).
    0 = mean of the interests, 1 = softmax, larger = sharper (the paper: p > 1 converges
    faster); ``inf`` = hard readout (the interest closest to the target)."""
    routing_iterations: int = Field(3, ge=1)
    """Dynamic-routing iterations (gradients flow through the last one only)."""
    routing_init_std: float = Field(1.0, gt=0.0)
    """Std of the Gaussian routing logits: resampled every training step, one fixed seeded
    draw at retrieval (so serving is deterministic)."""
