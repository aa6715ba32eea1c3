"""The SCALE pretext task for one batch: draw two disjoint clip sets per video, mask clips, run
the predictor and heads, and compute the MCM and SET losses.

Everything here is batched tensor code on the batch's device: no Python loop over videos and no
host synchronisation. The prediction head runs, and MCM logits are scored, only at masked clips
(output sparsity). Their number varies from step to step; instead of `nonzero` (whose result size
the host would have to wait for) the step takes a fixed number of positions, a bound that the
masked count exceeds with probability below 1e-9, and the unused rows count for nothing
(`masked_capacity`, `masked_positions`).

`shuffle_valid_first` (argsort of noise, padding last) is scalevid's one view sampler: the clip
sets here and the training views of every probe in `scalevid.eval` are prefixes of its order.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scalevid.distributed import Gather
from scalevid.losses import MaskedClipLoss, SetLoss
from scalevid.model import ScaleModel


@dataclass
class PretextConfig:
    """The self-supervised objective; part of the training config."""

    num_views: int = 8  # clips per set; two disjoint sets are drawn per video
    mask_ratio: float = 0.25
    temperature: float = 0.2
    mcm_weight: float = 1.0
    set_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("mcm_weight", "set_weight"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(
                    f"pretext.{name} (--{name.replace('_', '-')}) must be >= 0 (0 switches that "
                    f"loss off), got {getattr(self, name)}"
                )
        if not self.temperature > 0:
            raise ValueError(f"pretext.temperature must be positive, got {self.temperature}")
        if self.mcm_weight <= 0 and self.set_weight <= 0:
            raise ValueError("at least one of mcm_weight and set_weight must be positive")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {self.num_views}")


def shuffle_valid_first(noise: torch.Tensor, num_valid: torch.Tensor) -> torch.Tensor:
    """Each row's slots in random order, the valid ones first: the one view sampler of scalevid.

    noise (B, K) uniform in [0, 1), drawn by the caller (so each caller keeps its own generator
    and draw order); num_valid (B,) int: the first num_valid[i] slots of row i are valid.
    Returns order (B, K) int64, a permutation of the K slots per row: the valid slots, shuffled
    by the argsort of their noise, then the padding slots (their noise is replaced by 2.0, above
    any uniform draw). Taking a prefix of `order` draws valid slots without replacement, as
    MAE's `random_masking` does with its argsort of noise.
    """
    slots = torch.arange(noise.shape[1], device=noise.device)  # (K,)
    padding = slots[None, :] >= num_valid[:, None]  # (B, K)
    return noise.masked_fill(padding, 2.0).argsort(dim=1)  # (B, K)


def sample_clip_sets(
    num_clips: torch.Tensor, num_views: int, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random sets of up to `num_views` clips per video, in one batched operation.

    num_clips (B,) int: valid stored clips per video (the first num_clips of the K stored).
    noise (B, K) uniform in [0, 1): the randomness, drawn by the caller.
    Returns index (2, B, V) into the stored clips and valid (2, B, V) bool. The valid clips are
    shuffled and dealt alternately to the two sets, so a video with n < 2V valid clips gives
    ceil(n/2) and floor(n/2) clips; the remaining slots are padding (valid False).
    """
    b, stored = noise.shape
    order = shuffle_valid_first(noise, num_clips)  # (B, K): valid clips first, in random order
    width = 2 * num_views
    if stored < width:
        order = torch.cat([order, order.new_zeros(b, width - stored)], dim=1)  # (B, 2V)
    order = order[:, :width]  # (B, 2V)
    rank = torch.arange(width, device=noise.device)  # (2V,)
    valid = (rank[None, :] < num_clips[:, None]) & (rank[None, :] < stored)  # (B, 2V)
    index = order.view(b, num_views, 2).permute(2, 0, 1)  # (2, B, V): rank r -> set r % 2
    return index, valid.view(b, num_views, 2).permute(2, 0, 1)


def random_masking(valid: torch.Tensor, ratio: float, noise: torch.Tensor) -> torch.Tensor:
    """Mask each valid clip independently with probability `ratio`, as the authors' release does.

    valid (B, N) bool; noise (B, N) uniform in [0, 1), drawn by the caller. Returns masked (B, N)
    bool, a Bernoulli(ratio) draw per valid clip; padding is never masked. So the expected share
    of masked clips is exactly `ratio` at every set size, which the mask-ratio and views
    ablations (Tables 8, 9) rely on. There is deliberately no at-least-one rule: a set with no
    masked clip simply adds no MCM query, and a set whose clips are all masked is still a valid
    input (its SET token and box embeddings keep every attention row finite); forcing one clip
    masked and one visible would move the ratio (0.25 -> 0.5 at 2 views, 0.33 at 4).
    """
    return (noise < ratio) & valid


@functools.cache
def masked_capacity(sets: int, num_views: int, ratio: float, *, log_miss: float = 20.7) -> int:
    """A fixed number of query rows that holds every masked clip of `sets` clip sets of up to
    `num_views` clips, except with probability below exp(-log_miss) (default 1e-9).

    `random_masking` masks each of at most n = sets * num_views valid clips independently with
    probability p, so the count is Binomial(m, p) with m <= n, stochastically at most
    Binomial(n, p). Each term exceeds its mean by at most 1 - p, so Bernstein's inequality gives
    P(count >= n p + t) <= exp(-t^2 / (2 (n p (1 - p) + (1 - p) t / 3))); t solves it for
    exp(-log_miss). Never more than every clip: n.
    """
    n = sets * num_views
    c = log_miss * (1 - ratio) / 3
    t = c + math.sqrt(c * c + 2 * log_miss * n * ratio * (1 - ratio))
    return min(n, math.ceil(n * ratio + t))


def masked_positions(masked: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `capacity` masked positions of `masked` (B, N), flattened row-major (the order
    of `nonzero`), without a host sync.

    Returns index (C,) int64 and keep (C,) bool; C = min(capacity, B*N). Where fewer clips are
    masked than C, the trailing rows point at unmasked clips and have keep False; where more
    are (probability < 1e-9 with `masked_capacity`), the last ones are left out.
    """
    flat = masked.flatten()
    order = torch.sort((~flat).to(torch.uint8), stable=True).indices  # masked first, in order
    index = order[: min(capacity, flat.numel())]
    return index, flat[index]


@dataclass
class ClipSets:
    """The two clip sets drawn from each of B videos, stacked set a then set b (2B sets)."""

    features: torch.Tensor  # (2B, V, D) float32
    boxes: torch.Tensor  # (2B, V, 7) float32
    valid: torch.Tensor  # (2B, V) bool, False for padding
    masked: torch.Tensor | None  # (2B, V) bool, the clips hidden behind MSK; None without MCM


def draw_clip_sets(
    features: torch.Tensor,
    boxes: torch.Tensor,
    num_clips: torch.Tensor,
    config: PretextConfig,
    generator: torch.Generator,
    gather: Gather,
) -> ClipSets:
    """The random part of a step: two disjoint clip sets per video, then (with MCM) the mask.

    features (B, K, D), boxes (B, K, 7), num_clips (B,). Draws the clip noise (B, K), then the
    mask noise (2, B, V), each the rank's slice of the global batch's draw.
    """
    b, k = features.shape[:2]
    v = config.num_views
    clip_noise = gather.rand((b, k), batch_dim=0, generator=generator)  # (B, K)
    index, valid = sample_clip_sets(num_clips, v, clip_noise)
    index, valid = index.reshape(2 * b, -1), valid.reshape(2 * b, -1)  # (2B, V): set a then b
    videos = torch.arange(b, device=features.device).repeat(2)[:, None]  # (2B, 1)
    masked = None
    if config.mcm_weight > 0:
        mask_noise = gather.rand((2, b, v), batch_dim=1, generator=generator).reshape(2 * b, v)
        masked = random_masking(valid, config.mask_ratio, mask_noise)  # (2B, V)
    return ClipSets(
        features=features[videos, index].float(),  # (2B, V, D)
        boxes=boxes[videos, index].float(),  # (2B, V, 7)
        valid=valid,
        masked=masked,
    )


@dataclass
class _HeadOutputs:
    """What the pretext losses read from one forward pass (None where a loss is off)."""

    set_emb: torch.Tensor | None  # (2B, E) SET head on the SET outputs
    pred: torch.Tensor | None  # (C, E) prediction head at `positions`
    target: torch.Tensor | None  # (2B*V, E) target head on every clip's feature
    positions: tuple[torch.Tensor, torch.Tensor] | None  # from `masked_positions`


def _forward_heads(
    model: ScaleModel, sets: ClipSets, config: PretextConfig, pad: torch.Tensor | None
) -> _HeadOutputs:
    """The predictor on the clip sets (`pad`: its padding mask, or None), then the heads the
    enabled losses need; the prediction head runs at masked clips only."""
    out = model(sets.features, sets.boxes, valid=pad, masked=sets.masked)
    set_emb = model.set_head(out.set) if config.set_weight > 0 else None  # (2B, E)
    pred = target = positions = None
    if sets.masked is not None:
        capacity = masked_capacity(sets.valid.shape[0], config.num_views, config.mask_ratio)
        positions = masked_positions(sets.masked, capacity)
        pred = model.pred_head(out.clips.flatten(0, 1)[positions[0]])  # (C, E)
        target = model.target_head(sets.features.flatten(0, 1))  # (2B*V, E)
    return _HeadOutputs(set_emb=set_emb, pred=pred, target=target, positions=positions)


def _mcm_terms(
    heads: _HeadOutputs,
    sets: ClipSets,
    config: PretextConfig,
    gather: Gather,
    pad: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MCM loss (this rank's share of the global mean) and its metrics, in fp32."""
    masked, valid, positions = sets.masked, sets.valid, heads.positions
    pred = F.normalize(heads.pred.float(), dim=-1)  # (C, E)
    target = F.normalize(heads.target.float(), dim=-1)  # (2B*V, E)
    target_valid = None if pad is None else valid.flatten()  # (2B*V,)
    loss_fn = MaskedClipLoss(temperature=config.temperature, gather=gather)
    mcm, mcm_acc = loss_fn(pred, target, positions, target_valid)
    metrics = {
        "mcm_loss": mcm.detach(),
        "mcm_acc": mcm_acc,
        "mcm_dropped": (masked.sum() - positions[1].sum()).float(),
        # The share of valid clips masked in this (local) batch: `mask_ratio` in expectation.
        "mask_ratio": masked.sum() / valid.sum().clamp(min=1),
    }
    return mcm, metrics


def _set_terms(
    set_emb: torch.Tensor, config: PretextConfig, gather: Gather
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The SET loss of set_emb (2B, E), set a then set b (this rank's share of the global mean),
    and its metrics, in fp32."""
    b = set_emb.shape[0] // 2
    set_emb = F.normalize(set_emb.float(), dim=-1)  # (2B, E)
    loss_fn = SetLoss(temperature=config.temperature, gather=gather)
    loss, accuracy = loss_fn(set_emb[:b], set_emb[b:])  # set a, set b: (B, E) each
    return loss, {"set_loss": loss.detach(), "set_acc": accuracy}


def pretext_step(
    model: ScaleModel,
    features: torch.Tensor,
    boxes: torch.Tensor,
    num_clips: torch.Tensor,
    config: PretextConfig,
    generator: torch.Generator,
    *,
    gather: Gather | None = None,
    autocast_dtype: torch.dtype | None = None,
    all_valid: bool = False,
) -> dict[str, torch.Tensor]:
    """Losses of one (local) batch.

    features (B, K, D), boxes (B, K, 7), num_clips (B,): the stored clips of B videos.
    all_valid: the caller knows (from its store, without a host sync) that every video has at
    least 2 * num_views valid clips, so no set has padding: the attention and key padding masks
    are skipped (on CUDA this lets attention use its fastest kernels).
    Returns "loss" (to backpropagate; in data-parallel training it is scaled so that averaging
    gradients over ranks gives the gradient of the global mean loss) and detached "mcm_loss",
    "set_loss", "mcm_acc", "set_acc" (this rank's share of the global mean for the losses, the
    local mean for accuracies) and "mcm_dropped" (masked clips beyond the fixed query capacity,
    left out of the loss; expected 0) and "mask_ratio" (the share of this rank's valid clips
    that were masked: the effective mask ratio).
    """
    gather = gather or Gather()
    sets = draw_clip_sets(features, boxes, num_clips, config, generator, gather)
    no_padding = all_valid and features.shape[1] >= 2 * config.num_views
    pad = None if no_padding else sets.valid  # padding mask for the model, or None
    autocast = (
        torch.autocast(features.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        heads = _forward_heads(model, sets, config, pad)

    # Losses in fp32, outside autocast.
    metrics: dict[str, torch.Tensor] = {}
    total = features.new_zeros((), dtype=torch.float32)
    if sets.masked is not None:
        mcm, mcm_metrics = _mcm_terms(heads, sets, config, gather, pad)
        total = total + config.mcm_weight * mcm
        metrics.update(mcm_metrics)
    if heads.set_emb is not None:
        sl, set_metrics = _set_terms(heads.set_emb, config, gather)
        total = total + config.set_weight * sl
        metrics.update(set_metrics)
    metrics["loss"] = total * gather.world
    return metrics
