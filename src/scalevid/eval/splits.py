"""Who trains, who chooses and who is scored: seeded, class-balanced train/val splits, k-fold
partitions and low-shot subsets of the labelled train videos, and the metrics on test.

Only indices and labels are read here; no probe is trained. Test labels are read by nothing in
`scalevid.eval` except the final scoring calls, :func:`topk_accuracy` and
:func:`mean_squared_error`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scalevid.eval.probes import is_regression, to_numpy

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- splits


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def train_val_split(
    labels: np.ndarray | torch.Tensor, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into sorted (train_idx, val_idx).

    Integer labels are stratified: class c sends round(val_fraction * n_c) samples to val, but
    always keeps one for train. Float (regression) labels are split at random.
    """
    labels = to_numpy(labels)
    rng = np.random.default_rng(seed)
    if is_regression(labels):
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
    labels = to_numpy(labels)
    n = labels.shape[0]
    if folds < 2 or folds > n:
        raise ValueError(f"k-fold cross-validation needs 2 <= folds <= {n} videos, got {folds}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(n, dtype=np.int64)
    if is_regression(labels):
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
    labels = to_numpy(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        keep.append(members[: max(1, _round_half_up(fraction * len(members)))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- metrics


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
    scores, labels = to_numpy(scores), to_numpy(labels).astype(np.int64)
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
    predictions = to_numpy(predictions).astype(np.float64)
    targets = to_numpy(targets).astype(np.float64).reshape(predictions.shape)
    return float(np.mean((predictions - targets) ** 2))


# --------------------------------------------------------------------------- one seed


@dataclass(frozen=True)
class Split:
    """Rows of the train store for one seed: `train` (the final fit; low-shot applied), and the
    (fit, val) row pairs that model selection trains and scores on: one hold-out pair, or the
    k folds of a cross-validation of `train`."""

    train: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def cross_validated(self) -> bool:
        return len(self.folds) > 1

    @property
    def num_val(self) -> int:
        """Videos scored in selection (all of train under cross-validation)."""
        return sum(len(val) for _, val in self.folds)

    @property
    def fit(self) -> np.ndarray:
        """The hold-out fit rows (not defined under cross-validation)."""
        if self.cross_validated:
            raise AttributeError("a cross-validated split has one fit set per fold: use .folds")
        return self.folds[0][0]

    @property
    def val(self) -> np.ndarray:
        """The hold-out validation rows (not defined under cross-validation)."""
        if self.cross_validated:
            raise AttributeError("a cross-validated split has one val set per fold: use .folds")
        return self.folds[0][1]

    def arrays(self) -> dict[str, np.ndarray]:
        """What splits/seed<S>.npz stores: train, and fit/val (hold-out) or fold<i>_fit/_val."""
        if not self.cross_validated:
            return {"train": self.train, "fit": self.fit, "val": self.val}
        out = {"train": self.train}
        for i, (fit, val) in enumerate(self.folds):
            out[f"fold{i}_fit"], out[f"fold{i}_val"] = fit, val
        return out


def make_split(
    labels: np.ndarray,
    *,
    labelled: np.ndarray,
    val_fraction: float,
    low_shot: float | None,
    seed: int,
    min_val_videos: int = 0,
    cv_folds: int = 5,
) -> Split:
    """Low-shot subset (class-balanced, seeded) of the labelled rows, then a seeded
    class-balanced (fit, val) split of it; when that val would hold fewer than
    `min_val_videos` videos, a seeded stratified `cv_folds`-fold partition of the subset
    instead (fewer folds when the subset has fewer videos). labels (N,) over the whole store."""
    pool = np.asarray(labelled, dtype=np.int64)
    if low_shot is not None and low_shot < 1.0:
        if is_regression(labels):
            raise ValueError("low-shot subsets are defined for class labels only")
        pool = pool[low_shot_subset(labels[pool], fraction=low_shot, seed=seed)]
    fit, val = train_val_split(labels[pool], val_fraction=val_fraction, seed=seed)
    if len(val) < min_val_videos and len(pool) >= 2:
        folds = stratified_folds(labels[pool], folds=min(cv_folds, len(pool)), seed=seed)
        logger.info(
            "seed %d: a %d-video validation split is below %d: %d-fold cross-validation on "
            "%d train videos",
            seed,
            len(val),
            min_val_videos,
            len(folds),
            len(pool),
        )
        return Split(train=pool, folds=tuple((pool[f], pool[v]) for f, v in folds))
    if len(val) == 0 or len(fit) == 0:
        raise ValueError(
            f"{len(pool)} training videos leave an empty fit or validation split; "
            "use more data, a larger low-shot fraction or another val_fraction"
        )
    return Split(train=pool, folds=((pool[fit], pool[val]),))
