"""The stacked optimizers against torch's own, one optimizer per model."""

from __future__ import annotations

import pytest
import torch

from scalevid.eval.stacked import StackedAdamW, StackedSGD

_SHAPES = {"w": (5, 3), "b": (3,)}
_LRS = (0.1, 0.01, 0.003)
_DECAYS = (0.0, 0.05, 0.3)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(len(_LRS), *s, generator=g) for k, s in _SHAPES.items()}  # (M, ...)


def _grads(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return {k: 3.0 * torch.randn(len(_LRS), *s, generator=g) for k, s in _SHAPES.items()}


def _run_stacked(
    kind: str, grad_clip: float | None, steps: int, *, per_model: bool = False
) -> dict[str, torch.Tensor]:
    """`per_model`: the gradients arrive on each model's own leaves (``StackedAdamW.rows``)."""
    params = {k: v.clone().requires_grad_() for k, v in _weights(0).items()}
    decay = {k: list(_DECAYS) for k in params}
    if kind.startswith("adamw"):
        fused = kind == "adamw-fused"
        opt: StackedAdamW | StackedSGD = StackedAdamW(
            params, decay=decay, grad_clip=grad_clip, fused=fused
        )
    else:
        opt = StackedSGD(params, decay=decay, momentum=0.9)
    for step in range(steps):
        for k, g in _grads(step).items():
            if per_model:
                assert isinstance(opt, StackedAdamW)
                for own, row in zip(opt.rows(), g, strict=True):
                    own[k].grad = row.clone()
            else:
                params[k].grad = g.clone()
        opt.step(torch.tensor(_LRS) * (1.0 - step / (2 * steps)))  # a changing lr
    return {k: v.detach() for k, v in params.items()}


def _run_torch(kind: str, grad_clip: float | None, steps: int, m: int) -> dict[str, torch.Tensor]:
    params = {k: v[m].clone().requires_grad_() for k, v in _weights(0).items()}
    lr, wd = _LRS[m], _DECAYS[m]
    if kind.startswith("adamw"):
        opt: torch.optim.Optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(params.values(), lr=lr, momentum=0.9, weight_decay=wd)
    for step in range(steps):
        for k, g in _grads(step).items():
            params[k].grad = g[m].clone()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params.values(), grad_clip)
        for group in opt.param_groups:
            group["lr"] = lr * (1.0 - step / (2 * steps))
        opt.step()
    return {k: v.detach() for k, v in params.items()}


@pytest.mark.parametrize(
    ("kind", "grad_clip", "per_model"),
    [
        ("adamw-loop", None, False),
        ("adamw-loop", 1.0, False),
        ("adamw-loop", 1.0, True),
        ("adamw-fused", None, False),
        ("adamw-fused", 1.0, False),
        ("adamw-fused", 1.0, True),
        ("sgd", None, False),
    ],
)
def test_each_stacked_model_ends_where_its_own_torch_optimizer_ends(
    kind: str, grad_clip: float | None, per_model: bool
) -> None:
    stacked = _run_stacked(kind, grad_clip, steps=7, per_model=per_model)
    for m in range(len(_LRS)):
        alone = _run_torch(kind, grad_clip, steps=7, m=m)
        for k in _SHAPES:
            torch.testing.assert_close(stacked[k][m], alone[k], rtol=1e-5, atol=1e-6)
    start = _weights(0)
    assert all(not torch.allclose(stacked[k], start[k]) for k in _SHAPES)  # they really moved


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_keep_drops_models_and_their_state(fused: bool) -> None:
    params = {k: v.clone().requires_grad_() for k, v in _weights(0).items()}
    opt = StackedAdamW(params, decay={k: list(_DECAYS) for k in params}, fused=fused)
    for k, g in _grads(0).items():
        opt.params[k].grad = g
    opt.step(torch.tensor(_LRS))
    moment = opt.exp_avg["w"].clone()
    opt.keep([2, 0])
    assert opt.params["w"].shape == (2, 5, 3) and opt.exp_avg["w"].shape == (2, 5, 3)
    torch.testing.assert_close(opt.exp_avg["w"], moment[[2, 0]])
    assert opt.decay["b"] == [_DECAYS[2], _DECAYS[0]]
    assert opt.params["w"].requires_grad and opt.params["w"].is_leaf
    for k, g in _grads(1).items():
        opt.params[k].grad = g[[2, 0]]
    opt.step(torch.tensor([_LRS[2], _LRS[0]]))  # the kept models go on stepping
    assert opt.params["w"].grad is None


def test_adamw_per_model_leaves_share_the_stacks_and_follow_keep() -> None:
    params = {k: v.clone().requires_grad_() for k, v in _weights(0).items()}
    opt = StackedAdamW(params, decay={k: list(_DECAYS) for k in params})
    own = opt.rows()
    assert all(w.is_leaf and w.requires_grad for row in own for w in row.values())
    for m, row in enumerate(own):
        row["w"].grad = torch.ones(5, 3) * (m + 1)  # "b" has no gradient: it stays put
    before = opt.params["b"].detach().clone()
    opt.step(torch.tensor(_LRS))
    for m, row in enumerate(own):
        torch.testing.assert_close(row["w"].detach(), opt.params["w"][m].detach())  # one memory
        assert row["w"].grad is None
    torch.testing.assert_close(opt.params["b"].detach(), before)
    opt.keep([2])
    (kept,) = opt.rows()  # rebuilt over the new stacks
    torch.testing.assert_close(kept["w"].detach(), own[2]["w"].detach())
    assert kept["w"].data_ptr() == opt.params["w"].data_ptr()
