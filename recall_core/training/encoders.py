"""Causal self-attention sequence encoder (SASRec, Kang & McAuley ICDM'18), nanoGPT style.

The encoder reads right-padded item sequences (input id = item + 1, 0 =
padding) and returns one hidden vector per position; position t's vector is the
user representation after t + 1 items. Its item embedding table doubles as the
item tower: an item's vector is its input embedding (weight tying, as in SASRec).

Two hooks let other sources adapt the encoder without copying it (dnc_ebr's
prompt-like task embeddings):

- ``input_transform``: a function applied to the item embeddings ``(B, T, d)``
  before positions are added, e.g. ``lambda e: e * task[:, None, :]`` for the
  ``[s_1 ⊙ t_k, …, s_n ⊙ t_k]`` variant;
- ``prefix``: ``(B, P, d)`` vectors prepended as extra tokens (the prefix-token
  variant); every item position attends to them, their outputs are dropped.
  ``EncoderSpec.prefix_tokens`` reserves their position embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from recall_core.native import torch as load_torch

torch = load_torch()
nn = torch.nn
F = torch.nn.functional
Tensor = torch.Tensor


@dataclass(frozen=True)
class EncoderSpec:
    num_items: int  # catalogue size N; the embedding table has N + 1 rows (0 = padding)
    max_len: int = 200  # longest sequence read; sets the position table
    dim: int = 64
    layers: int = 2
    heads: int = 1  # ML-1M-scale data gains nothing from more heads (SASRec paper)
    dropout: float = 0.2  # embeddings and residual branches
    attention_dropout: float = 0.0  # on attention weights; > 0 leaves SDPA's fused kernel (slow on CPU)
    prefix_tokens: int = 0  # extra leading tokens a caller may prepend (task prompts)

    def to_dict(self) -> dict:
        return asdict(self)


def rows_at(x: Tensor, at: Tensor) -> Tensor:
    """``x[arange(B), at]``: row b's vector at position ``at[b]``, ``(B, T, d) -> (B, d)``.

    A gather rather than an ``arange(len(x))`` index, whose batch size a traced graph
    would freeze (:mod:`recall_core.training.inference` traces the serving encoders).
    """
    return x.gather(1, at[:, None, None].expand(-1, 1, x.shape[2])).squeeze(1)


class CausalSelfAttention(nn.Module):
    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.heads = spec.heads
        self.qkv = nn.Linear(spec.dim, 3 * spec.dim)
        self.proj = nn.Linear(spec.dim, spec.dim)
        self.attention_dropout = spec.attention_dropout
        self.residual_dropout = nn.Dropout(spec.dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)  # 3 x (B, T, d)
        # (B, T, d) -> (B, heads, T, d / heads)
        q, k, v = (t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        # Causal: position t sees positions <= t only, so right padding is never attended to.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.attention_dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(batch, length, dim)  # back to (B, T, d)
        return self.residual_dropout(self.proj(y))

    def forward_at(self, x: Tensor, at: Tensor) -> Tensor:
        """The output ``(B, d)`` at one position per row (``at`` ``(B,)``), causally.

        Row b's query is position ``at[b]`` only, attending to positions ``<= at[b]``:
        the same numbers as ``forward(x)[arange(B), at]`` without projecting the other
        queries — what the user vector of a served request needs from the last block.
        """
        batch, length, dim = x.shape
        heads, width = self.heads, dim // self.heads
        weight, bias = self.qkv.weight, self.qkv.bias
        query = F.linear(rows_at(x, at), weight[:dim], bias[:dim])  # (B, d)
        key, value = F.linear(x, weight[dim:], bias[dim:]).split(dim, dim=2)  # 2 x (B, T, d)
        query = query.view(batch, heads, 1, width)
        key, value = (t.view(batch, length, heads, width).transpose(1, 2) for t in (key, value))
        visible = torch.arange(length) <= at[:, None]  # (B, T): the causal row of at[b]
        y = F.scaled_dot_product_attention(query, key, value, attn_mask=visible[:, None, None, :])
        return self.residual_dropout(self.proj(y.reshape(batch, dim)))


class FeedForward(nn.Module):
    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.up = nn.Linear(spec.dim, 4 * spec.dim)
        self.down = nn.Linear(4 * spec.dim, spec.dim)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(spec.dim)
        self.attention = CausalSelfAttention(spec)
        self.norm_ffn = nn.LayerNorm(spec.dim)
        self.ffn = FeedForward(spec)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm_attention(x))
        return x + self.ffn(self.norm_ffn(x))

    def forward_at(self, x: Tensor, at: Tensor) -> Tensor:
        """``forward(x)[arange(B), at]`` ``(B, d)``, computing only those positions' outputs."""
        rows = rows_at(x, at) + self.attention.forward_at(self.norm_attention(x), at)
        return rows + self.ffn(self.norm_ffn(rows))


class SequenceEncoder(nn.Module):
    """Item + position embeddings, causal self-attention blocks, final layer norm."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.item_embedding = nn.Embedding(spec.num_items + 1, spec.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(spec.max_len + spec.prefix_tokens, spec.dim)
        self.embedding_dropout = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.layers))
        self.norm = nn.LayerNorm(spec.dim)
        self.apply(_init_weights)

    def item_vectors(self) -> Tensor:
        """The item tower: ``(N, d)``, row j = item j (the padding row left out)."""
        return self.item_embedding.weight[1:]

    def forward(self, inputs: Tensor, input_transform: Callable[[Tensor], Tensor] | None = None,
                prefix: Tensor | None = None) -> Tensor:
        """Hidden states ``(B, T, d)`` of right-padded ``inputs`` ``(B, T)`` (ids + 1)."""
        x, n_prefix = self._embed(inputs, input_transform, prefix)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, n_prefix:]  # drop the prefix outputs: (B, T, d)

    def encode_last(self, inputs: Tensor, lengths: Tensor,
                    input_transform: Callable[[Tensor], Tensor] | None = None,
                    prefix: Tensor | None = None) -> Tensor:
        """The user vector ``(B, d)``: hidden state at each row's last real position.

        Equal to ``forward(...)[arange(B), lengths - 1]``, but the last block computes
        only that position (its keys and values still cover the whole prefix): with two
        blocks that is about 40% less work per served user.
        """
        x, n_prefix = self._embed(inputs, input_transform, prefix)
        for block in self.blocks[:-1]:
            x = block(x)
        last = (lengths - 1).clamp(min=0) + n_prefix
        if not len(self.blocks):
            return self.norm(rows_at(x, last))
        return self.norm(self.blocks[-1].forward_at(x, last))

    def _embed(self, inputs: Tensor, input_transform: Callable[[Tensor], Tensor] | None,
               prefix: Tensor | None) -> tuple[Tensor, int]:
        """Scaled item (+ prefix) embeddings plus positions ``(B, P + T, d)``, and P."""
        batch, length = inputs.shape
        n_prefix = 0 if prefix is None else prefix.shape[1]
        if length > self.spec.max_len or n_prefix > self.spec.prefix_tokens:
            raise ValueError(f"sequence of {length} (+{n_prefix} prefix) exceeds max_len "
                             f"{self.spec.max_len} (+{self.spec.prefix_tokens} prefix tokens)")
        x = self.item_embedding(inputs)  # (B, T, d)
        if input_transform is not None:
            x = input_transform(x)
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)  # (B, P + T, d)
        x = x * math.sqrt(self.spec.dim)
        x = x + self.position_embedding.weight[: n_prefix + length]  # broadcast over B
        return self.embedding_dropout(x), n_prefix


def _init_weights(module: nn.Module) -> None:
    # Small normal init (GPT-2): keeps initial logits near zero under weight tying.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class IntentHead(nn.Module):
    """Causal group classifier: logits ``(B, T, K)`` over K item groups at every position.

    Reads position t's item embedding and the mean of the embeddings up to t
    (both causal, so right padding never leaks in), independent of any task
    prompt: one cheap pass gives p(next item's group | history) for every
    position, which dnc_ebr's intent quota needs before it knows the task.
    """

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(2 * dim, dim)
        self.out = nn.Linear(dim, groups)

    def forward(self, item_embeddings: Tensor) -> Tensor:
        steps = torch.arange(1, item_embeddings.shape[1] + 1, device=item_embeddings.device)
        mean = item_embeddings.cumsum(dim=1) / steps[None, :, None]  # (B, T, d) causal mean
        features = torch.cat([item_embeddings, mean], dim=-1)  # (B, T, 2d)
        return self.out(F.gelu(self.hidden(features)))  # (B, T, K)
