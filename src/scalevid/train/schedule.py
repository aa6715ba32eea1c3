"""The one learning-rate schedule (linear warm-up, then cosine) and the weight-decay split, used
by pretraining and by every probe."""

from __future__ import annotations

import math
from typing import Any

import torch


def warmup_steps(fraction: float, total: int) -> int:
    """Warm-up length for a fraction of `total` steps; at least one step."""
    return max(1, round(fraction * total))


def warmup_cosine(
    step: int, *, total: int, warmup: int, peak: float = 1.0, floor: float = 0.0
) -> float:
    """Learning rate at `step` (0-based) of `total`: rises linearly to `peak` over the first
    `warmup` steps (0: no warm-up), then follows a half cosine from `peak` down to `floor`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: none on biases, norms and learned tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith("bias") or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(model: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over `param_groups`, fused where this torch and device support it."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)
