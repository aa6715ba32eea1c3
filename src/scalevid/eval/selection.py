"""Model selection: fit a grid of probe configs on train, choose one on validation, score test.

:func:`fit_grid`, :func:`cross_validate`, :func:`select_config` and :func:`select_and_predict`
read only train and validation labels. The best validation metric wins; ties (common on a small
validation set) go to the lower validation loss, then to the earlier config.
:func:`scalevid.eval.splits.stratified_folds` gives the k-fold partition used when a held-out
validation split would be too small to choose on. :func:`fit_predict` fits one probe, kNN or
head, behind the same interface.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scalevid.eval.heads import fit_heads, grid_key, predict_heads
from scalevid.eval.knn import knn_predict
from scalevid.eval.probes import Device, ProbeConfig, ProbeData, is_regression, to_numpy
from scalevid.eval.splits import mean_squared_error, topk_accuracy

logger = logging.getLogger(__name__)


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
        return knn_predict(config, train, [test], device=device)[0]
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
    scores = to_numpy(scores).astype(np.float64)
    labels = to_numpy(labels)
    if is_regression(labels):
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
            scores[i] = knn_predict(c, train, [val], device=device)[0]
            predictors[i] = lambda d, c=c: knn_predict(c, train, [d], device=device)[0]
        else:
            passes.setdefault(grid_key(c), []).append(i)
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
    if is_regression(labels):
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
