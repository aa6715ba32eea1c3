"""How much room a labelled feature store leaves for order-aware aggregation: the demo's gate.

Two multinomial logistic regressions on per-video vectors built from the stored clip features,
fitted on part of the train store and scored on a held-out validation part of it (the test
store is never read):

    order-blind baseline   the mean of a video's clip features (D): a bag of clips, which is
                           what mean pooling of any frozen clip representation can know;
    order-aware oracle     [mean of the early clips, mean of the late clips] (2D), "early" =
                           starting before the median start of the video's clips, read from the
                           true boxes: it is handed the clips' temporal order.

The oracle bounds from below what an aggregator that learns order from the boxes (SCALE, the
set probes) could reach with these features and this many videos; the baseline is what an
order-blind row can reach. A demo is a fair experiment with room for SCALE's result when the
oracle is high and the baseline is near chance; `scalevid demo` measures both before SCALE
runs and prints them in its report.

The regressions are full-batch L-BFGS on standardised features; each vector's L2 strength is
chosen from `CeilingConfig.cs` by cross-validation inside the fitted part (never on the
validation split, which would flatter both numbers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from scalevid.eval.splits import train_val_split
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CeilingConfig:
    """Settings of the gate.

    Attributes:
        val_fraction: share of each class held out for validation (as the probes do).
        seeds: validation splits to average over (each a seeded class-balanced split).
        cs: inverse L2 strengths to choose from, in scikit-learn's convention: the loss is the
            mean cross-entropy plus ``||W||^2 / (2 * c * n)`` for n fitted videos.
        folds: cross-validation folds inside the fitted part that choose c (1 = no choice,
            the first of ``cs``).
        max_iter: L-BFGS iterations.
        oracle_min: the design rule's floor on the oracle (validation top-1 %): the features
            must hold the label.
        min_order_gain: the design rule's floor on oracle minus order-blind baseline (points):
            that much of the label must need the order, which is what SCALE's set
            representations can add over a bag of clips.
    """

    val_fraction: float = 0.2
    seeds: tuple[int, ...] = (0, 1, 2)
    cs: tuple[float, ...] = (0.01,)  # the strength the earlier diagnostics used (docs/demo.md)
    folds: int = 1
    max_iter: int = 100
    oracle_min: float = 80.0
    min_order_gain: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.seeds:
            raise ValueError("the ceiling needs at least one seed")
        if not self.cs or min(self.cs) <= 0:
            raise ValueError(f"cs must be positive, got {self.cs}")
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")


@dataclass(frozen=True)
class Ceiling:
    """The gate's two numbers (validation top-1 in %, mean over the seeds' splits).

    Attributes:
        baseline: order-blind mean-pool regression.
        oracle: order-aware [early, late] regression.
        baseline_per_seed, oracle_per_seed: the same per validation split.
        chance: 100 / number of classes.
        num_fit, num_val: videos fitted and scored per split (first seed).
        oracle_min, min_order_gain: the design rule's thresholds (`CeilingConfig`).
    """

    baseline: float
    oracle: float
    baseline_per_seed: tuple[float, ...]
    oracle_per_seed: tuple[float, ...]
    chance: float
    num_fit: int
    num_val: int
    oracle_min: float = 80.0
    min_order_gain: float = 20.0

    def passes(self) -> bool:
        """The demo's design rule: the oracle reaches `oracle_min` and beats the order-blind
        baseline by at least `min_order_gain` points."""
        return self.oracle >= self.oracle_min and self.oracle - self.baseline >= self.min_order_gain

    def rule(self) -> str:
        """The design rule in words, with its thresholds."""
        return (
            f"oracle >= {self.oracle_min:g}%, and oracle - order-blind baseline >= "
            f"{self.min_order_gain:g} points"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ceiling:
        """The inverse of `to_dict`; other keys (ceiling.json's timings, dataset) are left."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for name in ("baseline_per_seed", "oracle_per_seed"):
            values[name] = tuple(values[name])
        return cls(**values)

    def summary(self) -> str:
        return (
            f"order-blind baseline {self.baseline:.1f}%, order-aware oracle {self.oracle:.1f}% "
            f"(validation top-1, {self.num_val} of {self.num_fit + self.num_val} train videos, "
            f"{len(self.oracle_per_seed)} split(s); chance {self.chance:.1f}%)"
        )


def mean_vectors(features: np.ndarray, num_clips: np.ndarray) -> np.ndarray:
    """(N, K, D) clip features, (N,) valid counts -> (N, D) mean over each video's valid clips."""
    valid = np.arange(features.shape[1])[None, :] < num_clips[:, None]  # (N, K)
    total = np.einsum("nkd,nk->nd", features, valid.astype(features.dtype))
    return total / np.maximum(num_clips, 1)[:, None].astype(features.dtype)


def halves_vectors(features: np.ndarray, starts: np.ndarray, num_clips: np.ndarray) -> np.ndarray:
    """(N, K, D) features, (N, K) clip start times, (N,) valid counts -> (N, 2D):
    [mean of clips starting before the video's median start, mean of the others].

    A video whose clips all start at the same time uses them for both halves.
    """
    n, k, d = features.shape
    rows = np.empty((n, 2 * d), dtype=np.float32)
    for i in range(n):
        m = int(num_clips[i])
        if m == 0:
            raise ValueError(f"video {i} has no valid clips")
        s = starts[i, :m]
        early = s < np.median(s)
        late = ~early
        if not early.any():
            early = late
        rows[i, :d] = features[i, :m][early].mean(axis=0)
        rows[i, d:] = features[i, :m][late].mean(axis=0)
    return rows


def logistic_accuracy(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    num_classes: int,
    c: float = 0.01,
    max_iter: int = 200,
) -> float:
    """Top-1 (%) on (x_val, y_val) of an L2-regularised softmax regression fitted on (x_fit,
    y_fit); features standardised with the fit part's statistics. x: (N, F), y: (N,) int."""
    x = torch.as_tensor(np.asarray(x_fit, dtype=np.float32))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    xv = (torch.as_tensor(np.asarray(x_val, dtype=np.float32)) - mean) / std
    y = torch.as_tensor(np.asarray(y_fit, dtype=np.int64))
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float32, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float32, requires_grad=True)
    penalty = 1.0 / (2.0 * c * len(x))
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = (xv @ w + b).argmax(1).numpy()
    return float(100.0 * (predicted == np.asarray(y_val)).mean())


def _choose_c(x: np.ndarray, y: np.ndarray, num_classes: int, config: CeilingConfig) -> float:
    """The c of `config.cs` with the best mean accuracy over `config.folds` class-balanced
    folds of (x, y); ties go to the stronger penalty (the earlier c)."""
    if config.folds < 2 or len(config.cs) == 1:
        return config.cs[0]
    rng = np.random.default_rng(0)
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = np.arange(len(members)) % config.folds
    best: tuple[float, float] | None = None
    for c in config.cs:
        scores = [
            logistic_accuracy(
                x[fold != f],
                y[fold != f],
                x[fold == f],
                y[fold == f],
                num_classes=num_classes,
                c=c,
                max_iter=config.max_iter,
            )
            for f in range(config.folds)
            if (fold == f).any() and (fold != f).any()
        ]
        score = float(np.mean(scores))
        if best is None or score > best[0]:
            best = (score, c)
    assert best is not None
    return best[1]


def measure_ceiling(
    store: FeatureStore | str,
    config: CeilingConfig | None = None,
    *,
    num_classes: int | None = None,
) -> Ceiling:
    """The gate on a labelled train store (unlabelled videos, label -1, are left out)."""
    config = config or CeilingConfig()
    store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    labels = np.asarray(store.labels)
    rows = np.flatnonzero(labels >= 0)
    if len(rows) == 0:
        raise ValueError(f"{store.path}: no labelled videos to measure the ceiling on")
    if num_classes is None:
        num_classes = len(store.manifest.class_names) or int(labels[rows].max()) + 1
    features = np.asarray(store.features(rows), dtype=np.float32)  # (N, K, D)
    num_clips = np.asarray(store.num_clips)[rows]
    starts = np.asarray(store.boxes)[rows, :, 1]  # (N, K) normalised t0
    return ceiling_from_arrays(features, starts, num_clips, labels[rows], num_classes, config)


def ceiling_from_arrays(
    features: np.ndarray,
    starts: np.ndarray,
    num_clips: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: CeilingConfig | None = None,
) -> Ceiling:
    """The gate on arrays: features (N, K, D), clip starts (N, K), num_clips (N,), labels (N,)."""
    config = config or CeilingConfig()
    pooled = mean_vectors(features, num_clips)
    ordered = halves_vectors(features, starts, num_clips)
    baseline: list[float] = []
    oracle: list[float] = []
    sizes: Sequence[int] = ()
    for seed in config.seeds:
        fit, val = train_val_split(labels, val_fraction=config.val_fraction, seed=seed)
        if len(val) == 0:
            raise ValueError(f"{len(labels)} videos leave an empty validation split")
        sizes = sizes or (len(fit), len(val))
        for vectors, scores in ((pooled, baseline), (ordered, oracle)):
            c = _choose_c(vectors[fit], labels[fit], num_classes, config)
            scores.append(
                logistic_accuracy(
                    vectors[fit],
                    labels[fit],
                    vectors[val],
                    labels[val],
                    num_classes=num_classes,
                    c=c,
                    max_iter=config.max_iter,
                )
            )
    result = Ceiling(
        baseline=float(np.mean(baseline)),
        oracle=float(np.mean(oracle)),
        baseline_per_seed=tuple(baseline),
        oracle_per_seed=tuple(oracle),
        chance=100.0 / num_classes,
        num_fit=int(sizes[0]),
        num_val=int(sizes[1]),
        oracle_min=config.oracle_min,
        min_order_gain=config.min_order_gain,
    )
    logger.info("ceiling: %s", result.summary())
    return result
