"""The evaluation protocol: the paper's probe rows on a train/test pair of feature stores, chosen
on validation and scored once on test; `scalevid.eval.report` writes the results as
results.json, markdown tables and plots.

Rows (baseline -> SCALE counterpart):

    knn          -> scale_knn      kNN (k=20, T=0.07) on one vector per video
    linear       -> scale_linear   linear head per clip, softmax averaged over a video's views
    mlp                            MLP head per clip on raw features
    transformer  -> scale_ft       SCALE architecture trained on clip sets (random init / pretrained)

Representations (N videos, V views, D feature dim, H SCALE hidden dim; built by
`scalevid.eval.representations`):
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
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalevid.eval.cache import BaselineCache, ProbeRun, load_probe_run, save_probe_run
from scalevid.eval.config import (
    BASELINE_OF,
    CLASSIFICATION_ONLY,
    LABELS,
    NEEDS_RUN,
    EvalConfig,
    ProbeName,
    Task,
)
from scalevid.eval.probes import ProbeConfig, ProbeData, make_grid
from scalevid.eval.report import write_report
from scalevid.eval.representations import (
    Representations,
    load_model,
    open_store,
    representations,
)
from scalevid.eval.selection import (
    cross_validate,
    fit_predict,
    select_config,
    select_index,
    validation_loss,
)
from scalevid.eval.set_probes import (
    FinetuneConfig,
    SetData,
    fit_set_probes,
    predict_set_probes,
    steps_per_epoch,
)
from scalevid.eval.splits import (
    low_shot_subset,
    mean_squared_error,
    stratified_folds,
    topk_accuracy,
    train_val_split,
)
from scalevid.hardware import resolve_device
from scalevid.model import ModelConfig, ScaleModel
from scalevid.outfiles import make_folder, replace_file
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)


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


def _set_data(ctx: _Context, rows: np.ndarray) -> SetData:
    """The labelled clip sets of these train rows."""
    return dataclasses.replace(ctx.train.sets, rows=rows, labels=ctx.train_labels[rows])


def _run_set_probe(name: str, ctx: _Context, split: Split, seed: int) -> ProbeRun:
    """Transformer / SCALE_ft: every grid point trained on every fold's fit rows and scored on
    its val rows (one batched pass per head kind), the choice on the pooled val scores; the
    chosen config is then retrained on the train split. A one-point grid skips selection."""
    init = _set_probe_init(name, ctx)
    configs = _set_probe_grid(name, ctx, split, seed)
    if len(configs) == 1:  # nothing to choose: no selection runs are trained
        (chosen,) = configs
        grid = [{"config": asdict(chosen), "val": None, "val_loss": None}]
        logger.info("%s seed %d: one grid point, no selection", LABELS[name], seed)
    else:
        chosen, grid = _select_set_probe(name, ctx, split, seed, configs, init)
    train = [_set_data(ctx, split.train)]
    ((probe, _),) = fit_set_probes([chosen], train, init=init, progress=ctx.config.progress)
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
    pooled = _pooled_val_scores(ctx, split, configs, init)
    y_val = np.concatenate([ctx.train_labels[val] for _, val in split.folds])
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
        LABELS[name],
        seed,
        chosen.head,
        chosen.lr,
        chosen.steps,
        metrics[best],
        len(y_val),
    )
    return chosen, grid


def _pooled_val_scores(
    ctx: _Context, split: Split, configs: list[FinetuneConfig], init: ModelConfig | ScaleModel
) -> list[np.ndarray]:
    """Per grid point, its scores on every fold's val rows, concatenated in fold order. One
    batched pass per head kind trains all its grid points on all folds."""
    fits = [_set_data(ctx, fit) for fit, _ in split.folds]
    vals = [dataclasses.replace(ctx.train.sets, rows=val, labels=None) for _, val in split.folds]
    pooled: list[np.ndarray] = [np.empty(0)] * len(configs)
    for head in dict.fromkeys(c.head for c in configs):
        members = [i for i, c in enumerate(configs) if c.head == head]
        jobs = [(i, f) for i in members for f in range(len(fits))]
        trained = fit_set_probes(
            [configs[i] for i, _ in jobs],
            [fits[f] for _, f in jobs],
            init=init,
            progress=ctx.config.progress,
        )
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
    return pooled


# --------------------------------------------------------------------------- the evaluation


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
    train_store = open_store(train_store, verify_checksums=verify_checksums)
    test_store = open_store(test_store, verify_checksums=verify_checksums)
    _check_stores(train_store, test_store)
    device = resolve_device(config.device)
    model = load_model(run, device)
    _check_model(model, train_store)
    task, train_labels, test_labels = _task_and_labels(train_store, test_store, config.task)
    probes, skipped = _runnable_probes(config, task, has_run=model is not None)
    scored = _scored_videos(train_store, test_store, task, train_labels, test_labels)
    logger.info(
        "%s evaluation: %d labelled train videos, %d test videos, probes %s, seeds %s",
        task,
        len(scored.train_rows),
        len(scored.test_rows),
        probes,
        list(config.seeds),
    )
    ctx = _context(config, task, scored, train_labels, train_store, test_store, model, device)
    cache = None
    if baseline_cache is not None:
        cache = BaselineCache(Path(baseline_cache), train_store, test_store)
    runs, seed_info, reused = _run_seeds(probes, ctx, scored, out=out, cache=cache)
    meta = _meta(train_store, test_store, run, scored, skipped=skipped, reused=reused)
    meta["run_step"] = None if model is None else model.weights_step  # which weights were used
    results = _summarise(
        runs, y_test=scored.y_test, task=task, config=config, seed_info=seed_info, meta=meta
    )
    write_report(
        results,
        {name: [r.test_scores for r in per_seed] for name, per_seed in runs.items()},
        test_store=test_store,
        test_rows=scored.test_rows,
        y_test=scored.y_test,
        test=ctx.test,
        plots=config.plots,
        embedding_map=config.embedding_map,
        out=out,
    )
    return results


def _check_stores(train: FeatureStore, test: FeatureStore) -> None:
    if train.dim != test.dim:
        raise ValueError(f"train store has D={train.dim} features, test store D={test.dim}")
    if test.manifest.sampling.get("mode") != "test":
        logger.warning(
            "%s was sampled in %r mode; the paper scores T x S test views per video",
            test.path,
            test.manifest.sampling.get("mode"),
        )


def _check_model(model: ScaleModel | None, train: FeatureStore) -> None:
    if model is not None and model.config.input_dim != train.dim:
        raise ValueError(
            f"the run's predictor reads D={model.config.input_dim} features, the stores hold "
            f"D={train.dim}: evaluate with stores of the backbone it was trained on"
        )


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


def _runnable_probes(
    config: EvalConfig, task: Task, *, has_run: bool
) -> tuple[list[ProbeName], list[str]]:
    """(the probes of `config` that can run, the others sorted): SCALE rows need a run, kNN
    rows class labels."""
    probes = [p for p in config.probes if has_run or p not in NEEDS_RUN]
    probes = [p for p in probes if task == "classification" or p not in CLASSIFICATION_ONLY]
    skipped = sorted(set(config.probes) - set(probes))
    if skipped:
        logger.warning("skipping %s (%s)", skipped, task if has_run else "no run")
    if not probes:
        raise ValueError("no probe can run: the SCALE probes need a run")
    return probes, skipped


@dataclass(frozen=True)
class _Scored:
    """The videos an evaluation trains and scores on, and the classes."""

    train_rows: np.ndarray  # the labelled train videos
    test_rows: np.ndarray  # the labelled test videos: all that are scored
    y_test: np.ndarray  # (len(test_rows),) their labels, in the train store's class indices
    num_classes: int | None  # None for regression
    class_names: list[str]


def _scored_videos(
    train: FeatureStore,
    test: FeatureStore,
    task: Task,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
) -> _Scored:
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
    return _Scored(train_rows, test_rows, test_labels[test_rows], num_classes, class_names)


def _labelled(labels: np.ndarray) -> np.ndarray:
    if np.issubdtype(labels.dtype, np.floating):
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


def _context(
    config: EvalConfig,
    task: Task,
    scored: _Scored,
    train_labels: np.ndarray,
    train_store: FeatureStore,
    test_store: FeatureStore,
    model: ScaleModel | None,
    device: torch.device,
) -> _Context:
    """The shared context, with the representations of both stores (SCALE's computed here)."""
    kwargs = {
        "clip_vector": config.clip_vector,
        "batch_size": config.embed_batch_size,
        "progress": config.progress,
    }
    return _Context(
        config=config,
        task=task,
        num_classes=scored.num_classes,
        train_labels=train_labels,
        train=representations(train_store, model, **kwargs),
        test=representations(test_store, model, **kwargs).subset(scored.test_rows),
        model=model,
        device=device,
    )


def _run_seeds(
    probes: list[ProbeName],
    ctx: _Context,
    scored: _Scored,
    *,
    out: Path,
    cache: BaselineCache | None,
) -> tuple[dict[str, list[ProbeRun]], list[dict[str, Any]], list[str]]:
    """Every probe on every seed's split: (per probe its runs in seed order, per seed its
    results.json entry, the "<probe> seed <S>" runs taken from the baseline cache)."""
    runs: dict[str, list[ProbeRun]] = {p: [] for p in probes}
    reused: list[str] = []
    seed_info = []
    make_folder(out / "splits")
    for seed in ctx.config.seeds:
        split = _seed_split(seed, ctx, scored, out=out)
        seed_info.append(_seed_info(seed, split, ctx))
        for name in probes:
            result = _probe_run(name, seed, ctx, split, cache=cache, y_test=scored.y_test)
            runs[name].append(result.run)
            if result.reused:
                reused.append(f"{name} seed {seed}")
    return runs, seed_info, reused


def _seed_split(seed: int, ctx: _Context, scored: _Scored, *, out: Path) -> Split:
    """The seed's split of the labelled train videos, saved as splits/seed<S>.npz."""
    cfg = ctx.config
    split = make_split(
        ctx.train_labels,
        labelled=scored.train_rows,
        val_fraction=cfg.val_fraction,
        low_shot=cfg.low_shot,
        seed=seed,
        min_val_videos=cfg.min_val_videos,
        cv_folds=cfg.cv_folds,
    )
    arrays = split.arrays()
    replace_file(out / "splits" / f"seed{seed}.npz", lambda f: np.savez(f, **arrays))
    return split


def _seed_info(seed: int, split: Split, ctx: _Context) -> dict[str, Any]:
    """results.json's entry for one seed: the split's sizes and how selection scored."""
    info: dict[str, Any] = {
        "seed": seed,
        "num_train": len(split.train),
        "selection": f"{len(split.folds)}-fold CV" if split.cross_validated else "hold-out",
        "num_fit": int(np.mean([len(fit) for fit, _ in split.folds])),
        "num_val": split.num_val,
    }
    if ctx.task == "classification":
        counts = np.bincount(ctx.train_labels[split.train], minlength=ctx.num_classes)
        info["train_class_counts"] = counts.tolist()
    return info


@dataclass(frozen=True)
class _Outcome:
    """One probe on one seed, and whether it came from the baseline cache."""

    run: ProbeRun
    reused: bool


def _probe_run(
    name: str,
    seed: int,
    ctx: _Context,
    split: Split,
    *,
    cache: BaselineCache | None,
    y_test: np.ndarray,
) -> _Outcome:
    """One probe on one seed: from the baseline cache when it holds the run, else trained
    (and then cached, for a baseline row)."""
    path = None
    if cache is not None and name not in NEEDS_RUN:
        architecture = None
        if name == "transformer":
            architecture = asdict(_set_probe_init(name, ctx))
        path = cache.path(
            name,
            seed,
            config=ctx.config,
            task=ctx.task,
            device=ctx.device,
            architecture=architecture,
        )
    result = load_probe_run(path) if path is not None else None
    reused = result is not None
    if result is None:
        runner = _run_set_probe if name in ("transformer", "scale_ft") else _run_head_probe
        result = runner(name, ctx, split, seed)
        if path is not None:
            save_probe_run(result, path)
    else:
        logger.info("%s seed %d: reused from %s", LABELS[name], seed, path)
    scores = _metrics(result.test_scores, y_test, ctx.task)
    logger.info("%s seed %d: %s", LABELS[name], seed, scores)
    return _Outcome(result, reused)


def _meta(
    train_store: FeatureStore,
    test_store: FeatureStore,
    run: ScaleModel | str | Path | None,
    scored: _Scored,
    *,
    skipped: list[str],
    reused: list[str],
) -> dict[str, Any]:
    """results.json's description of the inputs (its first entries, in this order)."""
    return {
        "train_store": str(train_store.path),
        "test_store": str(test_store.path),
        "run": None if run is None or isinstance(run, ScaleModel) else str(run),
        "dataset": train_store.manifest.dataset,
        "backbone": train_store.manifest.backbone,
        "num_classes": scored.num_classes,
        "class_names": scored.class_names,
        "num_train_videos": len(scored.train_rows),
        "num_test_videos": len(scored.test_rows),
        "skipped_probes": skipped,
        "reused_baselines": reused,
    }


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
    probes = {
        name: _probe_summary(name, per_seed, seed_info, y_test=y_test, task=task)
        for name, per_seed in runs.items()
    }
    for name, entry in probes.items():
        base = BASELINE_OF.get(name)
        if base in probes:
            entry["delta"] = _delta(entry, probes[base])
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


def _probe_summary(
    name: str,
    per_seed: list[ProbeRun],
    seed_info: list[dict[str, Any]],
    *,
    y_test: np.ndarray,
    task: Task,
) -> dict[str, Any]:
    """One probe's entry: per seed the chosen config, the grid and the test metrics; the
    metrics' mean and sample std over seeds (the delta is filled in by `_summarise`)."""
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
    stats = {m: _mean_std([s["test"][m] for s in seeds]) for m in seeds[0]["test"]}
    return {
        "label": LABELS[name],
        "baseline": BASELINE_OF.get(name),
        "seeds": seeds,
        "mean": {m: v[0] for m, v in stats.items()},
        "std": {m: v[1] for m, v in stats.items()},
        "delta": None,
    }


def _delta(entry: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Per metric, the mean over seeds of the per-seed difference to the baseline row."""
    pairs = list(zip(entry["seeds"], baseline["seeds"], strict=True))
    return {
        m: float(np.mean([s["test"][m] - b["test"][m] for s, b in pairs])) for m in entry["mean"]
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std
