"""Linear and MLP probes: a head applied per clip, trained on random valid clips of each video;
at test the softmax (or regression output) is averaged over the video's valid views.

A grid of (lr, weight decay) heads trains in one pass over the data (the DINOv2
``eval/linear.py`` recipe): one shared input (optionally a BatchNorm without affine parameters),
the heads' weights stacked so that each layer of all heads is one batched matrix product, and
one stacked optimizer with a learning rate and weight decay per head (``eval/stacked.py``).
The training clips are drawn with :func:`scalevid.pretext.shuffle_valid_first`, the one view
sampler that pretraining and the set probes use too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from scalevid.eval.engine import GridTrainer
from scalevid.eval.probes import (
    Device,
    ProbeConfig,
    ProbeData,
    Task,
    fitted_batch,
    gather_views,
    mean_over_valid,
    num_outputs,
    steps_per_epoch,
)
from scalevid.eval.stacked import StackedAdamW, StackedSGD
from scalevid.hardware import autocast_dtype
from scalevid.pretext import shuffle_valid_first

logger = logging.getLogger(__name__)


class _SeededDropout(nn.Module):
    """Dropout drawing its masks from its own generator, so a head draws the same masks whether
    it trains alone or inside a grid (nn.Dropout uses the global RNG). The heads of a grid share
    a seed, so one mask (B, H) per step serves all of them: x (G, B, H) -> (G, B, H)."""

    def __init__(self, p: float, *, seed: int) -> None:
        super().__init__()
        self.p, self.seed = p, seed
        self._generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape[1:], generator=self._generator, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


def _make_head(config: ProbeConfig, *, in_dim: int, out_dim: int) -> nn.Module:
    """A linear or MLP head initialised from config.seed alone (not from its place in a grid)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.kind == "linear":
            return nn.Linear(in_dim, out_dim)
        layers: list[nn.Module] = []
        width = in_dim
        for i, hidden in enumerate(config.hidden):
            drop = _SeededDropout(config.dropout, seed=config.seed + 1000 * (i + 1))
            layers += [nn.Linear(width, hidden), nn.GELU(), drop]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        return nn.Sequential(*layers)


def _layers(head: nn.Module) -> tuple[list[nn.Linear], list[tuple[float, int]]]:
    """A head's linear layers, and (dropout p, seed) after each hidden one: an nn.Linear, or
    a Sequential of [Linear, GELU, _SeededDropout] * n + [Linear] as :func:`_make_head` builds."""
    if isinstance(head, nn.Linear):
        return [head], []
    modules = list(head) if isinstance(head, nn.Sequential) else []
    linears = modules[0::3]
    drops = modules[2::3]
    shape_ok = len(modules) % 3 == 1 and all(isinstance(m, nn.Linear) for m in linears)
    if not shape_ok or not all(
        isinstance(g, nn.GELU) and isinstance(d, _SeededDropout)
        for g, d in zip(modules[1::3], drops, strict=True)
    ):
        raise ValueError(f"not a linear or MLP head: {head}")
    return linears, [(d.p, d.seed) for d in drops]


def _bias(layer: nn.Linear) -> torch.Tensor:
    """The layer's bias (out,), zeros for a layer built without one."""
    if layer.bias is None:
        return layer.weight.new_zeros(layer.out_features)
    return layer.bias.detach()


class HeadGrid(nn.Module):
    """G heads of one architecture sharing one input (and one optional BatchNorm without affine
    parameters), their weights stacked so that all G run as one batched product per layer:
    ``weights[l]`` (G, in, out) and ``biases[l]`` (G, out); GELU and dropout between layers.
    Dropout masks are drawn once per layer and step and shared by the heads (their seeds agree),
    as each head would draw them trained alone."""

    def __init__(
        self, heads: Sequence[nn.Module], *, in_dim: int, batchnorm: bool, task: Task
    ) -> None:
        super().__init__()
        self.task = task
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if batchnorm else nn.Identity()
        per_head = [_layers(h) for h in heads]  # per head: (linears, dropouts)
        if any(d != per_head[0][1] for _, d in per_head):
            raise ValueError("the heads of a grid must share their dropout rates and seeds")
        self.weights = nn.ParameterList(
            torch.stack([ls[i].weight.detach().T for ls, _ in per_head]).contiguous()
            for i in range(len(per_head[0][0]))
        )  # [(G, in, out)] per layer
        self.biases = nn.ParameterList(
            torch.stack([_bias(ls[i]) for ls, _ in per_head]) for i in range(len(per_head[0][0]))
        )  # [(G, out)] per layer
        self.drops = nn.ModuleList(_SeededDropout(p, seed=s) for p, s in per_head[0][1])

    def __len__(self) -> int:
        return int(self.weights[0].shape[0])

    def forward(self, x: torch.Tensor, *, heads: Sequence[int] | None = None) -> torch.Tensor:
        """x (B, F) -> outputs (G, B, C) of the selected heads (all by default)."""
        chosen = slice(None) if heads is None else list(heads)
        w, b = self.weights[0][chosen], self.biases[0][chosen]
        # One (B, F) @ (F, G * out) product: matmul's broadcasting would copy x G times.
        h = torch.einsum("bf,gfo->gbo", self.norm(x), w) + b[:, None]  # (G, B, out)
        for i in range(1, len(self.weights)):
            w, b = self.weights[i][chosen], self.biases[i][chosen]
            h = torch.baddbmm(b[:, None], self.drops[i - 1](F.gelu(h)), w)  # (G, B, out)
        return h


def grid_key(config: ProbeConfig) -> ProbeConfig:
    """What heads trained in one pass must share: everything except lr and weight decay."""
    return dataclasses.replace(config, lr=0.0, weight_decay=0.0)


def _sample_clips(
    num_valid: torch.Tensor, *, num_views: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """`count` random valid view indices per video: num_valid (B,) -> (B, count) int64.

    Without replacement while a video has >= count valid views, cycling through them otherwise.
    """
    noise = torch.rand(num_valid.shape[0], num_views, generator=generator)  # (B, V)
    order = shuffle_valid_first(noise, num_valid)  # (B, V): valid views first, shuffled
    slots = torch.arange(count)[None, :] % num_valid[:, None]  # (B, count)
    return order.gather(1, slots)


def _head_optimizer(
    params: dict[str, torch.Tensor], configs: Sequence[ProbeConfig]
) -> StackedAdamW | StackedSGD:
    """Each head at its config's lr and weight decay (the weights stacked, one optimizer)."""
    decay = {k: [c.weight_decay for c in configs] for k in params}
    if configs[0].optimizer == "sgd":
        return StackedSGD(params, decay=decay, momentum=configs[0].momentum)
    return StackedAdamW(params, decay=decay)


def _targets(data: ProbeData) -> torch.Tensor:
    """Training targets: class ids (N,) int64, or float targets (N, T)."""
    if data.task == "classification":
        return torch.as_tensor(data.labels)  # (N,)
    return torch.as_tensor(data.labels, dtype=torch.float32).reshape(len(data), -1)  # (N, T)


def _head_losses(outputs: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    """Each head's mean loss (G,) on outputs (G, N, C): cross-entropy against class ids y (N,),
    or MSE against targets y (N, T)."""
    g, n, c = outputs.shape
    if task == "classification":
        per_sample = F.cross_entropy(outputs.reshape(g * n, c), y.repeat(g), reduction="none")
        return per_sample.view(g, n).mean(dim=1)  # (G,)
    return (outputs - y[None]).pow(2).flatten(1).mean(dim=1)  # (G,)


def _shared_config(configs: Sequence[ProbeConfig]) -> ProbeConfig:
    """The settings heads trained in one pass share (configs[0]); raises if they differ in
    anything but lr and weight decay, or are not linear/MLP."""
    if not configs or any(grid_key(c) != grid_key(configs[0]) for c in configs):
        raise ValueError("heads trained in one pass may differ only in lr and weight_decay")
    if configs[0].kind not in ("linear", "mlp"):
        raise ValueError(f"fit_heads trains linear/mlp heads, not {configs[0].kind!r}")
    return configs[0]


class _ClipBatches:
    """The head probes' batch stream: a seeded permutation of the videos per epoch (full
    batches only), `clips_per_sample` random valid clips of each video, every clip one sample
    with its video's label: (x (B * S, F), y (B * S,) or (B * S, T))."""

    def __init__(self, train: ProbeData, config: ProbeConfig) -> None:
        self.train, self.config = train, config
        self.targets, self.num_valid = _targets(train), torch.as_tensor(train.num_valid)
        self.batch = fitted_batch(config.batch_size, len(train))
        self.per_epoch = steps_per_epoch(len(train), config.batch_size)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.perm = torch.empty(0, dtype=torch.long)

    def next(self, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        b = step % self.per_epoch
        if b == 0:
            self.perm = torch.randperm(len(self.train), generator=self.generator)
        rows = self.perm[b * self.batch : (b + 1) * self.batch]  # (B,)
        cols = _sample_clips(
            self.num_valid[rows],
            num_views=self.train.x.shape[1],
            count=self.config.clips_per_sample,
            generator=self.generator,
        )  # (B, S)
        x = gather_views(self.train.x, rows, cols, device).flatten(0, 1)  # (B*S, F)
        y = self.targets[rows].repeat_interleave(self.config.clips_per_sample, dim=0)
        return x, y.to(device)


def fit_heads(
    configs: Sequence[ProbeConfig],
    train: ProbeData,
    *,
    device: Device = "cpu",
    progress: bool = False,
) -> tuple[HeadGrid, np.ndarray]:
    """Train one linear/MLP head per config in a single pass over `train` (the grid trainer,
    ``eval.engine``).

    The configs may differ only in lr and weight_decay; every head starts from the same
    seeded init and sees the same batches, so head g ends exactly as if trained alone.
    Returns (the grid in eval mode, per-step training losses (G, steps)).
    """
    cfg = _shared_config(configs)
    task = train.task
    in_dim = train.x.shape[2]
    out_dim = num_outputs(cfg, train.labels)
    head = _make_head(cfg, in_dim=in_dim, out_dim=out_dim)  # the heads share the seed: one init
    grid = HeadGrid([head] * len(configs), in_dim=in_dim, batchnorm=cfg.batchnorm, task=task)
    device = torch.device(device)
    grid.to(device).train()
    params = {k: p.detach().clone().requires_grad_() for k, p in grid.named_parameters()}
    stream = _ClipBatches(train, cfg)
    total = stream.per_epoch * cfg.epochs

    def loss(weights: dict[str, torch.Tensor], batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch
        return _head_losses(functional_call(grid, weights, (x,)), y, task)  # (G,)

    trained = GridTrainer(
        optimizer=_head_optimizer(params, configs),
        loss=loss,
        streams=[stream],
        stream_of=[0] * len(configs),
        lrs=[c.lr for c in configs],
        schedule_steps=[total] * len(configs),
        warmups=[round(cfg.warmup_epochs * stream.per_epoch)] * len(configs),
        stop_steps=[total] * len(configs),
        autocast=autocast_dtype(cfg.precision, device),
        device=device,
    ).run(progress=progress, desc=cfg.kind)
    with torch.no_grad():
        for k, p in grid.named_parameters():
            p.copy_(torch.stack([w[k] for w in trained.weights]))
    grid.eval()
    history = np.stack(trained.losses) if total else np.zeros((len(configs), 0))
    logger.info("trained %d %s heads for %d steps", len(configs), cfg.kind, total)
    return grid, history


@torch.no_grad()
def predict_heads(
    grid: HeadGrid,
    data: ProbeData,
    *,
    batch_size: int = 256,
    heads: Sequence[int] | None = None,
) -> np.ndarray:
    """Video predictions (G, N, C): each head on every valid view, averaged over valid views.

    Classification averages the softmax of the views (probabilities); regression averages the
    outputs. `data.labels` is not read.
    """
    device = grid.weights[0].device
    grid.eval()
    out = []
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        x = gather_views(data.x, rows, None, device)  # (B, V, F)
        b, v, f = x.shape
        per_view = grid(x.reshape(b * v, f), heads=heads)  # (G, B*V, C)
        per_view = per_view.reshape(per_view.shape[0], b, v, -1)  # (G, B, V, C)
        if grid.task == "classification":
            per_view = per_view.softmax(dim=-1)  # (G, B, V, C)
        nv = torch.as_tensor(data.num_valid[start : start + b])
        out.append(mean_over_valid(per_view.permute(1, 2, 0, 3), nv).cpu())  # (B, G, C)
    num_heads = len(grid) if heads is None else len(heads)
    if not out:
        return np.zeros((num_heads, 0, 0), dtype=np.float32)
    return torch.cat(out).permute(1, 0, 2).numpy()  # (G, N, C)
