"""The attentive probe: one learned query cross-attending over a video's clip tokens, then a
linear head; the frozen-feature evaluation of V-JEPA, V-JEPA 2 and InternVideo2.

Tokens are the clip vectors (B, S, F), each plus an MLP embedding of its box when ``boxes`` is
on (the raw-feature row; the SCALE row's contextualised tokens already carry their boxes),
optionally passed through ``blocks`` pre-LN self-attention blocks first. Then one
cross-attention block: the query attends over the LayerNorm'd tokens (``heads`` heads, padded
clips masked out), the result is added to the query, an MLP block follows, and a linear head
reads the LayerNorm'd pooled vector: one output per video, (B, 1, C), the layout of the set
probes' ``set`` head, so the set probes' loss, view averaging and grid trainer apply unchanged.

With a single query the attention needs no per-token key or value projection: the score of
token x_i in head h is q_h . (W_k^h x_i + b_k^h) = (W_k^h^T q_h) . x_i + q_h . b_k^h, and the
output is W_v^h (sum_i a_hi x_i) + b_v^h since the weights a_hi sum to one. That is the same
function as projecting every token (checked against ``nn.MultiheadAttention`` in the tests) at
O(heads * F) per token instead of O(F^2), which is what keeps the probe cheap on a CPU.

Shapes: B videos, S clips, F token width, h heads, C outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from scalevid.model import BOX_DIM, Block, Dropout


@dataclass(frozen=True)
class AttentiveConfig:
    """The attentive probe's architecture. ``blocks``: self-attention blocks over the tokens
    before the pooling (0 = the pooling block alone, depth 1); ``boxes``: add an MLP embedding of
    each clip's box to its token; ``heads`` must divide the token width."""

    heads: int = 16
    mlp_ratio: float = 2.0
    blocks: int = 0
    boxes: bool = True
    box_hidden: int = 64

    def __post_init__(self) -> None:
        if self.heads < 1 or self.blocks < 0 or self.mlp_ratio <= 0 or self.box_hidden < 1:
            raise ValueError("attentive probe: heads >= 1, blocks >= 0, mlp_ratio > 0")


def _heads_for(width: int, heads: int) -> int:
    """The largest head count <= `heads` that divides `width`."""
    return next(h for h in range(min(heads, width), 0, -1) if width % h == 0)


class AttentivePooling(nn.Module):
    """One query cross-attending over tokens: (B, S, F) tokens, (B, S) valid -> (B, F)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(width))
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, s, f = tokens.shape
        h, d = self.heads, f // self.heads
        q = self.query.view(h, d)  # (h, d)
        w_k = self.key.weight.view(h, d, f)  # rows of head h's key projection
        u = torch.einsum("hd,hdf->hf", q, w_k)  # (h, F): W_k^h^T q_h
        offset = (q * self.key.bias.view(h, d)).sum(dim=1)  # (h,): q_h . b_k^h
        scores = (torch.einsum("bsf,hf->bhs", tokens, u) + offset[None, :, None]) / math.sqrt(d)
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))  # (B, h, S)
        attn = scores.softmax(dim=-1)  # (B, h, S)
        mixed = torch.einsum("bhs,bsf->bhf", attn, tokens)  # (B, h, F): sum_i a_hi x_i
        w_v = self.value.weight.view(h, d, f)
        out = torch.einsum("bhf,hdf->bhd", mixed, w_v) + self.value.bias.view(h, d)  # (B, h, d)
        return self.proj(out.reshape(b, f))  # (B, F)


class AttentiveProbe(nn.Module):
    """Tokens (+ box embedding) -> [self-attention blocks] -> query pooling block -> linear."""

    def __init__(
        self,
        config: AttentiveConfig,
        *,
        in_dim: int,
        out_dim: int,
        dropout: float,
        task: str,
    ) -> None:
        super().__init__()
        self.task = task
        self.config = config
        heads = _heads_for(in_dim, config.heads)
        self.box_embed = None
        if config.boxes:
            self.box_embed = nn.Sequential(
                nn.Linear(BOX_DIM, config.box_hidden),
                nn.GELU(),
                nn.Linear(config.box_hidden, in_dim),
            )
        self.blocks = nn.ModuleList(
            Block(in_dim, heads, config.mlp_ratio, dropout) for _ in range(config.blocks)
        )
        self.norm_in = nn.LayerNorm(in_dim)
        self.norm_tokens = nn.LayerNorm(in_dim)
        self.pool = AttentivePooling(in_dim, heads)
        self.norm_mlp = nn.LayerNorm(in_dim)
        hidden = int(in_dim * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, in_dim))
        self.norm_out = nn.LayerNorm(in_dim)
        self.drop = Dropout(dropout)  # the predictor's: a cheaper mask on a CPU
        self.head = nn.Linear(in_dim, out_dim)
        self.apply(_init)
        nn.init.normal_(self.pool.query, std=0.02)
        if self.box_embed is not None:  # torch's default init: an O(1) box signal from the start
            for layer in self.box_embed:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def forward(
        self, features: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """features (B, S, F), boxes (B, S, 7), valid (B, S) bool -> outputs (B, 1, C)."""
        x = self.norm_in(features)  # (B, S, F): features of any scale, next to the box embedding
        if self.box_embed is not None:
            x = x + self.box_embed(boxes)  # (B, S, F)
        mask = valid[:, None, None, :]  # (B, 1, 1, S)
        for block in self.blocks:
            x = block(x, mask)
        pooled = self.pool.query + self.pool(self.norm_tokens(x), valid)  # (B, F)
        pooled = pooled + self.mlp(self.norm_mlp(pooled))  # (B, F)
        return self.head(self.drop(self.norm_out(pooled)))[:, None]  # (B, 1, C)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
