"""The evaluation protocol: the probe rows (``eval/rows.py``) on a train/test pair of feature
stores, chosen on validation and scored once on test; `scalevid.eval.report` writes the results
as results.json, markdown tables and plots.

Rows (baseline -> SCALE counterpart):

    knn          -> scale_knn        kNN (k=20, T=0.07) on one vector per video
    linear       -> scale_linear     linear head per clip, softmax averaged over a video's views
    mlp                              MLP head per clip on raw features
    transformer  -> scale_ft         SCALE architecture trained on clip sets (random init /
                                     pretrained)
    attentive    -> scale_attentive  a learned query cross-attending over the clip vectors (+ box
                                     embeddings), then a linear head

Representations (N videos, V views, D feature dim, H SCALE hidden dim; built by
`scalevid.eval.representations`):
    baseline per-clip vectors: the raw clip features (N, V, D);
    SCALE per-clip vectors: [clip feature, SET output] (N, V, D + H), the SET output computed by
    the pretrained predictor over all valid clips of the video (train store: its K clips; test
    store: all its views). `clip_vector="token"` uses the contextualised clip token instead of
    the raw feature: [token, SET] (N, V, 2H). SCALE_attentive always reads [token, SET].
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
       set and attentive probes are scored every few steps and stop early, so the step count
       is part of the choice (``eval/families.py``); the best val metric is chosen, ties going
       to the lower validation loss, then to the earlier config (and step);
    4. the chosen config is retrained on the whole train split (set and attentive probes: the
       same schedule, up to the chosen step) and scored once on test.
Test labels are read only in step 4's scoring (and by the report's confusion matrix and map).
Mean and sample std over seeds are reported for top-1 (and top-5 with more than 5 classes),
or MSE for regression targets, with each row's test standard error, the chance level, the margin
each SCALE row's difference to its baseline must clear, and the best row only where it leads the
runner-up by more than that margin (`eval/summary.py` says how each is computed). The seed loop, the input checks (``eval/checks.py``), the
families' runners (``eval/families.py``) and the summaries (``eval/summary.py``) are apart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalevid.eval.cache import BaselineCache, ProbeRun, load_probe_run, save_probe_run
from scalevid.eval.checks import (
    Scored,
    check_model,
    check_stores,
    runnable_probes,
    scored_videos,
    task_and_labels,
)
from scalevid.eval.config import EvalConfig, Task
from scalevid.eval.families import Context, set_probe_init
from scalevid.eval.report import write_report
from scalevid.eval.representations import load_model, open_store, representations
from scalevid.eval.rows import ROWS, ProbeName
from scalevid.eval.splits import Split, make_split
from scalevid.eval.summary import summarise, test_metrics
from scalevid.eval.workers import Job, plan_workers, run_jobs
from scalevid.folders import SPLITS, split_file
from scalevid.hardware import resolve_device
from scalevid.model import ScaleModel
from scalevid.outfiles import make_folder, replace_file
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)


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
    check_stores(train_store, test_store)
    device = resolve_device(config.device)
    model = load_model(run, device)
    check_model(model, train_store)
    task, train_labels, test_labels = task_and_labels(train_store, test_store, config.task)
    probes, skipped = runnable_probes(config, task, has_run=model is not None)
    scored = scored_videos(train_store, test_store, task, train_labels, test_labels)
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
    results = summarise(
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


def _context(
    config: EvalConfig,
    task: Task,
    scored: Scored,
    train_labels: np.ndarray,
    train_store: FeatureStore,
    test_store: FeatureStore,
    model: ScaleModel | None,
    device: torch.device,
) -> Context:
    """The shared context, with the representations of both stores (SCALE's computed here)."""
    kwargs = {
        "clip_vector": config.clip_vector,
        "tokens": "scale_attentive" in config.probes,
        "batch_size": config.embed_batch_size,
        "progress": config.progress,
    }
    return Context(
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
    ctx: Context,
    scored: Scored,
    *,
    out: Path,
    cache: BaselineCache | None,
) -> tuple[dict[str, list[ProbeRun]], list[dict[str, Any]], list[str]]:
    """Every probe on every seed's split: (per probe its runs in seed order, per seed its
    results.json entry, the "<probe> seed <S>" runs taken from the baseline cache). Runs not in
    the cache are trained as `eval/workers.py` plans them (`EvalConfig.workers`), and each is
    logged, and cached for a baseline row, as soon as it finishes."""
    make_folder(out / SPLITS)
    splits = {seed: _seed_split(seed, ctx, scored, out=out) for seed in ctx.config.seeds}
    seed_info = [_seed_info(seed, split, ctx) for seed, split in splits.items()]
    done: dict[Job, ProbeRun] = {}
    reused: list[str] = []
    paths: dict[Job, Path] = {}
    todo: list[Job] = []
    for job in (Job(name, seed) for seed in ctx.config.seeds for name in probes):
        path = _cache_path(job, ctx, cache)
        cached = load_probe_run(path) if path is not None else None
        if cached is not None:
            done[job] = cached
            reused.append(f"{job.name} seed {job.seed}")
            _log_run(job, cached, scored.y_test, ctx, f"reused from {path}")
            continue
        if path is not None:
            paths[job] = path
        todo.append(job)
    plan = plan_workers(ctx.config.workers, device=ctx.device, jobs=len(todo))
    if plan.workers > 1:
        ctx.train.preload()
        ctx.test.preload()
        logger.info(
            "training %d probe runs on %d worker processes (%d torch thread%s each)",
            len(todo),
            plan.workers,
            plan.threads,
            "" if plan.threads == 1 else "s",
        )
    for job, run in run_jobs(todo, ctx, splits, plan=plan):
        if job in paths:
            save_probe_run(run, paths[job])
        done[job] = run
        _log_run(job, run, scored.y_test, ctx, f"{run.seconds:.1f} s")
    runs = {name: [done[Job(name, seed)] for seed in ctx.config.seeds] for name in probes}
    return runs, seed_info, reused


def _seed_split(seed: int, ctx: Context, scored: Scored, *, out: Path) -> Split:
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
    replace_file(out / split_file(seed), lambda f: np.savez(f, **arrays))
    return split


def _seed_info(seed: int, split: Split, ctx: Context) -> dict[str, Any]:
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


def _cache_path(job: Job, ctx: Context, cache: BaselineCache | None) -> Path | None:
    """Where the baseline cache keeps the job's run (None: no cache, or a SCALE row)."""
    row = ROWS[job.name]
    if cache is None or row.needs_run:
        return None
    architecture = None
    if row.family == "set":  # the transformer's architecture may come from the run
        architecture = asdict(set_probe_init(job.name, ctx))
    return cache.path(
        job.name,
        job.seed,
        config=ctx.config,
        task=ctx.task,
        device=ctx.device,
        architecture=architecture,
    )


def _log_run(job: Job, run: ProbeRun, y_test: np.ndarray, ctx: Context, how: str) -> None:
    """The progress line of one finished (or reused) run: its test metrics and time."""
    scores = test_metrics(run.test_scores, y_test, ctx.task)
    logger.info(
        "%s seed %d: %s (%s)",
        ROWS[job.name].label,
        job.seed,
        ", ".join(f"{k} {v:.4g}" for k, v in scores.items()),
        how,
    )


def _meta(
    train_store: FeatureStore,
    test_store: FeatureStore,
    run: ScaleModel | str | Path | None,
    scored: Scored,
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
