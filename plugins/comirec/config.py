"""Config schema of the ``comirec`` source kind (defaults = the ComiRec reference's)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recall_core.training.interest_config import MultiInterestConfig


class ComirecConfig(MultiInterestConfig):
    """ComiRec (Cen et al. KDD'20): K interests per user, per-interest search, diversity λ.

    Defaults are the authors' reference settings: ComiRec-SA, K = 4, the last 20
    items, d = 64, sampled softmax with 1280 popularity-sampled shared negatives
    and logQ correction, hard readout (the interest closest to the target) in training.
    """

    variant: Literal["sa", "dr"] = "sa"
    """``sa``: self-attentive extractor; ``dr``: dynamic-routing capsules."""
    routing_iterations: int = Field(3, ge=1)
    """Dynamic-routing iterations (``dr`` only; ``sa`` has no routing)."""
    bilinear: Literal["position", "interest"] = "position"
    """``dr`` only: ``position`` = one bilinear map per window position and interest (the
    reference's DR), ``interest`` = one map per interest shared by every position."""
