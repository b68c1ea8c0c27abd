"""Multi-interest user encoders: ComiRec-SA, ComiRec-DR and MIND, nanoGPT style.

A :class:`MultiInterestModel` reads right-padded item sequences (input id =
item + 1, 0 = padding, as :mod:`~recall_core.training.batching` builds them)
and returns K interest vectors per sequence plus a validity mask (MIND's
adaptive interest count leaves some of them unused). Its item embedding table
doubles as the item tower (the ComiRec reference shares one table).

Training reads interests out of every *prefix* of a window — position t's
interests are those of the items ``0..t`` — so one pass trains every target
position, not one target per sequence:

- self-attention (``sa``, Cen et al. KDD'20): the attention logits of a position
  do not depend on the prefix, so prefix interests are cumulative sums of
  ``exp(a_j) e_j`` over ``exp(a_j)`` (exact, O(B T K d));
- dynamic routing (``dr``: per-interest bilinear maps, zero-initialised logits;
  ``mind``: one shared map, Gaussian logits, Li et al. CIKM'19) is not
  decomposable, so each trained prefix routes on its own, vectorised as a
  ``(B, P, K, T)`` routing problem over each window's shared ``û``.

:func:`readout` turns interests into the one training vector per target:
hard argmax (ComiRec) or label-aware attention with power p (MIND).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from recall_core.native import torch as load_torch

torch = load_torch()
nn = torch.nn
F = torch.nn.functional
Tensor = torch.Tensor
EXTRACTORS = ("sa", "dr", "mind")


@dataclass(frozen=True)
class InterestSpec:
    num_items: int  # catalogue size N; the embedding table has N + 1 rows (0 = padding)
    extractor: str = "sa"  # "sa" | "dr" | "mind"
    max_len: int = 20  # the ComiRec reference reads the last 20 items
    dim: int = 64
    interests: int = 4  # K
    routing_iterations: int = 3
    adaptive: bool = False  # MIND: K'_u = max(1, min(K, floor(log2 |I_u|)))
    dropout: float = 0.0  # on the history's item embeddings (the references use none)
    routing_init_std: float = 1.0  # MIND's Gaussian routing logits
    seed: int = 0  # draws MIND's fixed eval-time routing logits
    position_maps: bool = False  # dr: one bilinear map per (window position, interest)

    def to_dict(self) -> dict:
        return asdict(self)


def adaptive_interest_count(lengths: Tensor, interests: int) -> Tensor:
    """MIND's K'_u = max(1, min(K, ⌊log2 |I_u|⌋)) for history lengths (any shape)."""
    logs = torch.floor(torch.log2(lengths.clamp(min=1).double())).long()
    return logs.clamp(min=1, max=interests)


def squash(s: Tensor, eps: float = 1e-9) -> Tensor:
    """Capsule non-linearity ``|s|² / (1 + |s|²) · s / |s|`` over the last axis."""
    norm2 = (s * s).sum(-1, keepdim=True)
    return norm2 / (1 + norm2) * s / torch.sqrt(norm2 + eps)


class SelfAttentiveExtractor(nn.Module):
    """ComiRec-SA: ``A = softmax_t(W2 tanh(W1 (e_t + p_t)))``, interests ``A^T E``."""

    def __init__(self, spec: InterestSpec) -> None:
        super().__init__()
        self.position_embedding = nn.Embedding(spec.max_len, spec.dim)
        self.hidden = nn.Linear(spec.dim, 4 * spec.dim)  # the reference's 4d hidden layer
        self.heads = nn.Linear(4 * spec.dim, spec.interests)

    def logits(self, embedded: Tensor) -> Tensor:
        """Attention logits ``(B, T, K)`` of every position for every interest head."""
        length = embedded.shape[1]
        h = torch.tanh(self.hidden(embedded + self.position_embedding.weight[:length]))
        return self.heads(h)

    def attention(self, embedded: Tensor, padding: Tensor) -> Tensor:
        """Whole-sequence attention ``(B, K, T)``: softmax over real positions, padding 0."""
        logits = self.logits(embedded).masked_fill(padding[:, :, None], float("-inf"))
        return torch.softmax(logits, dim=1).nan_to_num(0.0).transpose(1, 2)

    def prefix_interests(self, embedded: Tensor, padding: Tensor, ends: Tensor) -> Tensor:
        """Interests ``(B, P, K, d)`` of the prefixes ``[b, :ends[b, p] + 1]``."""
        logits = self.logits(embedded).masked_fill(padding[:, :, None], float("-inf"))  # (B, T, K)
        # float64 cumulative softmax: exp(a - max) cannot underflow for any prefix
        # whose logits are within ~700 of the window's maximum.
        peak = logits.amax(dim=1, keepdim=True).clamp(min=-1e30)  # (B, 1, K)
        weights = torch.exp((logits - peak).double())  # (B, T, K), padding -> 0
        numerator = torch.cumsum(weights[..., None] * embedded.double()[:, :, None, :], dim=1)
        denominator = torch.cumsum(weights, dim=1)[..., None].clamp(min=1e-300)  # (B, T, K, 1)
        batch = torch.arange(len(ends))[:, None]  # (B, 1) broadcast against ends (B, P)
        at = ends.clamp(min=0)
        return (numerator[batch, at] / denominator[batch, at]).to(embedded.dtype)


class RoutingExtractor(nn.Module):
    """Behaviour-to-interest dynamic routing (capsules).

    ``dr``: one bilinear map per interest, routing logits start at zero; with
    ``position_maps`` one map per window position and interest, as the ComiRec
    reference's DR (its ``bilinear_type=2``: a ``(T, K·d, d)`` weight), so an
    item's route depends on where it sits in the window (recency).
    ``mind``: one shared map, Gaussian routing logits (resampled every training
    forward; in eval a fixed draw kept in the state dict, so serving is
    deterministic), a ReLU layer on the capsules as in the MIND reference.
    Gradients flow through the last routing iteration only.
    """

    def __init__(self, spec: InterestSpec) -> None:
        super().__init__()
        self.spec = spec
        maps = 1 if spec.extractor == "mind" else spec.interests
        # (maps, d, d), or (T, maps, d, d) with position maps (the older shape stays, so
        # artifacts trained without position maps keep loading).
        shape = ((spec.max_len,) if spec.position_maps and spec.extractor == "dr" else ()) + (
            maps, spec.dim, spec.dim)
        self.bilinear = nn.Parameter(torch.randn(shape) / math.sqrt(spec.dim))
        generator = torch.Generator().manual_seed(spec.seed)
        self.register_buffer("eval_logits", spec.routing_init_std * torch.randn(
            spec.interests, spec.max_len, generator=generator))
        self.output = nn.Linear(spec.dim, spec.dim) if spec.extractor == "mind" else None

    def initial_logits(self, batch: int, prefixes: int, length: int) -> Tensor:
        """Routing logits ``(B, P, K, T)`` before the first iteration."""
        shape = (batch, prefixes, self.spec.interests, length)
        if self.spec.extractor != "mind":
            return torch.zeros(shape)
        if self.training:
            return self.spec.routing_init_std * torch.randn(shape)
        return self.eval_logits[:, :length].expand(shape)

    def prefix_interests(self, embedded: Tensor, padding: Tensor, ends: Tensor,
                         valid: Tensor) -> Tensor:
        """Capsules ``(B, P, K, d)`` of the prefixes; ``valid (B, P, K)`` masks unused interests."""
        batch, length, _ = embedded.shape
        # û: (B, T, d) x (maps, d, d) -> (B, maps, T, d); maps = 1 (mind) or K (dr).
        if self.bilinear.dim() == 3:
            u_hat = torch.einsum("btd,ked->bkte", embedded, self.bilinear)
        else:  # position-specific maps: position t's item goes through map t
            u_hat = torch.einsum("btd,tked->bkte", embedded, self.bilinear[:length])
        behaviours = (torch.arange(length) <= ends[:, :, None]) & ~padding[:, None, :]  # (B, P, T)
        logits = self.initial_logits(batch, ends.shape[1], length)  # (B, P, K, T)
        # Finite, not -inf: a prefix with no valid interest (ends = -1) must give zeros, not NaN.
        blocked = ~valid[..., None]  # (B, P, K, 1)
        for iteration in range(self.spec.routing_iterations):
            last = iteration == self.spec.routing_iterations - 1
            u = u_hat if last else u_hat.detach()  # stop-gradient through the early iterations
            # Each behaviour spreads over the valid interests (softmax over K).
            w = torch.softmax(logits.masked_fill(blocked, -1e9), dim=2)
            w = w * behaviours[:, :, None, :]  # (B, P, K, T)
            capsules = squash(_route(w, u))  # (B, P, K, d)
            if not last:
                logits = logits + _agreement(u, capsules)
        if self.output is not None:
            capsules = F.relu(self.output(capsules))
        return capsules


def _route(w: Tensor, u: Tensor) -> Tensor:
    """Σ_t w[b,p,k,t] û[b,k,t]: ``(B, P, K, T)`` x ``(B, maps, T, d)`` -> ``(B, P, K, d)``."""
    if u.shape[1] == 1:  # one shared map: û does not depend on the interest
        return torch.einsum("bpkt,bte->bpke", w, u[:, 0])
    return torch.einsum("bpkt,bkte->bpke", w, u)


def _agreement(u: Tensor, capsules: Tensor) -> Tensor:
    """Routing logit update <û[b,k,t], c[b,p,k]>: ``(B, P, K, T)``."""
    if u.shape[1] == 1:
        return torch.einsum("bte,bpke->bpkt", u[:, 0], capsules)
    return torch.einsum("bkte,bpke->bpkt", u, capsules)


class MultiInterestModel(nn.Module):
    """Item embeddings plus one interest extractor; ``K`` interest vectors per sequence."""

    def __init__(self, spec: InterestSpec) -> None:
        super().__init__()
        if spec.extractor not in EXTRACTORS:
            raise ValueError(f"unknown extractor {spec.extractor!r} (choose from {EXTRACTORS})")
        self.spec = spec
        self.item_embedding = nn.Embedding(spec.num_items + 1, spec.dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=1.0 / math.sqrt(spec.dim))
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.dropout = nn.Dropout(spec.dropout)
        self.extractor = (SelfAttentiveExtractor(spec) if spec.extractor == "sa"
                          else RoutingExtractor(spec))

    def item_vectors(self) -> Tensor:
        """The item tower ``(N, d)``: row j = item j (padding row left out)."""
        return self.item_embedding.weight[1:]

    def interest_mask(self, prefix_lengths: Tensor) -> Tensor:
        """Bool ``(..., K)``: which interests a history of these lengths uses."""
        k = self.spec.interests
        counts = (adaptive_interest_count(prefix_lengths, k) if self.spec.adaptive
                  else torch.full_like(prefix_lengths, k))
        return torch.arange(k) < counts[..., None]

    def prefix_interests(self, inputs: Tensor, ends: Tensor) -> tuple[Tensor, Tensor]:
        """Interests ``(B, P, K, d)`` and mask ``(B, P, K)`` of prefixes ``inputs[b, :ends[b, p] + 1]``.

        ``ends`` ``(B, P)`` holds the last position of each prefix (-1 = none).
        """
        if inputs.shape[1] > self.spec.max_len:
            raise ValueError(f"sequence of {inputs.shape[1]} exceeds max_len {self.spec.max_len}")
        padding = inputs == 0  # (B, T)
        embedded = self.dropout(self.item_embedding(inputs))  # (B, T, d)
        valid = self.interest_mask(ends + 1) & (ends >= 0)[..., None]  # (B, P, K)
        if isinstance(self.extractor, SelfAttentiveExtractor):
            interests = self.extractor.prefix_interests(embedded, padding, ends)
        else:
            interests = self.extractor.prefix_interests(embedded, padding, ends, valid)
        return interests * valid[..., None], valid

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Interests ``(B, K, d)`` and mask ``(B, K)`` of whole right-padded sequences."""
        if not isinstance(self.extractor, SelfAttentiveExtractor):
            interests, valid = self.prefix_interests(inputs, (lengths - 1)[:, None])
            return interests[:, 0], valid[:, 0]
        # Serving path of SA: one masked softmax, no cumulative sums over prefixes.
        embedded = self.dropout(self.item_embedding(inputs))  # (B, T, d)
        weights = self.extractor.attention(embedded, inputs == 0)  # (B, K, T)
        valid = self.interest_mask(lengths) & (lengths > 0)[:, None]  # (B, K)
        interests = torch.einsum("bkt,btd->bkd", weights, embedded)
        return interests * valid[..., None], valid


def readout(interests: Tensor, valid: Tensor, targets: Tensor, power: float = math.inf) -> Tensor:
    """One user vector ``(M, d)`` per target from its interests ``(M, K, d)``.

    Label-aware attention: weights ``softmax(p · <v_k, e_target>)`` over the
    valid interests, i.e. ``(e^{s_k})^p`` normalised — MIND's power p applied to
    positive similarities. p = 0 averages the interests, p = 1 is a softmax,
    p = inf (or large) is ComiRec's hard readout: the interest closest to the target.
    """
    scores = torch.einsum("mkd,md->mk", interests, targets)
    scores = scores.masked_fill(~valid, float("-inf"))
    if math.isinf(power):
        chosen = scores.argmax(dim=1)
        return interests[torch.arange(len(interests)), chosen]
    weights = torch.softmax(power * scores, dim=1)  # (M, K)
    return torch.einsum("mk,mkd->md", weights, interests)
