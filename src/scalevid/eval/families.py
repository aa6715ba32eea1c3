"""Each probe family's run on one seed: its grid, the choice on validation, the refit on the
train split and the scores on test (see ``eval/protocol.py`` for the protocol, ``eval/rows.py``
for the rows).

- knn / head rows: the grid (kNN: one point; heads: lrs x weight decays [x BatchNorm]) on every
  (fit, val) fold, the best pooled validation metric chosen, the chosen config refit on train.
- set / attentive rows: the grid (set: heads x lrs; attentive: lrs x weight decays), for the
  raw-feature rows once per input (raw, or a PCA of the train split's clips: ``_inputs``),
  trained on every fold in one pass of the grid trainer, validated every few steps (pooled over
  folds) and stopped early; the best (input, grid point, step) is chosen, and the refit on train
  replays its schedule up to that step. Their learning curves are kept for the report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from scalevid.eval.attentive import AttentiveConfig
from scalevid.eval.cache import ProbeRun
from scalevid.eval.clip_sets import SetData, VideoBatches, video_batches
from scalevid.eval.config import EvalConfig, Task
from scalevid.eval.engine import Curve, EarlyStopping, LossTarget, Weights
from scalevid.eval.pca import fit_pca, project
from scalevid.eval.probes import ProbeConfig, ProbeData, make_grid, steps_per_epoch
from scalevid.eval.representations import Representations
from scalevid.eval.rows import ROWS, Family
from scalevid.eval.selection import (
    cross_validate,
    fit_predict,
    select_config,
    select_index,
    validation_loss,
)
from scalevid.eval.set_probes import (
    FinetuneConfig,
    ProbeInit,
    predict_set_probes,
    predict_with,
    stack_key,
    train_set_grid,
)
from scalevid.eval.splits import Split
from scalevid.eval.summary import selection_metric
from scalevid.hardware import autocast_dtype
from scalevid.model import ModelConfig, ScaleModel

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """What every probe of one evaluation shares."""

    config: EvalConfig
    task: Task
    num_classes: int | None
    train_labels: np.ndarray  # (N,) over the whole train store
    train: Representations
    test: Representations  # restricted to the scored (labelled) test videos
    model: ScaleModel | None
    device: torch.device


# --------------------------------------------------------------------------- kNN and heads


def _head_configs(name: str, ctx: Context, seed: int) -> list[ProbeConfig]:
    cfg, row = ctx.config, ROWS[name]
    if row.family == "knn":
        parts: tuple[int, ...] = ()
        if row.scale and cfg.scale_knn_normalize == "parts":
            assert ctx.model is not None and ctx.train.scale is not None
            hidden = ctx.model.config.hidden  # [clip vector, SET]: the SET part is the last H
            parts = (ctx.train.scale.shape[2] - hidden, hidden)
        base = ProbeConfig(
            kind="knn",
            k=cfg.knn_k,
            temperature=cfg.knn_temperature,
            center=cfg.scale_knn_center if row.scale else False,
            parts=parts,
            num_classes=ctx.num_classes,
            seed=seed,
        )
        return [base]
    mlp = name == "mlp"
    base = ProbeConfig(
        kind="mlp" if mlp else "linear",
        batch_size=cfg.head_batch_size,
        epochs=cfg.head_epochs,
        clips_per_sample=cfg.clips_per_sample,
        hidden=cfg.mlp_hidden,
        dropout=cfg.mlp_dropout if mlp else 0.0,
        num_classes=ctx.num_classes,
        seed=seed,
        # bf16 autocast took a third off the MLP row on a CPU with bf16 units (docs/performance.md,
        # order-of-events stores); the linear rows keep fp32: one small matmul per head has
        # little to gain, and the demo's SCALE_linear results were measured in fp32
        precision=cfg.precision if mlp else "fp32",
    )
    norms = (False,) if mlp else cfg.linear_batchnorm
    return [
        config
        for batchnorm in norms
        for config in make_grid(
            dataclasses.replace(base, batchnorm=batchnorm),
            lrs=cfg.head_lrs,
            weight_decays=cfg.head_weight_decays,
        )
    ]


def _run_head_row(name: str, ctx: Context, split: Split, seed: int) -> ProbeRun:
    """kNN / linear / MLP: grid on the split's (fit, val) folds, retrain the chosen config on
    the train split."""
    scale = ROWS[name].scale
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


# --------------------------------------------------------------------------- set and attentive


def set_probe_init(name: str, ctx: Context) -> ProbeInit:
    """What a set or attentive row's probes start from: the pretrained predictor (SCALE_ft), its
    architecture (Transformer, like for like with a run) or the attentive probe's config."""
    row = ROWS[name]
    if row.family == "attentive":
        return ctx.config.attentive
    if row.scale:
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


def _set_inputs(name: str, ctx: Context) -> tuple[SetData, SetData]:
    """(train, test) clip sets the row reads: raw features, or for SCALE_attentive the run's
    [contextualised token, SET output] per clip."""
    row = ROWS[name]
    if row.family == "attentive" and row.scale:
        assert ctx.train.scale_sets is not None and ctx.test.scale_sets is not None
        return ctx.train.scale_sets, ctx.test.scale_sets
    return ctx.train.sets, ctx.test.sets


def schedule_length(config: EvalConfig, num_train: int) -> int:
    """Steps of every set / attentive schedule: finetune_max_epochs passes over the train split,
    clamped to [finetune_min_steps, finetune_max_steps]."""
    per_pass = steps_per_epoch(num_train, config.finetune.batch_size)
    return min(
        config.finetune_max_steps,
        max(config.finetune_min_steps, config.finetune_max_epochs * per_pass),
    )


def validation_interval(config: EvalConfig, num_train: int) -> int:
    """Steps between validations: `validate_every`, or two passes over the train split (at least
    10 steps)."""
    if config.validate_every > 0:
        return config.validate_every
    return max(10, 2 * steps_per_epoch(num_train, config.finetune.batch_size))


def _set_grid(name: str, ctx: Context, split: Split, seed: int) -> list[FinetuneConfig]:
    """The row's grid, every point on the full schedule (the step is chosen on validation)."""
    cfg, row = ctx.config, ROWS[name]
    total = schedule_length(cfg, len(split.train))
    base = dataclasses.replace(
        cfg.finetune,
        predictor_lr_scale=cfg.scale_ft_lr_scale if row.family == "set" and row.scale else 1.0,
        num_classes=ctx.num_classes,
        seed=seed,
        device=str(ctx.device),
        precision=cfg.precision,
        steps=total,
        schedule_steps=total,
    )
    if row.family == "attentive":
        return [
            dataclasses.replace(base, head="set", lr=lr, weight_decay=wd)
            for lr in cfg.attentive_lrs
            for wd in cfg.attentive_weight_decays
        ]
    return [
        dataclasses.replace(base, head=head, lr=lr)
        for head in cfg.finetune_heads
        for lr in cfg.finetune_lrs
    ]


def _labelled(data: SetData, rows: np.ndarray, labels: np.ndarray | None) -> SetData:
    return dataclasses.replace(data, rows=rows, labels=labels)


@dataclass
class _Input:
    """One input a set or attentive row may read: its clip sets (train store, test store), the
    probes' initialisation for them and `pca`, the number of principal components it keeps
    (0 = the row's own vectors)."""

    pca: int
    data: SetData
    test: SetData
    init: ProbeInit


def _inputs(name: str, ctx: Context, split: Split, seed: int) -> list[_Input]:
    """The inputs row `name` chooses among on validation, in the order they train: for the rows
    that read raw features (Transformer, Attentive) each `input_pca` projection narrower than
    them, fitted on the train split's clips without labels (``eval/pca.py``), narrowest first;
    then the row's own vectors. The cheap narrow inputs go first, so the median stopping rule
    can stop a costly wide-input point that trails their curves (``engine.below_median``)."""
    row = ROWS[name]
    init = set_probe_init(name, ctx)
    data, test = _set_inputs(name, ctx)
    dims = sorted({k for k in ctx.config.input_pca if 0 < k < data.dim}) if not row.scale else []
    inputs = []
    for k in dims:
        projection = fit_pca(_labelled(data, split.train, None), k, seed=seed)
        narrow = (
            init if isinstance(init, AttentiveConfig) else dataclasses.replace(init, input_dim=k)
        )
        inputs.append(_Input(k, project(data, projection), project(test, projection), narrow))
    if 0 in ctx.config.input_pca or not dims:
        inputs.append(_Input(0, data, test, init))
    return inputs


def _run_set_row(name: str, ctx: Context, split: Split, seed: int) -> ProbeRun:
    """Transformer / SCALE_ft / Attentive / SCALE_attentive: the grid trained on every fold with
    early stopping, per input (``_inputs``), the best (input, point, step) chosen on the pooled
    validation scores, the chosen point refit on the train split (``_refit``), then scored on
    test."""
    configs = _set_grid(name, ctx, split, seed)
    inputs = _inputs(name, ctx, split, seed)
    grid_points = [(inp, c) for inp in inputs for c in configs]  # input-major, as they train
    finished: list[Curve] = []  # the row's curves so far, for the median stopping rule
    entries = [
        entry
        for inp in inputs
        for entry in _select_steps(ctx, split, configs, inp.init, inp.data, finished)
    ]
    points = [(i, j) for i, e in enumerate(entries) for j in range(len(e["curve"]["steps"]))]
    best = select_index(
        [entries[i]["curve"]["metric"][j] for i, j in points],
        [entries[i]["curve"]["loss"][j] for i, j in points],
    )
    i, j = points[best]
    inp, config = grid_points[i]
    chosen = dataclasses.replace(config, steps=entries[i]["curve"]["steps"][j])
    logger.info(
        "%s seed %d: chose %s, lr %g, wd %g, %s head, %d of %d steps (val %.4f)",
        ROWS[name].label,
        seed,
        f"PCA {inp.pca} input" if inp.pca else "its full input",
        chosen.lr,
        chosen.weight_decay,
        chosen.head,
        chosen.steps,
        chosen.schedule_steps,
        entries[i]["curve"]["metric"][j],
    )
    every = validation_interval(ctx.config, len(split.train))
    target = LossTarget(entries[i]["train_loss"][j], min_steps=chosen.steps, window=every)
    probe, refit = _refit(name, ctx, split, seed, chosen, target, init=inp.init, data=inp.data)
    grid = [
        {
            "config": {**asdict(c), "input_pca": g.pca},
            "val": e["val"],
            "val_loss": e["val_loss"],
            "best_step": e["step"],
            "pruned": e["pruned"],
        }
        for (g, c), e in zip(grid_points, entries, strict=True)
    ]
    curves = {
        "chosen": i,
        "every": every,
        "refit_loss_target": target.loss,
        "grid": [{"train_loss": e["train_loss"], **e["curve"]} for e in entries],
        **refit,
    }
    return ProbeRun(
        chosen={**asdict(chosen), "input_pca": inp.pca},
        grid=grid,
        num_train=len(split.train),
        test_scores=predict_set_probes([probe], inp.test, batch_size=chosen.eval_batch_size)[0],
        curves=curves,
    )


def _refit(
    name: str,
    ctx: Context,
    split: Split,
    seed: int,
    chosen: FinetuneConfig,
    target: LossTarget,
    *,
    init: ProbeInit,
    data: SetData,
) -> tuple[nn.Module, dict[str, Any]]:
    """The chosen point on the whole train split: at least its chosen steps, then on (to the
    end of its schedule at most) until its training loss reaches the selection run's at the
    chosen step. Returns the probe and its curve entries (stop step, loss curve)."""
    train = _labelled(data, split.train, ctx.train_labels[split.train])
    refit = train_set_grid(
        [dataclasses.replace(chosen, steps=chosen.schedule_steps)],
        [train],
        init=init,
        targets=[target],
        progress=ctx.config.progress,
    )
    ((probe, losses),) = refit.probes
    logger.info(
        "%s seed %d: refit on %d videos stopped at step %d (loss target %.4f)",
        ROWS[name].label,
        seed,
        len(split.train),
        refit.stopped_at[0],
        target.loss,
    )
    return probe, {"refit_steps": refit.stopped_at[0], "refit_loss": _window_means(losses, 10)}


def _select_steps(
    ctx: Context,
    split: Split,
    configs: list[FinetuneConfig],
    init: ProbeInit,
    data: SetData,
    finished: list[Curve],
) -> list[dict[str, Any]]:
    """Per grid point: its validation curve over the pooled folds, its best point, its
    training loss at each validated step and whether the median stopping rule stopped it.
    Points that can train together (``stack_key``: e.g. one head kind) share one pass of the
    grid trainer, every fold of each point a model of it. `finished`: the row's curves trained
    before that ran their course (the median rule's reference); this call's are added to it."""
    cfg = ctx.config
    fits = [_labelled(data, fit, ctx.train_labels[fit]) for fit, _ in split.folds]
    batch = configs[0].eval_batch_size
    vals = [
        video_batches(_labelled(data, val, None), batch_size=batch, device=ctx.device)
        for _, val in split.folds
    ]
    y_val = np.concatenate([ctx.train_labels[val] for _, val in split.folds])
    every = validation_interval(cfg, len(split.train))
    entries: list[dict[str, Any]] = [{}] * len(configs)
    for key in dict.fromkeys(stack_key(c) for c in configs):
        members = [i for i, c in enumerate(configs) if stack_key(c) == key]
        jobs = [(i, f) for i in members for f in range(len(fits))]

        def stopping(
            template: nn.Module, jobs: list[tuple[int, int]] = jobs, before: list[Curve] = finished
        ) -> EarlyStopping:
            return EarlyStopping(
                groups=[i for i, _ in jobs],
                score=_pooled_scorer(
                    template, jobs, vals, y_val, ctx.task, autocast_dtype(cfg.precision, ctx.device)
                ),
                every=every,
                patience=cfg.patience,
                min_steps=cfg.finetune_min_steps,
                median=cfg.median_stop,
                finished=before,
            )

        trained = train_set_grid(
            [configs[i] for i, _ in jobs],
            [fits[f] for _, f in jobs],
            init=init,
            stopping=stopping,
            progress=cfg.progress,
        )
        finished += [c for g, c in trained.curves.items() if g not in trained.pruned]
        for i in members:
            curve = trained.curves[i]
            losses = np.mean([trained.probes[m][1] for m, (g, _) in enumerate(jobs) if g == i], 0)
            entries[i] = {
                "curve": curve.to_dict(),
                "val": curve.metric[curve.best],
                "val_loss": curve.loss[curve.best],
                "step": curve.best_step,
                "train_loss": [float(losses[max(0, s - every) : s].mean()) for s in curve.steps],
                "pruned": i in trained.pruned,
            }
    return entries


def _pooled_scorer(
    template: nn.Module,
    jobs: list[tuple[int, int]],
    vals: list[VideoBatches],
    y_val: np.ndarray,
    task: Task,
    autocast: torch.dtype | None,
) -> Callable[[Callable[[int], Weights], list[int]], dict[int, tuple[float, float]]]:
    """Scores each grid point with an active model on its folds' val videos, pooled in fold
    order: (metric, loss) per point. jobs[m] = (grid point, fold) of model m."""

    def score(weights_of: Callable[[int], Weights], active: list[int]) -> dict:
        out = {}
        for point in dict.fromkeys(i for i, _ in jobs):
            models = [m for m, (i, _) in enumerate(jobs) if i == point]
            if models[0] not in active:
                continue
            pooled = np.concatenate(
                [
                    predict_with(template, weights_of(m), vals[jobs[m][1]], autocast=autocast)
                    for m in models
                ]
            )
            out[point] = (selection_metric(pooled, y_val, task), validation_loss(pooled, y_val))
        return out

    return score


def _window_means(values: np.ndarray, width: int) -> list[float]:
    """Means of consecutive windows of `width` steps (a short curve for results.json)."""
    return [float(values[s : s + width].mean()) for s in range(0, len(values), width)]


RUNNERS: dict[Family, Callable[[str, Context, Split, int], ProbeRun]] = {
    "knn": _run_head_row,
    "head": _run_head_row,
    "set": _run_set_row,
    "attentive": _run_set_row,
}


def run_row(name: str, ctx: Context, split: Split, seed: int) -> ProbeRun:
    """Row `name` on one seed's split, by its family's runner."""
    return RUNNERS[ROWS[name].family](name, ctx, split, seed)
