"""The probe interface: per-video sets of frozen clip vectors, one probe's hyperparameters, and
the per-video mean the kNN probe and the report read.

A probe sees per-video sets of clip vectors ``x (N, V, F)`` whose first ``num_valid[i]`` views
are valid for video ``i``. ``F`` is ``D`` for raw backbone features or ``D + H`` for
``[clip feature, SET output]``. Labels are ``(N,)`` int64 class ids (classification) or float
targets ``(N,)`` / ``(N, T)`` (regression; linear and MLP probes only).

The probes themselves live next door, in pipeline order: `scalevid.eval.splits` (seeded
train/val splits, folds, low-shot subsets and the test metrics), `scalevid.eval.knn` (the kNN
vote), `scalevid.eval.heads` (a grid of linear / MLP heads trained in one pass) and
`scalevid.eval.selection` (fit a grid, choose on validation or cross-validation, score test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from scalevid.hardware import Precision

ProbeKind = Literal["knn", "linear", "mlp"]
OptimizerName = Literal["sgd", "adamw"]
Task = Literal["classification", "regression"]
Device = str | torch.device


def is_regression(labels: np.ndarray | torch.Tensor) -> bool:
    """Float labels are regression targets, integer labels class ids: the one place that says
    so."""
    return (
        bool(labels.dtype.is_floating_point)
        if isinstance(labels, torch.Tensor)
        else bool(np.issubdtype(np.asarray(labels).dtype, np.floating))
    )


def fitted_batch(batch_size: int, num_videos: int) -> int:
    """The batch a probe trains with: `batch_size` videos, or all of them when it has fewer."""
    return max(1, min(batch_size, num_videos))


def steps_per_epoch(num_videos: int, batch_size: int) -> int:
    """Full batches in one pass over `num_videos` (at least 1; see `fitted_batch`)."""
    return max(1, num_videos // fitted_batch(batch_size, num_videos))


def to_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
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
            num_valid = to_numpy(self.num_valid).astype(np.int64).reshape(-1)
        if num_valid.shape != (n,) or (num_valid < 1).any() or (num_valid > v).any():
            raise ValueError(f"num_valid must be (N,)={n} ints in [1, {v}]")
        self.num_valid = num_valid
        if self.labels is not None:
            labels = to_numpy(self.labels)
            if labels.shape[0] != n:
                raise ValueError(f"labels have {labels.shape[0]} rows, x has {n}")
            if not is_regression(labels):
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
        return "regression" if is_regression(self.labels) else "classification"

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
    # The training forward passes' autocast (``hardware.autocast_dtype``: "auto" is bf16 where
    # the device has bf16 matrix units, else fp32); weights, optimizer and predictions stay fp32.
    precision: Precision = "fp32"


def make_grid(
    base: ProbeConfig, *, lrs: Sequence[float], weight_decays: Sequence[float] = (0.0,)
) -> list[ProbeConfig]:
    """`base` with every (lr, weight decay) pair, lr-major, in the order given."""
    return [dataclasses.replace(base, lr=lr, weight_decay=wd) for lr in lrs for wd in weight_decays]


def num_outputs(config: ProbeConfig, labels: np.ndarray) -> int:
    if is_regression(labels):
        return 1 if labels.ndim == 1 else int(labels.shape[1])
    return config.num_classes if config.num_classes is not None else int(labels.max()) + 1


# --------------------------------------------------------------------------- per-video vectors


def gather_views(
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
    nv = torch.as_tensor(to_numpy(num_valid).astype(np.int64))
    shift = None if center is None else torch.as_tensor(center, dtype=torch.float32, device=device)
    out = []
    for start in range(0, x.shape[0], chunk_size):
        rows = torch.arange(start, min(start + chunk_size, x.shape[0]))
        vec = mean_over_valid(gather_views(x, rows, None, device), nv[rows])  # (c, F)
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
