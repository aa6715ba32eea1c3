"""Evaluation protocols: the paper's probe rows on a train/test pair of feature stores, written
as results.json, a markdown table, and plots.

Rows (baseline -> SCALE counterpart):

    knn          -> scale_knn      kNN (k=20, T=0.07) on one vector per video
    linear       -> scale_linear   linear head per clip, softmax averaged over a video's views
    mlp                            MLP head per clip on raw features
    transformer  -> scale_ft       SCALE architecture trained on clip sets (random init / pretrained)

Representations (N videos, V views, D feature dim, H SCALE hidden dim):
    baseline per-clip vectors: the raw clip features (N, V, D);
    SCALE per-clip vectors: [clip feature, SET output] (N, V, D + H), the SET output computed by
    the pretrained predictor over all valid clips of the video (train store: its K clips; test
    store: all its views). `clip_vector="token"` uses the contextualised clip token instead of
    the raw feature: [token, SET] (N, V, 2H).
kNN vectors are the mean over a video's clips of those per-clip vectors; for SCALE_kNN the clip
part and the SET part are L2-normalised separately before the whole (`scale_knn_normalize`;
the chosen config's `parts` records it), so the part with the larger norm does not dominate.
Linear heads (linear and scale_linear alike) choose the non-affine BatchNorm on validation
(`linear_batchnorm`), so a SCALE row and its baseline are normalised the same way.

Protocol, for every seed:
    1. labelled train videos -> optional class-balanced low-shot subset (`low_shot_subset`);
       this is the probe's *train split*;
    2. train split -> (fit, val) with a seeded, class-balanced `train_val_split`; when val would
       hold fewer than `min_val_videos` videos, `cv_folds`-fold stratified cross-validation on
       the train split instead (every train video is then scored once in selection);
    3. every probe's grid is trained on fit (each fold's) and scored on val (all folds' pooled);
       the best val metric is chosen, ties going to the lower validation loss, then to the
       earlier config;
    4. the chosen config is retrained on the whole train split and scored once on test.
Set-probe budgets are optimizer steps: `finetune_epochs` E means E passes over the *train
split* (at least `finetune_min_steps` steps), and every fold trains that same number of steps, so
the budget chosen on a fold is the budget retrained on train.
Test labels are read only in step 4's scoring (and by the report's confusion matrix and map).
Mean and sample std over seeds are reported for top-1 (and top-5 with more than 5 classes),
or MSE for regression targets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from scalevid.eval.config import (
    BASELINE_OF,
    CLASSIFICATION_ONLY,
    LABELS,
    NEEDS_RUN,
    PROBES,
    EvalConfig,
    Task,
)
from scalevid.eval.probes import (
    ProbeConfig,
    ProbeData,
    cross_validate,
    fit_predict,
    low_shot_subset,
    make_grid,
    mean_squared_error,
    select_config,
    select_index,
    stratified_folds,
    topk_accuracy,
    train_val_split,
    validation_loss,
    video_vectors,
)
from scalevid.eval.set_probes import (
    FinetuneConfig,
    SetData,
    fit_set_probes,
    predict_set_probes,
    steps_per_epoch,
)
from scalevid.folders import PREDICTIONS, RESULTS, RESULTS_TABLE
from scalevid.hardware import resolve_device
from scalevid.model import ModelConfig, ScaleModel
from scalevid.progress import progress_bar
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- representations


class ClipVectors:
    """A lazy (N, V, F) array of per-clip vectors: clip part (N, V, Fc) with an optional
    per-video part (N, Fe) appended to every view, F = Fc + Fe. Rows are read on demand.

    Supports what the probes index with: `x[rows]` (a lazy view of those videos),
    `x[rows[:, None], cols]` (B, S, F) with cols (B, S), and `np.asarray(x)`.
    """

    def __init__(
        self,
        clips: FeatureStore | np.ndarray,
        *,
        extra: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.clips = clips
        self.extra = extra
        n = len(clips)
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        if extra is not None and extra.shape[0] != n:
            raise ValueError(f"extra has {extra.shape[0]} rows, clips {n}")
        if isinstance(clips, FeatureStore):
            views, width = clips.clips_per_video, clips.dim
        else:
            views, width = clips.shape[1], clips.shape[2]
        self.shape = (len(self.rows), views, width + (0 if extra is None else extra.shape[1]))
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            rows, cols = key
            block = self._read(np.asarray(rows).reshape(-1))  # (B, V, F)
            return block[np.arange(block.shape[0])[:, None], np.asarray(cols)]  # (B, S, F)
        idx = np.arange(len(self))[key]
        return ClipVectors(self.clips, extra=self.extra, rows=self.rows[idx])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        rows = self.rows[idx]
        if isinstance(self.clips, FeatureStore):
            clips = self.clips.features(rows)  # (B, V, Fc) float16
        else:
            clips = np.asarray(self.clips[rows])
        if self.extra is None:
            return clips
        per_video = np.broadcast_to(
            self.extra[rows][:, None, :], (len(rows), clips.shape[1], self.extra.shape[1])
        )
        return np.concatenate([clips.astype(np.float32), per_video.astype(np.float32)], axis=2)


def scale_outputs(
    store: FeatureStore,
    model: ScaleModel,
    *,
    tokens: bool = False,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The predictor over each video's valid clips, in batches of videos.

    Returns SET outputs (N, H) float32 and, with `tokens`, the contextualised clip tokens
    (N, K, H) float16 (padded rows zero), else None.
    """
    n, k = len(store), store.clips_per_video
    h = model.config.hidden
    sets = np.zeros((n, h), dtype=np.float32)
    toks = np.zeros((n, k, h), dtype=np.float16) if tokens else None
    valid = store.clip_mask()  # (N, K)
    bar = progress_bar(total=n, desc="SCALE embed", unit="video", enabled=progress)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        feats = np.asarray(store.features(slice(start, stop)), dtype=np.float32)  # (B, K, D)
        out = model.embed(feats, store.boxes[start:stop], mask=valid[start:stop])
        sets[start:stop] = out.set.float().cpu().numpy()  # (B, H)
        if toks is not None:
            clip_tokens = out.clips.float().cpu().numpy() * valid[start:stop, :, None]
            toks[start:stop] = clip_tokens.astype(np.float16)  # (B, K, H)
        bar.update(stop - start)
    bar.close()
    return sets, toks


@dataclass
class Representations:
    """What the probes of one store read: raw clip features, and the SCALE vectors with a run."""

    raw: ClipVectors  # (N, K, D)
    scale: ClipVectors | None  # (N, K, D + H) or (N, K, 2H)
    sets: SetData  # clip sets for the transformer probes
    num_valid: np.ndarray  # (N,)


def representations(
    store: FeatureStore,
    model: ScaleModel | None,
    *,
    clip_vector: Literal["feature", "token"] = "feature",
    batch_size: int = 256,
    progress: bool = False,
) -> Representations:
    """Baseline and SCALE per-clip vectors of a store; memory O(N * H) beside the store's
    memmaps (plus O(N * K * H) float16 for contextualised tokens)."""
    scale = None
    if model is not None:
        sets, toks = scale_outputs(
            store,
            model,
            tokens=clip_vector == "token",
            batch_size=batch_size,
            progress=progress,
        )
        scale = ClipVectors(store if toks is None else toks, extra=sets)
    return Representations(
        raw=ClipVectors(store),
        scale=scale,
        sets=SetData.from_store(store),
        num_valid=store.num_clips,
    )


def video_embeddings(
    store: FeatureStore,
    model: ScaleModel,
    *,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Per-video SCALE embeddings (N, D + H): mean over valid clips of [clip feature, SET]."""
    model = model.to(resolve_device(device))
    sets, _ = scale_outputs(store, model, batch_size=batch_size, progress=progress)
    x = ClipVectors(store, extra=sets)
    return video_vectors(x, store.num_clips, normalize=False, chunk_size=batch_size)


# --------------------------------------------------------------------------- protocol


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
        if np.issubdtype(labels.dtype, np.floating):
            raise ValueError("low-shot subsets are defined for class labels only")
        pool = pool[low_shot_subset(labels[pool], fraction=low_shot, seed=seed)]
    fit, val = train_val_split(labels[pool], val_fraction=val_fraction, seed=seed)
    if len(val) < min_val_videos and len(pool) >= 2:
        folds = stratified_folds(labels[pool], folds=min(cv_folds, len(pool)), seed=seed)
        logger.info(
            "seed %d: a %d-video validation split is below %d: %d-fold cross-validation on "
            "%d train videos",
            seed, len(val), min_val_videos, len(folds), len(pool),
        )  # fmt: skip
        return Split(train=pool, folds=tuple((pool[f], pool[v]) for f, v in folds))
    if len(val) == 0 or len(fit) == 0:
        raise ValueError(
            f"{len(pool)} training videos leave an empty fit or validation split; "
            "use more data, a larger low-shot fraction or another val_fraction"
        )
    return Split(train=pool, folds=((pool[fit], pool[val]),))


def _metrics(scores: np.ndarray, labels: np.ndarray, task: Task) -> dict[str, float]:
    if task == "regression":
        return {"mse": mean_squared_error(scores, labels)}
    acc = topk_accuracy(scores, labels, ks=(1, 5))
    return {f"top{k}": v for k, v in acc.items()}


def _selection_metric(scores: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Higher is better: top-1 in % or negative MSE."""
    if task == "regression":
        return -mean_squared_error(scores, labels)
    return topk_accuracy(scores, labels, ks=(1,))[1]


@dataclass
class ProbeRun:
    """One probe on one seed: the grid on val, the chosen config, and test scores (Nte, C)."""

    chosen: dict[str, Any]
    grid: list[dict[str, Any]]
    num_train: int
    test_scores: np.ndarray


@dataclass
class _Context:
    """What every probe of one evaluation shares."""

    config: EvalConfig
    task: Task
    num_classes: int | None
    train_labels: np.ndarray  # (N,) over the whole train store
    train: Representations
    test: Representations  # restricted to the scored (labelled) test videos
    model: ScaleModel | None
    device: torch.device


def _head_configs(name: str, ctx: _Context, seed: int) -> list[ProbeConfig]:
    cfg = ctx.config
    if name in ("knn", "scale_knn"):
        scale = name == "scale_knn"
        parts: tuple[int, ...] = ()
        if scale and cfg.scale_knn_normalize == "parts":
            assert ctx.model is not None and ctx.train.scale is not None
            hidden = ctx.model.config.hidden  # [clip vector, SET]: the SET part is the last H
            parts = (ctx.train.scale.shape[2] - hidden, hidden)
        base = ProbeConfig(
            kind="knn",
            k=cfg.knn_k,
            temperature=cfg.knn_temperature,
            center=cfg.scale_knn_center if scale else False,
            parts=parts,
            num_classes=ctx.num_classes,
            seed=seed,
        )
        return [base]
    base = ProbeConfig(
        kind="mlp" if name == "mlp" else "linear",
        batch_size=cfg.head_batch_size,
        epochs=cfg.head_epochs,
        clips_per_sample=cfg.clips_per_sample,
        hidden=cfg.mlp_hidden,
        dropout=cfg.mlp_dropout if name == "mlp" else 0.0,
        num_classes=ctx.num_classes,
        seed=seed,
    )
    norms = (False,) if name == "mlp" else cfg.linear_batchnorm
    return [
        config
        for batchnorm in norms
        for config in make_grid(
            dataclasses.replace(base, batchnorm=batchnorm),
            lrs=cfg.head_lrs,
            weight_decays=cfg.head_weight_decays,
        )
    ]


def _run_head_probe(name: str, ctx: _Context, split: Split, seed: int) -> ProbeRun:
    """kNN / linear / MLP: grid on the split's (fit, val) folds, retrain the chosen config on
    the train split."""
    scale = name.startswith("scale_")
    x_train = ctx.train.scale if scale else ctx.train.raw
    x_test = ctx.test.scale if scale else ctx.test.raw

    def data(rows: np.ndarray) -> ProbeData:
        return ProbeData(
            x=x_train[rows], num_valid=ctx.train.num_valid[rows], labels=ctx.train_labels[rows]
        )

    progress = ctx.config.progress
    configs = _head_configs(name, ctx, seed)
    folds = [(data(fit), data(val)) for fit, val in split.folds]
    results = cross_validate(configs, folds, device=ctx.device, progress=progress)
    chosen = select_config(results)
    test = ProbeData(x=x_test, num_valid=ctx.test.num_valid)  # no labels: nothing can read them
    scores = fit_predict(chosen, data(split.train), test, device=ctx.device, progress=progress)
    grid = [{"config": asdict(r.config), "val": r.metric, "val_loss": r.loss} for r in results]
    return ProbeRun(
        chosen=asdict(chosen), grid=grid, num_train=len(split.train), test_scores=scores
    )


def _set_probe_init(name: str, ctx: _Context) -> ModelConfig | ScaleModel:
    if name == "scale_ft":
        assert ctx.model is not None
        return ctx.model
    if ctx.model is not None:
        return ctx.model.config  # the baseline copies the pretrained architecture, not weights
    cfg = ctx.config
    return ModelConfig(
        input_dim=ctx.train.raw.shape[2],
        hidden=cfg.transformer_hidden,
        depth=cfg.transformer_depth,
        heads=cfg.transformer_heads,
    )


def _set_probe_grid(name: str, ctx: _Context, split: Split, seed: int) -> list[FinetuneConfig]:
    """finetune_heads x finetune_lrs x budgets, the budgets in optimizer steps: E epochs of the
    train split, at least finetune_min_steps (budgets that come out equal are one point)."""
    cfg = ctx.config
    base = dataclasses.replace(
        cfg.finetune,
        predictor_lr_scale=cfg.scale_ft_lr_scale if name == "scale_ft" else 1.0,
        num_classes=ctx.num_classes,
        seed=seed,
        device=str(ctx.device),
    )
    per_epoch = steps_per_epoch(len(split.train), base.batch_size)
    budgets = list(
        dict.fromkeys(max(cfg.finetune_min_steps, e * per_epoch) for e in cfg.finetune_epochs)
    )
    return [
        dataclasses.replace(base, head=head, lr=lr, steps=steps)
        for head in cfg.finetune_heads
        for lr in cfg.finetune_lrs
        for steps in budgets
    ]


def _run_set_probe(name: str, ctx: _Context, split: Split, seed: int) -> ProbeRun:
    """Transformer / SCALE_ft: every grid point trained on every fold's fit rows and scored on
    its val rows (one batched pass per head kind), the choice on the pooled val scores; the
    chosen config is then retrained on the train split. A one-point grid skips selection."""
    cfg = ctx.config
    init = _set_probe_init(name, ctx)
    sets = ctx.train.sets
    labels = ctx.train_labels

    def data(rows: np.ndarray) -> SetData:
        return dataclasses.replace(sets, rows=rows, labels=labels[rows])

    configs = _set_probe_grid(name, ctx, split, seed)
    if len(configs) == 1:  # nothing to choose: no selection runs are trained
        (chosen,) = configs
        grid = [{"config": asdict(chosen), "val": None, "val_loss": None}]
        logger.info("%s seed %d: one grid point, no selection", LABELS[name], seed)
    else:
        chosen, grid = _select_set_probe(name, ctx, split, seed, configs, init)
    ((probe, _),) = fit_set_probes([chosen], [data(split.train)], init=init, progress=cfg.progress)
    scores = predict_set_probes([probe], ctx.test.sets, batch_size=chosen.eval_batch_size)[0]
    return ProbeRun(
        chosen=asdict(chosen), grid=grid, num_train=len(split.train), test_scores=scores
    )


def _select_set_probe(
    name: str,
    ctx: _Context,
    split: Split,
    seed: int,
    configs: list[FinetuneConfig],
    init: ModelConfig | ScaleModel,
) -> tuple[FinetuneConfig, list[dict[str, Any]]]:
    """Every grid point trained on every fold's fit rows, scored on the pooled val rows; the
    chosen config and the grid's validation scores."""
    cfg = ctx.config
    sets = ctx.train.sets
    labels = ctx.train_labels

    def data(rows: np.ndarray) -> SetData:
        return dataclasses.replace(sets, rows=rows, labels=labels[rows])

    fits = [data(fit) for fit, _ in split.folds]
    vals = [dataclasses.replace(sets, rows=val, labels=None) for _, val in split.folds]
    y_val = np.concatenate([labels[val] for _, val in split.folds])
    pooled: list[np.ndarray] = [np.empty(0)] * len(configs)
    for head in dict.fromkeys(c.head for c in configs):
        members = [i for i, c in enumerate(configs) if c.head == head]
        jobs = [(i, f) for i in members for f in range(len(fits))]
        trained = fit_set_probes(
            [configs[i] for i, _ in jobs], [fits[f] for _, f in jobs], init=init,
            progress=cfg.progress,
        )  # fmt: skip
        per_fold: dict[int, list[np.ndarray]] = {i: [] for i in members}
        for f, val in enumerate(vals):
            probes = [
                probe for (_, fold), (probe, _) in zip(jobs, trained, strict=True) if fold == f
            ]
            owners = [i for i, fold in jobs if fold == f]
            batch = configs[0].eval_batch_size
            for i, scores in zip(
                owners, predict_set_probes(probes, val, batch_size=batch), strict=True
            ):
                per_fold[i].append(scores)
        for i in members:
            pooled[i] = np.concatenate(per_fold[i])
    metrics = [_selection_metric(p, y_val, ctx.task) for p in pooled]
    losses = [validation_loss(p, y_val) for p in pooled]
    best = select_index(metrics, losses)
    chosen = configs[best]
    grid = [
        {"config": asdict(c), "val": m, "val_loss": v}
        for c, m, v in zip(configs, metrics, losses, strict=True)
    ]
    logger.info(
        "%s seed %d: chose the %s head, lr %g, %d steps (val %.4f over %d videos)",
        LABELS[name], seed, chosen.head, chosen.lr, chosen.steps, metrics[best], len(y_val),
    )  # fmt: skip
    return chosen, grid


def _open(store: FeatureStore | str | Path, *, verify_checksums: bool = True) -> FeatureStore:
    """A store path is opened with its checksums verified (unless opted out)."""
    if isinstance(store, FeatureStore):
        return store
    return FeatureStore.open(store, verify_checksums=verify_checksums)


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


def _load_model(run: ScaleModel | str | Path | None, device: torch.device) -> ScaleModel | None:
    if run is None:
        return None
    model = run if isinstance(run, ScaleModel) else ScaleModel.from_pretrained(run)
    return model.to(device).eval()


def _task_and_labels(
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


def _labelled(labels: np.ndarray) -> np.ndarray:
    if np.issubdtype(labels.dtype, np.floating):
        return np.flatnonzero(~np.isnan(labels))
    return np.flatnonzero(labels >= 0)


def _restrict(reps: Representations, rows: np.ndarray) -> Representations:
    return Representations(
        raw=reps.raw[rows],
        scale=None if reps.scale is None else reps.scale[rows],
        sets=reps.sets.subset(rows),
        num_valid=reps.num_valid[rows],
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std


def evaluate(
    *,
    train_store: FeatureStore | str | Path,
    test_store: FeatureStore | str | Path,
    run: ScaleModel | str | Path | None = None,
    config: EvalConfig | None = None,
    out: str | Path,
    baseline_cache: str | Path | None = None,
    verify_checksums: bool = True,
) -> dict[str, Any]:
    """Run every probe of `config` with the protocol of the module docstring; write
    results.json, results.md, predictions.npz, splits/seed<S>.npz and plots into `out`.

    Without a run the SCALE rows (scale_knn, scale_linear, scale_ft) are skipped; kNN rows are
    skipped for regression targets. Returns the results.json content.

    baseline_cache: a folder where the baseline rows (knn, linear, mlp, transformer), which do
    not depend on the SCALE weights, are saved per seed and reused by later evaluations with the
    same stores (by content fingerprint), the same settings and, for the transformer, the same
    architecture: an ablation over pretraining settings trains its baselines once.

    verify_checksums: verify the crc32 of every store file on open (False only for very large
    stores; see docs/reliability.md).
    """
    config = config or EvalConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_store = _open(train_store, verify_checksums=verify_checksums)
    test_store = _open(test_store, verify_checksums=verify_checksums)
    if train_store.dim != test_store.dim:
        raise ValueError(
            f"train store has D={train_store.dim} features, test store D={test_store.dim}"
        )
    if test_store.manifest.sampling.get("mode") != "test":
        logger.warning(
            "%s was sampled in %r mode; the paper scores T x S test views per video",
            test_store.path,
            test_store.manifest.sampling.get("mode"),
        )
    device = resolve_device(config.device)
    model = _load_model(run, device)
    if model is not None and model.config.input_dim != train_store.dim:
        raise ValueError(
            f"the run's predictor reads D={model.config.input_dim} features, the stores hold "
            f"D={train_store.dim}: evaluate with stores of the backbone it was trained on"
        )
    task, train_labels, test_labels = _task_and_labels(train_store, test_store, config.task)
    probes = [p for p in config.probes if model is not None or p not in NEEDS_RUN]
    probes = [p for p in probes if task == "classification" or p not in CLASSIFICATION_ONLY]
    skipped = sorted(set(config.probes) - set(probes))
    if skipped:
        logger.warning("skipping %s (%s)", skipped, "no run" if model is None else task)
    if not probes:
        raise ValueError("no probe can run: the SCALE probes need a run")

    train_rows = _labelled(train_labels)
    test_rows = _labelled(test_labels)
    if len(test_rows) == 0:
        raise ValueError(f"{test_store.path}: no labelled test videos to score")
    num_classes = None
    class_names = list(train_store.manifest.class_names)
    if task == "classification":
        num_classes = len(class_names) or int(train_labels[train_rows].max()) + 1
        test_labels = _check_test_classes(train_store, test_store, test_labels, num_classes)
        test_rows = _labelled(test_labels)
    logger.info(
        "%s evaluation: %d labelled train videos, %d test videos, probes %s, seeds %s",
        task,
        len(train_rows),
        len(test_rows),
        probes,
        list(config.seeds),
    )
    kwargs = {
        "clip_vector": config.clip_vector,
        "batch_size": config.embed_batch_size,
        "progress": config.progress,
    }
    ctx = _Context(
        config=config,
        task=task,
        num_classes=num_classes,
        train_labels=train_labels,
        train=representations(train_store, model, **kwargs),
        test=_restrict(representations(test_store, model, **kwargs), test_rows),
        model=model,
        device=device,
    )
    y_test = test_labels[test_rows]

    runs: dict[str, list[ProbeRun]] = {p: [] for p in probes}
    reused: list[str] = []
    seed_info = []
    (out / "splits").mkdir(exist_ok=True)
    for seed in config.seeds:
        split = make_split(
            train_labels,
            labelled=train_rows,
            val_fraction=config.val_fraction,
            low_shot=config.low_shot,
            seed=seed,
            min_val_videos=config.min_val_videos,
            cv_folds=config.cv_folds,
        )
        np.savez(out / "splits" / f"seed{seed}.npz", **split.arrays())
        info: dict[str, Any] = {
            "seed": seed,
            "num_train": len(split.train),
            "selection": f"{len(split.folds)}-fold CV" if split.cross_validated else "hold-out",
            "num_fit": int(np.mean([len(fit) for fit, _ in split.folds])),
            "num_val": split.num_val,
        }
        if task == "classification":
            counts = np.bincount(train_labels[split.train], minlength=num_classes)
            info["train_class_counts"] = counts.tolist()
        seed_info.append(info)
        for name in probes:
            runner = _run_set_probe if name in ("transformer", "scale_ft") else _run_head_probe
            cached = None
            if baseline_cache is not None and name not in NEEDS_RUN:
                cached = Path(baseline_cache) / _baseline_file(
                    name, seed, ctx, train_store=train_store, test_store=test_store
                )
            result = _load_probe_run(cached) if cached is not None else None
            if result is None:
                result = runner(name, ctx, split, seed)
                if cached is not None:
                    _save_probe_run(result, cached)
            else:
                reused.append(f"{name} seed {seed}")
                logger.info("%s seed %d: reused from %s", LABELS[name], seed, cached)
            runs[name].append(result)
            logger.info(
                "%s seed %d: %s", LABELS[name], seed, _metrics(result.test_scores, y_test, task)
            )

    results = _summarise(
        runs,
        y_test=y_test,
        task=task,
        config=config,
        seed_info=seed_info,
        meta={
            "train_store": str(train_store.path),
            "test_store": str(test_store.path),
            "run": None if run is None or isinstance(run, ScaleModel) else str(run),
            "dataset": train_store.manifest.dataset,
            "backbone": train_store.manifest.backbone,
            "num_classes": num_classes,
            "class_names": class_names,
            "num_train_videos": len(train_rows),
            "num_test_videos": len(test_rows),
            "skipped_probes": skipped,
            "reused_baselines": reused,
        },
    )
    _write_outputs(results, runs, ctx=ctx, test_store=test_store, test_rows=test_rows, out=out)
    return results


# --------------------------------------------------------------------------- baseline reuse

# EvalConfig fields that no baseline row reads: changing them keeps the cached baselines.
_SCALE_ONLY_FIELDS = frozenset(
    {"probes", "seeds", "clip_vector", "scale_knn_center", "scale_knn_normalize", "scale_ft_lr_scale",
     "embed_batch_size", "progress", "plots", "embedding_map"}
)  # fmt: skip
# Field-name prefixes of the other probe families, which a baseline row does not read either.
# (Any field not excluded here is part of every row's key: a new setting never goes stale.)
_OTHER_FAMILIES: dict[str, tuple[str, ...]] = {
    "knn": ("head_", "linear_", "mlp_", "clips_per_sample", "finetune", "transformer_"),
    "linear": ("knn_", "finetune", "transformer_"),
    "mlp": ("knn_", "linear_", "finetune", "transformer_"),
    "transformer": ("knn_", "head_", "linear_", "mlp_", "clips_per_sample"),
}


def _baseline_file(
    name: str, seed: int, ctx: _Context, *, train_store: FeatureStore, test_store: FeatureStore
) -> str:
    """File name of one baseline row's cached run: the probe, the seed and a digest of all it
    depends on (store contents, the settings it reads, the architecture, device type, version)."""
    from scalevid import __version__

    settings = {
        k: v
        for k, v in ctx.config.to_dict().items()
        if k not in _SCALE_ONLY_FIELDS and not k.startswith(_OTHER_FAMILIES[name])
    }
    key = {
        "probe": name,
        "seed": seed,
        "train_store": train_store.fingerprint,
        "test_store": test_store.fingerprint,
        "settings": settings,
        "task": ctx.task,
        "device": ctx.device.type,
        "version": __version__,
    }
    if name == "transformer":
        key["architecture"] = asdict(_set_probe_init(name, ctx))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-seed{seed}-{digest[:20]}.npz"


def _save_probe_run(result: ProbeRun, path: Path) -> None:
    """Atomically write one probe run (test scores + chosen config and grid as JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"chosen": result.chosen, "grid": result.grid, "num_train": result.num_train}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, test_scores=result.test_scores, meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)


def _load_probe_run(path: Path) -> ProbeRun | None:
    """A cached probe run, or None when there is none or it cannot be read (then it is
    recomputed and rewritten)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            scores = np.array(data["test_scores"])
        return ProbeRun(
            chosen=meta["chosen"], grid=meta["grid"], num_train=meta["num_train"],
            test_scores=scores,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        logger.warning("%s: unreadable cached baseline (%s); recomputing it", path, err)
        return None


# --------------------------------------------------------------------------- summaries


def _summarise(
    runs: dict[str, list[ProbeRun]],
    *,
    y_test: np.ndarray,
    task: Task,
    config: EvalConfig,
    seed_info: list[dict[str, Any]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """results.json content: per probe its per-seed chosen config and scores, mean, std, and
    the mean over seeds of the per-seed difference to its baseline row."""
    probes: dict[str, Any] = {}
    for name, per_seed in runs.items():
        seeds = []
        for info, r in zip(seed_info, per_seed, strict=True):
            seeds.append(
                {
                    "seed": info["seed"],
                    "chosen": r.chosen,
                    "val": max((g["val"] for g in r.grid if g["val"] is not None), default=None),
                    "grid": r.grid,
                    "num_train": r.num_train,
                    "test": _metrics(r.test_scores, y_test, task),
                }
            )
        metric_names = list(seeds[0]["test"])
        stats = {m: _mean_std([s["test"][m] for s in seeds]) for m in metric_names}
        probes[name] = {
            "label": LABELS[name],
            "baseline": BASELINE_OF.get(name),
            "seeds": seeds,
            "mean": {m: v[0] for m, v in stats.items()},
            "std": {m: v[1] for m, v in stats.items()},
            "delta": None,
        }
    for name, entry in probes.items():
        base = BASELINE_OF.get(name)
        if base in probes:
            entry["delta"] = {
                m: float(
                    np.mean(
                        [
                            s["test"][m] - b["test"][m]
                            for s, b in zip(entry["seeds"], probes[base]["seeds"], strict=True)
                        ]
                    )
                )
                for m in entry["mean"]
            }
    primary = "mse" if task == "regression" else "top1"
    pick = min if task == "regression" else max
    best = pick(probes, key=lambda p: probes[p]["mean"][primary])
    return {
        **meta,
        "task": task,
        "primary_metric": primary,
        "metrics": list(next(iter(probes.values()))["mean"]),
        "seeds": seed_info,
        "low_shot": config.low_shot,
        "best_probe": best,
        "probes": probes,
        "config": config.to_dict(),
    }


_METRIC_TITLES = {"top1": "Top-1 (%)", "top5": "Top-5 (%)", "mse": "MSE"}


def _table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the paper-style table: one row per probe in the paper's order, the
    metrics as mean ± std, and Δ columns against the matching baseline row."""
    metrics = results["metrics"]
    header = ["Probe"] + [_METRIC_TITLES.get(m, m) for m in metrics]
    header += [f"Δ {_METRIC_TITLES.get(m, m).split(' (')[0]}" for m in metrics]
    rows = []
    for name in PROBES:
        entry = results["probes"].get(name)
        if entry is None:
            continue
        row = [entry["label"]]
        for m in metrics:
            mean, std = entry["mean"][m], entry["std"][m]
            row.append(f"{mean:.2f} ± {std:.2f}" if len(entry["seeds"]) > 1 else f"{mean:.2f}")
        delta = entry["delta"]
        row += [f"{delta[m]:+.2f}" if delta else "" for m in metrics]
        rows.append(row)
    return header, rows


def markdown_table(results: dict[str, Any]) -> str:
    """results.md: a short description line and the paper-style markdown table."""
    header, rows = _table(results)
    shot = "" if results["low_shot"] is None else f", low-shot {results['low_shot']:g}"
    lines = [
        f"# {results['dataset']} ({results['backbone']})",
        "",
        f"{results['task']}: {results['num_train_videos']} train / "
        f"{results['num_test_videos']} test videos, {len(results['seeds'])} seed(s){shot}; "
        "hyperparameters chosen on a validation split of train (k-fold cross-validation when "
        "it would be small), then retrained on all of train.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *_selection_table(results)]
    return "\n".join(lines) + "\n"


def _chosen_summary(chosen: dict[str, Any]) -> str:
    """A short description of a chosen config: what the grid searched for that probe kind."""
    if "head" in chosen:  # a set probe (FinetuneConfig)
        budget = f"{chosen['steps']} steps" if chosen.get("steps") else f"{chosen['epochs']} ep"
        return f"{chosen['head']} head, lr {chosen['lr']:g}, {budget}"
    if chosen.get("kind") == "knn":
        return f"k {chosen['k']}"
    return f"lr {chosen['lr']:g}, wd {chosen['weight_decay']:g}"


def _seed_choice(seed: dict[str, Any]) -> str:
    """The chosen config of one probe on one seed; a one-point grid had nothing to select."""
    summary = _chosen_summary(seed["chosen"])
    return summary if seed["val"] is not None else f"{summary} (fixed, no selection)"


def _selection_table(results: dict[str, Any]) -> list[str]:
    """Markdown lines: per seed, how the grid was scored, on how many videos, and each
    probe's chosen config (a choice that flips with the seed shows here)."""
    names = [p for p in PROBES if p in results["probes"]]
    lines = [
        "## Model selection",
        "",
        "| Seed | Selection | Val videos | " + " | ".join(LABELS[p] for p in names) + " |",
        "|---:|---|---:|" + "---|" * len(names),
    ]
    for i, info in enumerate(results["seeds"]):
        chosen = [_seed_choice(results["probes"][p]["seeds"][i]) for p in names]
        selection = info.get("selection", "hold-out")
        cells = [str(info["seed"]), selection, str(info["num_val"]), *chosen]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_table(results: dict[str, Any]) -> str:
    """The results table as aligned plain text, for a terminal."""
    header, rows = _table(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *[line(r) for r in rows]]) + "\n"


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def project_2d(
    vectors: np.ndarray, *, method: Literal["pca", "tsne"] = "pca", seed: int = 0
) -> np.ndarray:
    """(N, F) -> (N, 2): PCA of the centred vectors (numpy SVD), or t-SNE with scikit-learn
    (falls back to PCA when scikit-learn is missing or N is tiny)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    if method == "tsne" and len(x) > 5:
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            logger.warning("t-SNE needs scikit-learn; drawing a PCA map instead")
        else:
            perplexity = min(30.0, (len(x) - 1) / 3)
            return TSNE(2, perplexity=perplexity, random_state=seed).fit_transform(x)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    points = x @ vt[:2].T  # (N, <=2)
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points


def _write_outputs(
    results: dict[str, Any],
    runs: dict[str, list[ProbeRun]],
    *,
    ctx: _Context,
    test_store: FeatureStore,
    test_rows: np.ndarray,
    out: Path,
) -> None:
    from scalevid.eval import figures as plots

    task = results["task"]
    labels = test_store.labels if task == "classification" else test_store.targets
    y_test = labels[test_rows]
    files = {"results": RESULTS, "table": RESULTS_TABLE, "predictions": PREDICTIONS}
    predictions = {}
    for name, per_seed in runs.items():
        if task == "classification":
            predictions[name] = np.stack([r.test_scores.argmax(axis=1) for r in per_seed])
        else:
            predictions[name] = np.stack([r.test_scores.reshape(len(test_rows)) for r in per_seed])
    np.savez(
        out / "predictions.npz",
        video_ids=np.asarray([test_store.video_ids[i] for i in test_rows]),
        labels=y_test,
        **predictions,
    )
    if ctx.config.plots:
        names = [p for p in PROBES if p in results["probes"]]
        primary = results["primary_metric"]
        plots.plot_probe_comparison(
            [LABELS[p] for p in names],
            [results["probes"][p]["mean"][primary] for p in names],
            [results["probes"][p]["std"][primary] for p in names],
            metric=_METRIC_TITLES[primary],
            scale_rows=[p.startswith("scale_") for p in names],
            out=out / "probes.png",
        )
        files["probes_plot"] = "probes.png"
        if task == "classification":
            best = results["best_probe"]
            matrix = confusion_matrix(
                predictions[best][0], y_test, num_classes=results["num_classes"]
            )
            plots.plot_confusion_matrix(
                matrix,
                class_names=results["class_names"],
                title=f"{LABELS[best]}, seed {results['seeds'][0]['seed']}",
                out=out / "confusion.png",
            )
            files["confusion_plot"] = "confusion.png"
        reps = ctx.test.scale if ctx.test.scale is not None else ctx.test.raw
        vectors = video_vectors(reps, ctx.test.num_valid, normalize=False)
        if len(vectors) >= 2:
            keep = np.random.default_rng(0).permutation(len(vectors))[:5000]
            kind = "SCALE [clip, SET]" if ctx.test.scale is not None else "mean clip feature"
            method = ctx.config.embedding_map
            plots.plot_embedding_map(
                project_2d(vectors[keep], method=method),
                y_test[keep],
                class_names=results["class_names"] if task == "classification" else (),
                title=f"test videos, {kind} ({method})",
                out=out / "embedding_map.png",
            )
            files["embedding_plot"] = "embedding_map.png"
    results["files"] = files
    (out / RESULTS_TABLE).write_text(markdown_table(results))
    (out / RESULTS).write_text(json.dumps(results, indent=2))
    logger.info("wrote %s", out / RESULTS)
