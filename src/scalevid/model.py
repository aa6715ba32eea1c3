"""The SCALE predictor: a small transformer over a *set* of clip features of one video.

Every clip token is `proj(feature) + box_mlp(box)`; a masked clip has its projected feature
replaced by the learned MSK token *before* the box embedding is added, so the model knows where
the missing clip is. A learned SET token (no box) is prepended. There is no positional encoding
other than the boxes, so the model is permutation-equivariant over clips and the SET output is
permutation-invariant.

Shapes: B videos, N clips per set, D feature dim, H hidden dim, E embedding dim of the heads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalevid.folders import CONFIG, LAST_CHECKPOINT, WEIGHTS
from scalevid.store.layout import BOX_DIM

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Hyperparameters of the predictor; stored inside every checkpoint (config.json)."""

    input_dim: int = 768
    hidden: int = 256
    depth: int = 2
    heads: int = 8
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    set_head: tuple[int, ...] = (4096, 128)
    pred_head: tuple[int, ...] = (4096, 128)
    target_head: tuple[int, ...] = (2048, 2048, 128)
    # Initial weights. "release": the authors' release, i.e. torch's default Linear init
    # (uniform, scale 1/sqrt(fan_in)) and zero MSK / SET tokens. "trunc_normal": every Linear
    # weight from a normal with std 0.02 truncated at +-2 std, zero biases, tokens with std 0.02
    # (which makes the box MLP's first layer ~10x smaller at the start). See docs/method.md.
    init: Literal["release", "trunc_normal"] = "release"

    def __post_init__(self) -> None:
        if self.init not in ("release", "trunc_normal"):
            raise ValueError(f"init must be 'release' or 'trunc_normal', got {self.init!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        ends = {self.set_head[-1], self.pred_head[-1], self.target_head[-1]}
        if len(ends) != 1:
            raise ValueError(
                f"set, pred and target heads must end in one embedding size, got {ends}"
            )
        # YAML/JSON give lists; keep tuples so configs compare equal after a round trip.
        self.set_head = tuple(self.set_head)
        self.pred_head = tuple(self.pred_head)
        self.target_head = tuple(self.target_head)

    @property
    def embed_dim(self) -> int:
        """E, the size every head ends in."""
        return self.set_head[-1]

    def to_dict(self) -> dict:
        """The fields as plain values (what config.json stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """The config stored by `to_dict`; unknown keys are an error, missing ones default."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**d)


def projection_head(in_dim: int, dims: tuple[int, ...]) -> nn.Sequential:
    """Bias-free MLP with GELU between layers and no normalisation (the reference heads)."""
    layers: list[nn.Module] = []
    for i, out_dim in enumerate(dims):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Linear(in_dim, out_dim, bias=False))
        in_dim = out_dim
    return nn.Sequential(*layers)


class Dropout(nn.Module):
    """Dropout whose CPU path draws its keep-mask 4x cheaper than `nn.Dropout`.

    On CPU, `bernoulli_` spends one 32-bit Mersenne-Twister draw per element (about 10% of a
    training step at the Table 1 setting); here each 64-bit draw gives four 16-bit lanes, each
    kept when above round(p * 65536) / 65536 of its range, so the drop probability is p to within
    1 / 131072. The mask is applied as a product with a float mask holding 1 / (1 - p) or 0
    (the values of `torch.where(keep, x / (1 - p), 0)`, up to the sign of a dropped zero; CPU
    `where` is ~6x slower than a product). On other devices (whose dropout kernels are already
    fast) this is `F.dropout`. Randomness comes from the default generator, as with
    `nn.Dropout`.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        # (ceil(n / 4),) random 64-bit words, four 16-bit lanes each
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        lanes = words.view(torch.int16)[:n].view(x.shape)  # x's shape, 16 random bits each
        keep = lanes >= -32768 + round(self.p * 65536)  # x's shape, bool
        scale = keep.to(torch.float32) * (1.0 / (1.0 - self.p))  # x's shape: 1/(1-p) or 0
        return (x * scale).to(x.dtype)  # a half-precision x is scaled in float32, as F.dropout does

    def extra_repr(self) -> str:
        return f"p={self.p}"


# Up to this many tokens a set is short: on a CPU, in bf16 or fp16, attention as explicit
# products beats torch's fused kernel there (benchmarks/attention_cpu.py).
SHORT_SET_TOKENS = 128


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: Dropout,
) -> torch.Tensor:
    """Scaled dot-product attention over q, k, v (B, heads, n, d) with a key mask (B, 1, 1, n)
    bool (True = attend; every row must keep a key) -> (B, heads, n, d); `dropout` (applied in
    training) drops attention weights.

    On a CPU, for a short set (n <= SHORT_SET_TOKENS) in half precision (bf16 autocast): the two
    products in that precision and the softmax in float32, with `Dropout`'s cheaper mask. There
    torch's fused kernel (`F.scaled_dot_product_attention`) is slower: a 9-token step forward and
    backward takes ~1.4x as long, and ~2-9x as long without dropout. Elsewhere (fp32, long sets,
    other devices) the fused kernel.
    """
    n = q.shape[-2]
    reduced = q.dtype in (torch.bfloat16, torch.float16)
    if q.device.type != "cpu" or not reduced or n > SHORT_SET_TOKENS:
        p = dropout.p if dropout.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, heads, n, n)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = dropout(scores.float().softmax(dim=-1))  # (B, heads, n, n) float32
    return weights.to(v.dtype) @ v  # (B, heads, n, d)


class Block(nn.Module):
    """Pre-LayerNorm transformer block (attention: `attention`)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = Dropout(dropout)
        self.attn_drop = Dropout(dropout)  # on the attention weights

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, n, H); attn_mask (B, 1, 1, n) bool, True = attend, or None -> (B, n, H)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, n, d/heads)
        a = attention(q, k, v, attn_mask, self.attn_drop)  # (B, heads, n, d/heads)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


@dataclass
class ScaleOutput:
    """What the predictor returns for a batch of clip sets, after the final LayerNorm."""

    clips: torch.Tensor  # (B, N, H) contextualised clip tokens
    set: torch.Tensor  # (B, H) SET token output


class ScaleModel(nn.Module):
    """Predictor transformer plus its three heads (SET, prediction, target)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.weights_step: int | None = None  # the training step of loaded weights, if known
        h = config.hidden
        self.input_proj = nn.Linear(config.input_dim, h)
        self.box_embed = nn.Sequential(nn.Linear(BOX_DIM, 2 * h), nn.ReLU(), nn.Linear(2 * h, h))
        self.msk_token = nn.Parameter(torch.zeros(1, 1, h))
        self.set_token = nn.Parameter(torch.zeros(1, 1, h))
        self.blocks = nn.ModuleList(
            Block(h, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(h)
        self.set_head = projection_head(h, config.set_head)
        self.pred_head = projection_head(h, config.pred_head)
        self.target_head = projection_head(config.input_dim, config.target_head)
        if config.init == "trunc_normal":
            self.apply(self._init_weights)
            nn.init.normal_(self.msk_token, std=0.02)
            nn.init.normal_(self.set_token, std=0.02)
        # "release": the modules' own defaults, as constructed (tokens stay zero)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(
        self,
        features: torch.Tensor,
        boxes: torch.Tensor,
        valid: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> ScaleOutput:
        """Contextualise a batch of clip sets.

        features (B, N, D) float; boxes (B, N, 7); valid (B, N) bool, True for real clips (None:
        all real); masked (B, N) bool, True where the clip's feature is hidden behind MSK.
        Returns clip tokens (B, N, H) and the SET output (B, H), both after the final LayerNorm.
        """
        b, n, _ = features.shape
        x = self.input_proj(features)  # (B, N, H)
        if masked is not None:
            x = torch.where(masked.unsqueeze(-1), self.msk_token.to(x.dtype), x)
        x = x + self.box_embed(boxes.to(x.dtype))  # (B, N, H)
        x = torch.cat([self.set_token.expand(b, -1, -1).to(x.dtype), x], dim=1)  # (B, 1+N, H)
        attn_mask = None
        if valid is not None:
            keep = torch.cat([valid.new_ones(b, 1), valid], dim=1)  # (B, 1+N)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, 1+N): True = attend
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.norm(x)  # (B, 1+N, H)
        return ScaleOutput(clips=x[:, 1:], set=x[:, 0])

    @torch.no_grad()
    def embed(
        self,
        features: torch.Tensor | np.ndarray,
        boxes: torch.Tensor | np.ndarray,
        valid: torch.Tensor | np.ndarray | None = None,
    ) -> ScaleOutput:
        """Inference: contextualised clip tokens (B, N, H) and SET output (B, H).

        features (B, N, D) or (N, D) for one video; boxes matching with 7 columns; `valid`
        (B, N) bool marks the real clips (False = padding), as in `forward`; None = all valid.
        Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        device = next(self.parameters()).device
        feats = torch.as_tensor(features, device=device).float()  # (B, N, D) or (N, D)
        bx = torch.as_tensor(boxes, device=device).float()  # (B, N, 7) or (N, 7)
        single = feats.ndim == 2
        if single:
            feats, bx = feats[None], bx[None]
        valid = None if valid is None else torch.as_tensor(valid, device=device).bool()
        if valid is not None and single:
            valid = valid[None]
        was_training = self.training
        self.eval()
        try:
            out = self(feats, bx, valid=valid)
        finally:
            self.train(was_training)
        if single:
            return ScaleOutput(clips=out.clips[0], set=out.set[0])
        return out

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, map_location: str | torch.device = "cpu"
    ) -> ScaleModel:
        """Rebuild a model from a run folder, a checkpoint folder or a `.safetensors` file.

        The config is read from the `config.json` beside the weights; nothing is unpickled.
        """
        from safetensors.torch import load_file

        weights, config_path = _resolve_checkpoint(Path(path))
        fix = "the file is damaged: restore it, or use another run or checkpoint folder"
        try:
            config = json.loads(config_path.read_text())
            model = cls(ModelConfig.from_dict(config.get("model", config)))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{config_path}: not a readable model config ({e}); {fix}") from None
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as e:  # safetensors raises its own error type for a damaged header
            raise ValueError(f"{weights}: not a readable safetensors file ({e}); {fix}") from None
        model.load_state_dict(state)
        model.eval()
        step = config.get("step")
        model.weights_step = step if isinstance(step, int) and not isinstance(step, bool) else None
        logger.info("loaded %s (weights of training step %s)", weights, model.weights_step)
        return model


def _resolve_checkpoint(path: Path) -> tuple[Path, Path]:
    """Find (weights.safetensors, config.json) from a run dir, checkpoint dir or file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or checkpoint")
    weights = path if path.is_file() else path / WEIGHTS
    if weights.is_file() and (weights.parent / CONFIG).is_file():
        return weights, weights.parent / CONFIG
    if (path / LAST_CHECKPOINT / WEIGHTS).is_file():
        # A run folder without its final weights is still training (or was stopped): its
        # checkpoint, of some step, is used only when named.
        raise FileNotFoundError(
            f"{path} has no final {WEIGHTS}: the run is still training or was stopped; wait "
            f"for it to finish, or pass {path / LAST_CHECKPOINT} to use its last checkpoint"
        )
    raise FileNotFoundError(
        f"{path}: no model.safetensors with a config.json beside it; pass a run folder written "
        "by `scalevid train`, one of its checkpoints/ folders, or a model.safetensors file"
    )
