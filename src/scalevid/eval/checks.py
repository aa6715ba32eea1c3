"""The evaluation's input checks: the stores agree with each other and with the run, the task
and its labels, which videos are scored, which probe rows can run. Each problem is one
ValueError that names the store and the fix."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from scalevid.eval.config import EvalConfig, Task
from scalevid.eval.probes import is_regression
from scalevid.eval.rows import ROWS, ProbeName
from scalevid.model import ScaleModel
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)


def check_stores(train: FeatureStore, test: FeatureStore) -> None:
    if train.dim != test.dim:
        raise ValueError(f"train store has D={train.dim} features, test store D={test.dim}")
    if test.manifest.sampling.get("mode") != "test":
        logger.warning(
            "%s was sampled in %r mode; the paper scores T x S test views per video",
            test.path,
            test.manifest.sampling.get("mode"),
        )


def check_model(model: ScaleModel | None, train: FeatureStore) -> None:
    if model is not None and model.config.input_dim != train.dim:
        raise ValueError(
            f"the run's predictor reads D={model.config.input_dim} features, the stores hold "
            f"D={train.dim}: evaluate with stores of the backbone it was trained on"
        )


def task_and_labels(
    train: FeatureStore, test: FeatureStore, task: str
) -> tuple[Task, np.ndarray, np.ndarray]:
    """(task, train labels (N,), test labels (Nte,)); unlabelled = -1 or NaN."""
    if task == "auto":
        has_labels = (train.labels >= 0).any()
        task = "regression" if not has_labels and train.targets is not None else "classification"
    if task == "classification":
        return "classification", train.labels, test.labels
    if train.targets is None or test.targets is None:
        raise ValueError("regression needs targets in both the train and the test store")
    return "regression", train.targets, test.targets


def runnable_probes(
    config: EvalConfig, task: Task, *, has_run: bool
) -> tuple[list[ProbeName], list[str]]:
    """(the probes of `config` that can run, the others sorted): SCALE rows need a run, kNN
    rows class labels."""
    probes = [p for p in config.probes if has_run or not ROWS[p].needs_run]
    probes = [p for p in probes if task == "classification" or not ROWS[p].classification_only]
    skipped = sorted(set(config.probes) - set(probes))
    if skipped:
        logger.warning("skipping %s (%s)", skipped, task if has_run else "no run")
    if not probes:
        raise ValueError("no probe can run: the SCALE probes need a run")
    return probes, skipped


@dataclass(frozen=True)
class Scored:
    """The videos an evaluation trains and scores on, and the classes."""

    train_rows: np.ndarray  # the labelled train videos
    test_rows: np.ndarray  # the labelled test videos: all that are scored
    y_test: np.ndarray  # (len(test_rows),) their labels, in the train store's class indices
    num_classes: int | None  # None for regression
    class_names: list[str]


def scored_videos(
    train: FeatureStore,
    test: FeatureStore,
    task: Task,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> Scored:
    train_rows = _labelled(train_labels)
    test_rows = _labelled(test_labels)
    if len(test_rows) == 0:
        raise ValueError(f"{test.path}: no labelled test videos to score")
    num_classes = None
    class_names = list(train.manifest.class_names)
    if task == "classification":
        num_classes = len(class_names) or int(train_labels[train_rows].max()) + 1
        test_labels = _check_test_classes(train, test, test_labels, num_classes)
        test_rows = _labelled(test_labels)
    return Scored(train_rows, test_rows, test_labels[test_rows], num_classes, class_names)


def _labelled(labels: np.ndarray) -> np.ndarray:
    if is_regression(labels):
        return np.flatnonzero(~np.isnan(labels))
    return np.flatnonzero(labels >= 0)


def _check_test_classes(
    train: FeatureStore, test: FeatureStore, test_labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """The test labels in the train store's class indices; a clear error when the test store
    has classes the train store lacks (no probe could predict them)."""
    train_names, test_names = train.manifest.class_names, test.manifest.class_names
    fix = "extract both splits from lists with the same classes (e.g. one classes.txt)"
    if train_names and test_names and train_names != test_names:
        lacking = [n for n in test_names if n not in train_names]
        used = {test_names[i] for i in np.unique(test_labels[test_labels >= 0])}
        lacking = [n for n in lacking if n in used]
        if lacking:
            raise ValueError(
                f"{test.path}: test videos have {len(lacking)} class(es) that the train store "
                f"{train.path} lacks ({lacking[:5]}); {fix}"
            )
        index = {n: i for i, n in enumerate(train_names)}
        mapping = np.array([index.get(n, -1) for n in test_names], np.int64)
        logger.info("mapping the test store's class indices to the train store's by name")
        return np.where(test_labels >= 0, mapping[np.maximum(test_labels, 0)], test_labels)
    high = test_labels >= num_classes
    if high.any():
        raise ValueError(
            f"{test.path}: {int(high.sum())} test video(s) have labels up to "
            f"{int(test_labels.max())}, but the train store {train.path} has {num_classes} "
            f"classes; {fix}"
        )
    return test_labels
