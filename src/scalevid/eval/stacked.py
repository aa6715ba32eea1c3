"""Optimizers over weights stacked along a leading model dim: M small probes that share an
architecture step as one, each with its own learning rate, weight decay and gradient clipping.

A probe grid (heads of many learning rates, set probes of many lrs and budgets) keeps each weight
as one (M, *shape) tensor, so a step is a handful of batched ops instead of M optimizers' loops
over small tensors. The update rules are torch's (``torch.optim.AdamW``, ``torch.optim.SGD`` with
momentum and coupled weight decay), applied per model: model m ends where it would end with its
own torch optimizer, up to float rounding (``tests/eval/test_stacked.py``).
"""

from __future__ import annotations

import torch

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel


def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M,) -> (M, 1, ..., 1), broadcasting against a stacked weight `like` (M, *shape)."""
    return values.view((-1,) + (1,) * (like.ndim - 1))


def clip_coefficients(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Per-model factor (M,) that scales each model's gradients to a global norm of at most
    `max_norm` (``torch.nn.utils.clip_grad_norm_``'s rule, with its 1e-6 guard)."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (W, M)
    total = torch.linalg.vector_norm(norms, dim=0)  # (M,)
    return (max_norm / (total + 1e-6)).clamp(max=1.0)


class StackedAdamW:
    """AdamW (betas 0.9 / 0.999, eps 1e-8) over stacked weights with per-model learning rates
    (given each step), per-weight lr multipliers and per-model weight decay, and optional
    per-model gradient-norm clipping.

    On CPU and CUDA a step is torch's fused AdamW kernel (one pass over each weight, state and
    gradient), called once per model and (lr multiplier, weight decay) pair on that model's rows
    of the stacks, with the clipping folded into its gradient scale; elsewhere, or with
    ``fused=False``, the same rule as a loop of batched tensor operations.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        *,
        lr_scale: dict[str, list[float]] | None = None,
        decay: dict[str, list[float]],
        grad_clip: float | None = None,
        fused: bool | None = None,
    ) -> None:
        self.params = params  # name -> (M, *shape) leaf tensors
        self.lr_scale = lr_scale or {k: [1.0] * v.shape[0] for k, v in params.items()}
        self.decay = decay  # name -> per model weight decay (0 where none applies)
        self.grad_clip = grad_clip
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        self.count = 0
        device = next(iter(params.values())).device
        self.fused = device.type in _FUSED_DEVICES if fused is None else fused

    @torch.no_grad()
    def step(self, lr: torch.Tensor) -> None:
        """One update with per-model learning rates lr (M,); clears the gradients."""
        self.count += 1
        grads = {k: p.grad for k, p in self.params.items() if p.grad is not None}
        coef = None
        if self.grad_clip is not None and grads:
            coef = clip_coefficients(list(grads.values()), self.grad_clip)  # (M,)
        if self.fused:
            self._fused_step(grads, lr, coef)
        else:
            self._loop_step(grads, lr, coef)
        for p in self.params.values():
            p.grad = None

    def _fused_step(
        self, grads: dict[str, torch.Tensor], lr: torch.Tensor, coef: torch.Tensor | None
    ) -> None:
        groups: dict[tuple[int, float, float], list[str]] = {}
        for k in grads:
            for m in range(self.params[k].shape[0]):
                groups.setdefault((m, self.lr_scale[k][m], self.decay[k][m]), []).append(k)
        step = torch.tensor(float(self.count), device=lr.device)  # the kernel's step count
        for (m, scale, decay), names in groups.items():
            torch._fused_adamw_(
                [self.params[k][m] for k in names],
                [grads[k][m] for k in names],
                [self.exp_avg[k][m] for k in names],
                [self.exp_avg_sq[k][m] for k in names],
                [],
                [step] * len(names),
                lr=lr[m] * scale,
                beta1=_BETA1,
                beta2=_BETA2,
                weight_decay=decay,
                eps=_EPS,
                amsgrad=False,
                maximize=False,
                grad_scale=None if coef is None else 1.0 / coef[m],  # grads are divided by it
                found_inf=None,
            )

    def _loop_step(
        self, grads: dict[str, torch.Tensor], lr: torch.Tensor, coef: torch.Tensor | None
    ) -> None:
        bc1, bc2 = 1 - _BETA1**self.count, 1 - _BETA2**self.count
        for k, g in grads.items():
            p = self.params[k]
            if coef is not None:
                g = g * _per_model(coef, p)
            scale = torch.tensor(self.lr_scale[k], device=p.device)  # (M,)
            step_lr = _per_model(lr * scale, p)  # (M, 1, ...)
            p.mul_(1 - step_lr * _per_model(torch.tensor(self.decay[k], device=p.device), p))
            self.exp_avg[k].lerp_(g, 1 - _BETA1)
            self.exp_avg_sq[k].mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
            denom = (self.exp_avg_sq[k].sqrt() / bc2**0.5).add_(_EPS)
            p.sub_(step_lr / bc1 * self.exp_avg[k] / denom)

    def keep(self, index: list[int]) -> None:
        """Keep only the models at `index` (M',) in the stacks (a finished model leaves)."""
        rows = torch.tensor(index, device=next(iter(self.params.values())).device)
        for store in (self.params, self.exp_avg, self.exp_avg_sq):
            for k in list(store):
                kept = store[k][rows].detach()
                store[k] = kept.requires_grad_() if store is self.params else kept
        self.decay = {k: [v[i] for i in index] for k, v in self.decay.items()}
        self.lr_scale = {k: [v[i] for i in index] for k, v in self.lr_scale.items()}


class StackedSGD:
    """SGD with momentum (dampening 0, no Nesterov) and coupled weight decay, as
    ``torch.optim.SGD``, over stacked weights with per-model learning rates (given each step)
    and per-model weight decay."""

    def __init__(
        self, params: dict[str, torch.Tensor], *, decay: dict[str, list[float]], momentum: float
    ) -> None:
        self.params = params  # name -> (M, *shape) leaf tensors
        self.decay = {  # name -> (M,)
            k: torch.tensor(v, device=params[k].device) for k, v in decay.items()
        }
        self.momentum = momentum
        self.buffers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, lr: torch.Tensor) -> None:
        """One update with per-model learning rates lr (M,); clears the gradients."""
        for k, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad + _per_model(self.decay[k], p) * p
            if self.momentum != 0.0:
                if k in self.buffers:
                    g = self.buffers[k].mul_(self.momentum).add_(g)
                else:
                    self.buffers[k] = g
            p.sub_(_per_model(lr, p) * g)
            p.grad = None
