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


def clip_coefficients(grads: list[list[torch.Tensor]], max_norm: float) -> torch.Tensor:
    """Per-model factor (M,) that scales each model's gradients to a global norm of at most
    `max_norm` (``torch.nn.utils.clip_grad_norm_``'s rule, with its 1e-6 guard); grads[m] are
    model m's gradients."""
    total = torch.stack(
        [torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g))) for g in grads]
    )  # (M,)
    return (max_norm / (total + 1e-6)).clamp(max=1.0)


class StackedAdamW:
    """AdamW (betas 0.9 / 0.999, eps 1e-8) over stacked weights with per-model learning rates
    (given each step), per-weight lr multipliers and per-model weight decay, and optional
    per-model gradient-norm clipping.

    On CPU and CUDA a step is torch's fused AdamW kernel (one pass over each weight, state and
    gradient), called once per model and (lr multiplier, weight decay) pair on that model's rows
    of the stacks, with the clipping folded into its gradient scale; elsewhere, or with
    ``fused=False``, the same rule as a loop of batched tensor operations.

    Gradients come from the stacks, or from each model's own leaves (``rows``) where the loss
    called the models one by one on those.
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
        self._rows: list[dict[str, torch.Tensor]] | None = None

    def rows(self) -> list[dict[str, torch.Tensor]]:
        """Per model, its weights as leaves of their own that share the stacks' memory (an
        update of the stacks is an update of these). A loss that calls the models one by one
        reads these, so each model's gradient is a tensor of its own: through the stacks,
        ``unbind``'s backward would gather every model's gradient into one new tensor per step.
        Once read, the next step takes its gradients from these."""
        if self._rows is None:
            m = next(iter(self.params.values())).shape[0]
            self._rows = [
                {k: v[i].detach().requires_grad_() for k, v in self.params.items()}
                for i in range(m)
            ]
        return self._rows

    def _gradients(self) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """name -> the weight's gradients, [m] model m's: the stacks' (M, *shape) gradient, or
        the list of the models' own; of the weights that have one (then clears them)."""
        if self._rows is None:
            stacked = {k: p.grad for k, p in self.params.items() if p.grad is not None}
            for p in self.params.values():
                p.grad = None
            return stacked
        grads: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        for k, p in self.params.items():
            per_model = [row[k].grad for row in self._rows]
            if any(g is not None for g in per_model):  # a model that read none of it: zeros
                grads[k] = [torch.zeros_like(p[0]) if g is None else g for g in per_model]
        for row in self._rows:
            for w in row.values():
                w.grad = None
        return grads

    @torch.no_grad()
    def step(self, lr: torch.Tensor) -> None:
        """One update with per-model learning rates lr (M,); clears the gradients."""
        self.count += 1
        grads = self._gradients()
        coef = None
        if self.grad_clip is not None and grads:
            per_model = [[g[m] for g in grads.values()] for m in range(len(lr))]
            coef = clip_coefficients(per_model, self.grad_clip)  # (M,)
        if self.fused:
            self._fused_step(grads, lr, coef)
        else:
            stacked = {
                k: g if isinstance(g, torch.Tensor) else torch.stack(g) for k, g in grads.items()
            }
            self._loop_step(stacked, lr, coef)

    def _fused_step(
        self,
        grads: dict[str, torch.Tensor | list[torch.Tensor]],
        lr: torch.Tensor,
        coef: torch.Tensor | None,
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
        self._rows = None  # views of the old stacks


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
