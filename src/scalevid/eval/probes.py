"""Probes on frozen per-clip vectors: kNN, linear and MLP heads behind one interface.

A probe sees per-video sets of clip vectors ``x (N, V, F)`` whose first ``num_valid[i]`` views
are valid for video ``i``. ``F`` is ``D`` for raw backbone features or ``D + H`` for
``[clip feature, SET output]``. Labels are ``(N,)`` int64 class ids (classification) or float
targets ``(N,)`` / ``(N, T)`` (regression; linear and MLP probes only).

- kNN (DINO ``eval_knn`` style): one vector per video (mean over valid clips, optionally centred
  with train statistics, L2-normalised, optionally part by part), cosine top-k, each neighbour
  votes for its class with weight ``exp(sim / T)``. Chunked, so the full test x train similarity
  matrix never exists.
- Linear / MLP: a head applied per clip, trained on random valid clips of each video; at test the
  softmax (or regression output) is averaged over the video's valid views. A grid of
  (lr, weight decay) heads trains in one pass over the data: one shared input (optionally a
  BatchNorm without affine parameters), one forward per head, one optimizer param group per head
  (the DINOv2 ``eval/linear.py`` recipe).

Model selection (:func:`fit_grid`, :func:`cross_validate`, :func:`select_config`,
:func:`select_and_predict`) reads only train and validation labels. The best validation metric
wins; ties (common on a small validation set) go to the lower validation loss, then to the
earlier config. :func:`stratified_folds` gives the k-fold partition used when a held-out
validation split would be too small to choose on. Test labels are read by nothing here except
the final scoring calls, :func:`topk_accuracy` and :func:`mean_squared_error`.

The linear/MLP heads draw their training clips with :func:`scalevid.pretext.shuffle_valid_first`,
the one view sampler that pretraining and the set probes use too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalevid.pretext import shuffle_valid_first
from scalevid.progress import progress_bar
from scalevid.train.schedule import warmup_cosine

logger = logging.getLogger(__name__)

ProbeKind = Literal["knn", "linear", "mlp"]
OptimizerName = Literal["sgd", "adamw"]
Task = Literal["classification", "regression"]
Device = str | torch.device


def _to_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# --------------------------------------------------------------------------- data + config


@dataclass
class ProbeData:
    """Per-video sets of clip vectors.

    x: (N, V, F) float array or tensor (numpy memmaps and fp16 are fine: rows are read per batch).
    num_valid: (N,) int, 1 <= num_valid <= V; None means all V views are valid.
    labels: (N,) int class ids >= 0, or (N,) / (N, T) float regression targets; None when unknown.
    """

    x: np.ndarray | torch.Tensor
    num_valid: np.ndarray | torch.Tensor | None = None
    labels: np.ndarray | torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise ValueError(f"x must be (N, V, F), got shape {tuple(self.x.shape)}")
        n, v, _ = self.x.shape
        if self.num_valid is None:
            num_valid = np.full(n, v, dtype=np.int64)
        else:
            num_valid = _to_numpy(self.num_valid).astype(np.int64).reshape(-1)
        if num_valid.shape != (n,) or (num_valid < 1).any() or (num_valid > v).any():
            raise ValueError(f"num_valid must be (N,)={n} ints in [1, {v}]")
        self.num_valid = num_valid
        if self.labels is not None:
            labels = _to_numpy(self.labels)
            if labels.shape[0] != n:
                raise ValueError(f"labels have {labels.shape[0]} rows, x has {n}")
            if not np.issubdtype(labels.dtype, np.floating):
                labels = labels.astype(np.int64)
                if labels.ndim != 1 or (labels < 0).any():
                    raise ValueError("class labels must be (N,) ints >= 0")
            self.labels = labels

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def task(self) -> Task:
        """classification for integer labels, regression for float labels."""
        if self.labels is None:
            raise ValueError("this ProbeData has no labels")
        return "regression" if np.issubdtype(self.labels.dtype, np.floating) else "classification"

    def subset(self, idx: np.ndarray) -> ProbeData:
        """The rows `idx` (copied into memory, also for a memmap)."""
        idx = np.asarray(idx, dtype=np.int64)
        x = (
            self.x[torch.as_tensor(idx, device=self.x.device)]
            if _is_tensor(self.x)
            else self.x[idx]
        )
        labels = None if self.labels is None else self.labels[idx]
        return ProbeData(x=x, num_valid=self.num_valid[idx], labels=labels)


def _is_tensor(a: object) -> bool:
    return isinstance(a, torch.Tensor)


@dataclass(frozen=True)
class ProbeConfig:
    """Hyperparameters of one probe. kNN reads k / temperature / center / parts; linear and MLP
    the rest.

    batch_size counts videos per step; each contributes `clips_per_sample` random valid clips
    (without replacement while it has enough), each a training sample with the video's label.
    One epoch visits every video once (the last partial batch is dropped). lr follows a cosine
    schedule to 0 after `warmup_epochs` of linear warm-up. `num_classes` None = max label + 1.
    """

    kind: ProbeKind = "linear"
    # kNN
    k: int = 20
    temperature: float = 0.07
    center: bool = False
    # Sizes of consecutive parts of the vector that are L2-normalised separately before the
    # whole is (e.g. (D, H) for [clip feature, SET]), so each part weighs the same in the cosine
    # similarity whatever its norm; () normalises the whole vector only.
    parts: tuple[int, ...] = ()
    # linear / MLP
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: OptimizerName = "adamw"
    momentum: float = 0.9
    batch_size: int = 256
    epochs: int = 10
    warmup_epochs: float = 0.0
    clips_per_sample: int = 1
    batchnorm: bool = False
    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.0
    num_classes: int | None = None
    seed: int = 0


def make_grid(
    base: ProbeConfig, *, lrs: Sequence[float], weight_decays: Sequence[float] = (0.0,)
) -> list[ProbeConfig]:
    """`base` with every (lr, weight decay) pair, lr-major, in the order given."""
    return [dataclasses.replace(base, lr=lr, weight_decay=wd) for lr in lrs for wd in weight_decays]


def _num_outputs(config: ProbeConfig, labels: np.ndarray) -> int:
    if np.issubdtype(labels.dtype, np.floating):
        return 1 if labels.ndim == 1 else int(labels.shape[1])
    return config.num_classes if config.num_classes is not None else int(labels.max()) + 1


# --------------------------------------------------------------------------- shared helpers


def _gather(
    x: np.ndarray | torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor | None,
    device: Device,
) -> torch.Tensor:
    """x[rows] (B, V, F), or x[rows[:, None], cols] (B, S, F) for cols (B, S); float32 on device."""
    if isinstance(x, torch.Tensor):
        r = rows.to(x.device)
        out = x[r] if cols is None else x[r[:, None], cols.to(x.device)]
    else:
        r = rows.numpy()
        picked = x[r] if cols is None else x[r[:, None], cols.numpy()]
        out = torch.from_numpy(np.ascontiguousarray(picked))
    return out.to(device=device, dtype=torch.float32)


def mean_over_valid(values: torch.Tensor, num_valid: torch.Tensor) -> torch.Tensor:
    """Mean over the first num_valid[i] views: values (B, V, *rest), num_valid (B,) -> (B, *rest).

    Invalid views are masked out (not multiplied by 0), so NaN padding cannot leak in.
    """
    b, v = values.shape[:2]
    valid = torch.arange(v, device=values.device)[None, :] < num_valid.to(values.device)[:, None]
    valid = valid.reshape(b, v, *([1] * (values.ndim - 2)))  # (B, V, 1, ...)
    total = values.masked_fill(~valid, 0.0).sum(dim=1)  # (B, *rest)
    count = num_valid.to(device=values.device, dtype=values.dtype)
    return total / count.reshape(b, *([1] * (values.ndim - 2)))


# --------------------------------------------------------------------------- kNN


def video_vectors(
    x: np.ndarray | torch.Tensor,
    num_valid: np.ndarray | torch.Tensor,
    *,
    center: np.ndarray | None = None,
    normalize: bool = True,
    parts: Sequence[int] = (),
    chunk_size: int = 4096,
    device: Device = "cpu",
) -> np.ndarray:
    """One vector per video: mean over valid clips, minus `center` (F,), then L2-normalised.

    x (N, V, F), num_valid (N,) -> (N, F) float32. Pass `normalize=False` on the train set and
    take `.mean(0)` to get the train-statistics centre. `parts` (sizes summing to F): with
    `normalize`, each part is L2-normalised on its own first, then the whole, so k parts each
    contribute 1/k of every cosine similarity.
    """
    if parts and sum(parts) != x.shape[2]:
        raise ValueError(f"parts {tuple(parts)} do not add up to the vector size {x.shape[2]}")
    nv = torch.as_tensor(_to_numpy(num_valid).astype(np.int64))
    shift = None if center is None else torch.as_tensor(center, dtype=torch.float32, device=device)
    out = []
    for start in range(0, x.shape[0], chunk_size):
        rows = torch.arange(start, min(start + chunk_size, x.shape[0]))
        vec = mean_over_valid(_gather(x, rows, None, device), nv[rows])  # (c, F)
        if shift is not None:
            vec = vec - shift
        if normalize:
            if parts:
                vec = torch.cat([F.normalize(p, dim=1) for p in vec.split(list(parts), dim=1)], 1)
            vec = F.normalize(vec, dim=1)
        out.append(vec.cpu())
    if not out:
        return np.zeros((0, x.shape[2]), dtype=np.float32)
    return torch.cat(out).numpy()


def knn_classify(
    train_vecs: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_vecs: np.ndarray | torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = 1024,
    train_chunk_size: int | None = None,
    device: Device = "cpu",
) -> np.ndarray:
    """Temperature-weighted kNN vote: train (Ntr, F), labels (Ntr,), test (Nte, F) -> (Nte, C).

    Vectors are L2-normalised, similarity is cosine, and each of the k nearest train vectors adds
    exp(sim / temperature) to its class. Test rows go `chunk_size` at a time and train rows
    `train_chunk_size` at a time with a running top-k (None = all at once).
    """
    bank = F.normalize(torch.as_tensor(train_vecs).to(device=device, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(_to_numpy(train_labels).astype(np.int64), device=device)  # (Ntr,)
    n_train, n_test = bank.shape[0], test_vecs.shape[0]
    k = min(k, n_train)
    test_step = chunk_size or max(n_test, 1)
    train_step = train_chunk_size or max(n_train, 1)
    out = []
    for start in range(0, n_test, test_step):
        query = torch.as_tensor(test_vecs[start : start + test_step])
        query = F.normalize(query.to(device=device, dtype=torch.float32), dim=1)  # (c, F)
        top_sim = query.new_empty(query.shape[0], 0)  # (c, <=k)
        top_idx = torch.empty(query.shape[0], 0, dtype=torch.long, device=device)
        for t0 in range(0, n_train, train_step):
            sim = query @ bank[t0 : t0 + train_step].T  # (c, t)
            s, i = sim.topk(min(k, sim.shape[1]), dim=1)
            top_sim, top_idx = torch.cat([top_sim, s], 1), torch.cat([top_idx, i + t0], 1)
            top_sim, pos = top_sim.topk(min(k, top_sim.shape[1]), dim=1)
            top_idx = top_idx.gather(1, pos)
        weights = (top_sim / temperature).exp()  # (c, k)
        scores = torch.zeros(query.shape[0], num_classes, device=device)
        out.append(scores.scatter_add_(1, labels[top_idx], weights).cpu())
    if not out:
        return np.zeros((0, num_classes), dtype=np.float32)
    return torch.cat(out).numpy()


def _knn_predict(
    config: ProbeConfig, train: ProbeData, evals: Sequence[ProbeData], *, device: Device
) -> list[np.ndarray]:
    """kNN scores (Ne, C) for each eval set; only train labels are read."""
    if train.task != "classification":
        raise ValueError("the kNN probe needs integer class labels")
    center = None
    if config.center:
        center = video_vectors(train.x, train.num_valid, normalize=False, device=device).mean(0)
    parts = config.parts
    bank = video_vectors(train.x, train.num_valid, center=center, parts=parts, device=device)
    num_classes = _num_outputs(config, train.labels)
    return [
        knn_classify(
            bank,
            train.labels,
            video_vectors(e.x, e.num_valid, center=center, parts=parts, device=device),
            num_classes=num_classes,
            k=config.k,
            temperature=config.temperature,
            device=device,
        )
        for e in evals
    ]


# --------------------------------------------------------------------------- linear / MLP heads


class _SeededDropout(nn.Module):
    """Dropout drawing its masks from its own generator, so a head draws the same masks whether
    it trains alone or inside a grid (nn.Dropout uses the global RNG, shared by all heads)."""

    def __init__(self, p: float, *, seed: int) -> None:
        super().__init__()
        self.p, self.seed = p, seed
        self._generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=self._generator, device=x.device) >= self.p
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


class HeadGrid(nn.Module):
    """G heads sharing one input (and one optional BatchNorm without affine parameters)."""

    def __init__(
        self, heads: Sequence[nn.Module], *, in_dim: int, batchnorm: bool, task: Task
    ) -> None:
        super().__init__()
        self.task = task
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if batchnorm else nn.Identity()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor, *, heads: Sequence[int] | None = None) -> torch.Tensor:
        """x (B, F) -> outputs (G, B, C) of the selected heads (all by default)."""
        x = self.norm(x)  # (B, F)
        chosen = range(len(self.heads)) if heads is None else heads
        return torch.stack([self.heads[g](x) for g in chosen])  # (G, B, C)


def _grid_key(config: ProbeConfig) -> ProbeConfig:
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


def _head_optimizer(grid: HeadGrid, configs: Sequence[ProbeConfig]) -> torch.optim.Optimizer:
    """One param group per head, at its config's lr and weight decay."""
    groups = [
        {"params": list(head.parameters()), "lr": c.lr, "weight_decay": c.weight_decay}
        for head, c in zip(grid.heads, configs, strict=True)
    ]
    cfg = configs[0]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _targets(data: ProbeData) -> torch.Tensor:
    """Training targets: class ids (N,) int64, or float targets (N, T)."""
    if data.task == "classification":
        return torch.as_tensor(data.labels)  # (N,)
    return torch.as_tensor(data.labels, dtype=torch.float32).reshape(len(data), -1)  # (N, T)


def _head_losses(outputs: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    """Each head's mean loss (G,) on outputs (G, B*S, C): cross-entropy or MSE."""
    loss = F.cross_entropy if task == "classification" else F.mse_loss
    return torch.stack([loss(o, y) for o in outputs])  # (G,)


def _shared_config(configs: Sequence[ProbeConfig]) -> ProbeConfig:
    """The settings heads trained in one pass share (configs[0]); raises if they differ in
    anything but lr and weight decay, or are not linear/MLP."""
    if not configs or any(_grid_key(c) != _grid_key(configs[0]) for c in configs):
        raise ValueError("heads trained in one pass may differ only in lr and weight_decay")
    if configs[0].kind not in ("linear", "mlp"):
        raise ValueError(f"fit_heads trains linear/mlp heads, not {configs[0].kind!r}")
    return configs[0]


def fit_heads(
    configs: Sequence[ProbeConfig],
    train: ProbeData,
    *,
    device: Device = "cpu",
    progress: bool = False,
) -> tuple[HeadGrid, np.ndarray]:
    """Train one linear/MLP head per config in a single pass over `train`.

    The configs may differ only in lr and weight_decay; every head starts from the same
    seeded init and sees the same batches, so head g ends exactly as if trained alone.
    Returns (the grid in eval mode, per-step training losses (G, steps)).
    """
    cfg = _shared_config(configs)
    task = train.task
    n, num_views, in_dim = train.x.shape
    out_dim = _num_outputs(cfg, train.labels)
    heads = [_make_head(c, in_dim=in_dim, out_dim=out_dim) for c in configs]
    grid = HeadGrid(heads, in_dim=in_dim, batchnorm=cfg.batchnorm, task=task).to(device)
    optimizer = _head_optimizer(grid, configs)
    targets, num_valid = _targets(train), torch.as_tensor(train.num_valid)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = n // batch
    total = steps_per_epoch * cfg.epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses: list[torch.Tensor] = []
    grid.train()
    bar = progress_bar(total=total, desc=f"{cfg.kind} x{len(configs)}", enabled=progress)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=generator)
        for b in range(steps_per_epoch):
            rows = perm[b * batch : (b + 1) * batch]  # (B,)
            cols = _sample_clips(
                num_valid[rows],
                num_views=num_views,
                count=cfg.clips_per_sample,
                generator=generator,
            )  # (B, S)
            x = _gather(train.x, rows, cols, device).reshape(-1, in_dim)  # (B*S, F)
            y = targets[rows].repeat_interleave(cfg.clips_per_sample, dim=0).to(device)
            per_head = _head_losses(grid(x), y, task)  # (G,)
            factor = warmup_cosine(epoch * steps_per_epoch + b, total=total, warmup=warmup)
            for group, c in zip(optimizer.param_groups, configs, strict=True):
                group["lr"] = c.lr * factor
            optimizer.zero_grad(set_to_none=True)
            # Heads share no parameters, so the sum hands each head exactly its own gradient.
            per_head.sum().backward()
            optimizer.step()
            losses.append(per_head.detach())
            bar.update(1)
        if losses:
            logger.debug("epoch %d: head losses %s", epoch, losses[-1].tolist())
    bar.close()
    grid.eval()
    history = torch.stack(losses, dim=1).cpu().numpy() if losses else np.zeros((len(configs), 0))
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
    device = next(grid.heads.parameters()).device
    grid.eval()
    out = []
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        x = _gather(data.x, rows, None, device)  # (B, V, F)
        b, v, f = x.shape
        per_view = grid(x.reshape(b * v, f), heads=heads)  # (G, B*V, C)
        per_view = per_view.reshape(per_view.shape[0], b, v, -1)  # (G, B, V, C)
        if grid.task == "classification":
            per_view = per_view.softmax(dim=-1)  # (G, B, V, C)
        nv = torch.as_tensor(data.num_valid[start : start + b])
        out.append(mean_over_valid(per_view.permute(1, 2, 0, 3), nv).cpu())  # (B, G, C)
    num_heads = len(grid.heads) if heads is None else len(heads)
    if not out:
        return np.zeros((num_heads, 0, 0), dtype=np.float32)
    return torch.cat(out).permute(1, 0, 2).numpy()  # (G, N, C)


# --------------------------------------------------------------------------- one interface


def fit_predict(
    config: ProbeConfig,
    train: ProbeData,
    test: ProbeData,
    *,
    device: Device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Fit one probe on `train` and score `test`: (Nte, C) class scores or (Nte, T) predictions.

    kNN scores are summed vote weights; linear/MLP scores are view-averaged probabilities.
    `test.labels` is not read.
    """
    if config.kind == "knn":
        return _knn_predict(config, train, [test], device=device)[0]
    grid, _ = fit_heads([config], train, device=device, progress=progress)
    return predict_heads(grid, test, batch_size=config.batch_size)[0]


@dataclass(frozen=True)
class GridResult:
    """One config's scores on the validation set, its metric (higher is better) and its
    validation loss (lower is better; breaks ties of the metric)."""

    config: ProbeConfig
    scores: np.ndarray  # (Nval, C)
    metric: float  # top-1 accuracy in % (classification) or negative MSE (regression)
    metric_name: Literal["top1", "neg_mse"]
    loss: float = math.nan  # cross-entropy of the normalised scores, or MSE


def validation_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Lower is better. Class labels: mean negative log of the true class's share of the row's
    scores (probabilities, or kNN vote weights normalised per row), floored at 1e-12. Float
    targets: the mean squared error."""
    scores = _to_numpy(scores).astype(np.float64)
    labels = _to_numpy(labels)
    if np.issubdtype(labels.dtype, np.floating):
        return mean_squared_error(scores, labels)
    if len(labels) == 0:
        return 0.0
    total = np.clip(scores, 0.0, None).sum(axis=1)
    p = np.clip(scores[np.arange(len(labels)), labels.astype(np.int64)], 0.0, None)
    p = np.where(total > 0, p / np.where(total > 0, total, 1.0), 0.0)
    return float(-np.log(np.maximum(p, 1e-12)).mean())


def select_index(metrics: Sequence[float], losses: Sequence[float], *, tol: float = 1e-9) -> int:
    """Index of the best metric (higher is better); metrics within `tol` of the best count as
    tied, and a tie goes to the lowest loss (NaN losses last), then to the earliest index."""
    if not metrics:
        raise ValueError("no grid results to select from")
    best = max(metrics)
    tied = [i for i, m in enumerate(metrics) if m >= best - tol]
    return min(tied, key=lambda i: (math.isnan(losses[i]), losses[i], i))


def _fit_grid(
    configs: Sequence[ProbeConfig],
    train: ProbeData,
    val: ProbeData,
    *,
    device: Device,
    progress: bool,
) -> tuple[list[GridResult], Callable[[int, ProbeData], np.ndarray]]:
    """Grid results on `val`, plus predict(i, data) that scores new data with config i's probe."""
    if val.labels is None:
        raise ValueError("model selection needs validation labels")
    scores: list[np.ndarray | None] = [None] * len(configs)
    predictors: dict[int, Callable[[ProbeData], np.ndarray]] = {}
    passes: dict[ProbeConfig, list[int]] = {}
    for i, c in enumerate(configs):
        if c.kind == "knn":
            scores[i] = _knn_predict(c, train, [val], device=device)[0]
            predictors[i] = lambda d, c=c: _knn_predict(c, train, [d], device=device)[0]
        else:
            passes.setdefault(_grid_key(c), []).append(i)
    for members in passes.values():
        grid, _ = fit_heads([configs[i] for i in members], train, device=device, progress=progress)
        batch = configs[members[0]].batch_size
        for g, (i, s) in enumerate(
            zip(members, predict_heads(grid, val, batch_size=batch), strict=True)
        ):
            scores[i] = s
            predictors[i] = lambda d, grid=grid, g=g, b=batch: predict_heads(
                grid, d, batch_size=b, heads=[g]
            )[0]
    results = []
    for c, s in zip(configs, scores, strict=True):
        results.append(_grid_result(c, s, val.labels))
    return results, lambda i, d: predictors[i](d)


def _grid_result(config: ProbeConfig, scores: np.ndarray, labels: np.ndarray) -> GridResult:
    if np.issubdtype(labels.dtype, np.floating):
        metric, name = -mean_squared_error(scores, labels), "neg_mse"
    else:
        metric, name = topk_accuracy(scores, labels, ks=(1,))[1], "top1"
    return GridResult(
        config=config,
        scores=scores,
        metric=metric,
        metric_name=name,
        loss=validation_loss(scores, labels),
    )


def fit_grid(
    configs: Sequence[ProbeConfig],
    train: ProbeData,
    val: ProbeData,
    *,
    device: Device = "cpu",
    progress: bool = False,
) -> list[GridResult]:
    """Fit every config on `train` and score it on `val`, in the order given.

    Linear/MLP configs that differ only in lr / weight_decay train together in one pass
    (see :func:`make_grid`); kNN configs run one by one. Reads train and val labels only.
    """
    return _fit_grid(configs, train, val, device=device, progress=progress)[0]


def cross_validate(
    configs: Sequence[ProbeConfig],
    folds: Sequence[tuple[ProbeData, ProbeData]],
    *,
    device: Device = "cpu",
    progress: bool = False,
) -> list[GridResult]:
    """Fit every config on each fold's (train, val) pair; each GridResult holds the scores of
    all folds' validation videos, concatenated in fold order, and the metric and loss over
    them, so that with k folds of a train split every video of it is scored once. One fold is
    plain hold-out validation (:func:`fit_grid`)."""
    if not folds:
        raise ValueError("cross-validation needs at least one fold")
    per_fold = [fit_grid(configs, tr, va, device=device, progress=progress) for tr, va in folds]
    labels = np.concatenate([va.labels for _, va in folds])
    return [
        _grid_result(c, np.concatenate([r[i].scores for r in per_fold]), labels)
        for i, c in enumerate(configs)
    ]


def select_config(results: Sequence[GridResult]) -> ProbeConfig:
    """The config with the best validation metric; ties go to the lower validation loss, then
    to the earliest in `results` (see :func:`select_index`)."""
    if not results:
        raise ValueError("no grid results to select from")
    return results[select_index([r.metric for r in results], [r.loss for r in results])].config


@dataclass(frozen=True)
class Selection:
    """The config chosen on validation, its test scores (Nte, C), and the whole grid."""

    config: ProbeConfig
    test_scores: np.ndarray
    grid: list[GridResult]


def select_and_predict(
    configs: Sequence[ProbeConfig],
    *,
    train: ProbeData,
    val: ProbeData,
    test: ProbeData,
    device: Device = "cpu",
    progress: bool = False,
) -> Selection:
    """Fit the grid on `train` (one pass per compatible group), pick a config on `val`, and score
    `test` with that config's already trained probe. `test.labels` is never read."""
    results, predict = _fit_grid(configs, train, val, device=device, progress=progress)
    chosen = select_config(results)
    index = next(i for i, r in enumerate(results) if r.config is chosen)
    logger.info(
        "selected %s (val %s %.4f)", chosen, results[index].metric_name, results[index].metric
    )
    return Selection(config=chosen, test_scores=predict(index, test), grid=results)


# --------------------------------------------------------------------------- protocol helpers


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def train_val_split(
    labels: np.ndarray | torch.Tensor, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into sorted (train_idx, val_idx).

    Integer labels are stratified: class c sends round(val_fraction * n_c) samples to val, but
    always keeps one for train. Float (regression) labels are split at random.
    """
    labels = _to_numpy(labels)
    rng = np.random.default_rng(seed)
    if np.issubdtype(labels.dtype, np.floating):
        perm = rng.permutation(labels.shape[0])
        n_val = _round_half_up(val_fraction * labels.shape[0])
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(_round_half_up(val_fraction * len(members)), len(members) - 1)
        val.append(members[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(labels.shape[0]), val_idx)
    return train_idx, val_idx


def stratified_folds(
    labels: np.ndarray | torch.Tensor, *, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded k-fold partition: `folds` pairs of sorted (train_idx, val_idx), every index in
    exactly one val_idx. Integer labels are dealt class by class round-robin from a shuffled
    order (each class spread evenly over the folds, fold sizes within one of each other);
    float labels are shuffled and cut into near-equal parts."""
    labels = _to_numpy(labels)
    n = labels.shape[0]
    if folds < 2 or folds > n:
        raise ValueError(f"k-fold cross-validation needs 2 <= folds <= {n} videos, got {folds}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(n, dtype=np.int64)
    if np.issubdtype(labels.dtype, np.floating):
        assignment[rng.permutation(n)] = np.arange(n) % folds
    else:
        offset = 0  # continue the deal where the last class stopped, to balance fold sizes
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            assignment[members] = (offset + np.arange(len(members))) % folds
            offset += len(members)
    everything = np.arange(n)
    return [(everything[assignment != f], everything[assignment == f]) for f in range(folds)]


def low_shot_subset(labels: np.ndarray | torch.Tensor, *, fraction: float, seed: int) -> np.ndarray:
    """Seeded, class-balanced sorted subset: each class keeps max(1, round(fraction * n_c))."""
    labels = _to_numpy(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        keep.append(members[: max(1, _round_half_up(fraction * len(members)))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def topk_accuracy(
    scores: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5),
) -> dict[int, float]:
    """Top-k accuracy in % for scores (N, C) and labels (N,).

    k > 1 is reported only when C > k (top-5 of 5 classes is always 100%). Ties in scores go to
    the lower class index.
    """
    scores, labels = _to_numpy(scores), _to_numpy(labels).astype(np.int64)
    num_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")  # (N, C)
    result = {}
    for k in ks:
        if k == 1 or k < num_classes:
            hit = (order[:, :k] == labels[:, None]).any(axis=1)
            result[k] = 100.0 * float(hit.mean()) if len(labels) else 0.0
    return result


def mean_squared_error(
    predictions: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor
) -> float:
    """Mean squared error of predictions (N, T) against targets (N,) or (N, T)."""
    predictions = _to_numpy(predictions).astype(np.float64)
    targets = _to_numpy(targets).astype(np.float64).reshape(predictions.shape)
    return float(np.mean((predictions - targets) ** 2))
