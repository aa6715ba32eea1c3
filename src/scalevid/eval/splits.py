"""Who trains, who chooses and who is scored: seeded, class-balanced train/val splits, k-fold
partitions and low-shot subsets of the labelled train videos, and the metrics on test.

Only indices and labels are read here; no probe is trained. Test labels are read by nothing in
`scalevid.eval` except the final scoring calls, :func:`topk_accuracy` and
:func:`mean_squared_error`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from scalevid.eval.probes import to_numpy

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
    labels = to_numpy(labels)
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
