"""Set-up for SCALE pretraining: config, data on the device, model, optimizer, resume, and the
run folder (its files: `scalevid.folders`). The step loop itself lives in
`scalevid.train.engine`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from scalevid import __version__
from scalevid.config import ConfigError
from scalevid.distributed import Gather, process_group
from scalevid.folders import CONFIG, LAST_CHECKPOINT, METRICS_LOG
from scalevid.hardware import autocast_dtype, resolve_device
from scalevid.model import ScaleModel
from scalevid.outfiles import write_text
from scalevid.store import FeatureStore, StoreLock, StoreLockedError
from scalevid.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_json,
    recover_checkpoint,
    save_weights,
)
from scalevid.train.config import TrainConfig
from scalevid.train.data import load_train_data
from scalevid.train.engine import Trainer
from scalevid.train.schedule import adamw

logger = logging.getLogger(__name__)


def train(config: TrainConfig, *, resume: bool = False) -> Path:
    """Pretrain SCALE on a feature store; returns the run folder. Under torchrun every process
    calls this and takes its share of each global batch."""
    if not config.store or not config.out:
        raise ConfigError("train needs both a store (--store) and a run folder (--out)")
    device = resolve_device(config.device)
    with process_group(device, timeout_s=config.dist_timeout) as procs:
        gather = Gather(rank=procs.rank, world=procs.world)
        lock = _lock_run(Path(config.out), gather)
        try:
            return _train(config, resume, gather, procs.device)
        finally:
            lock.release()


RUN_REFUSAL = (
    "{path} is being trained by another process (pid {pid}, lock {lock}); wait for it to "
    "finish, or choose another --out. Two trainers on one run folder would overwrite each "
    "other's checkpoints and log every step twice"
)


def _lock_run(run: Path, gather: Gather) -> StoreLock:
    """One training job per run folder: rank 0 takes the folder's OS lock (the one a store
    has) for the whole job and tells the other ranks whether it got it, so every rank of a
    second job stops before writing anything."""
    lock = StoreLock(run, refusal=RUN_REFUSAL)
    error: StoreLockedError | None = None
    if gather.rank == 0:
        try:
            lock.acquire()
        except StoreLockedError as e:
            error = e
    if gather.world > 1:
        import torch.distributed as dist

        flag = [error is None]
        dist.broadcast_object_list(flag, src=0)
        if not flag[0] and error is None:
            raise StoreLockedError(f"{run} is being trained by another job", path=run)
    if error is not None:
        raise error
    return lock


def _train(config: TrainConfig, resume: bool, gather: Gather, device: torch.device) -> Path:
    store = FeatureStore.open(config.store, verify_checksums=config.verify_store)
    _fit_config_to_store(config, store, gather)
    run = Path(config.out)
    _prepare_run_folder(run, resume, gather)
    torch.manual_seed(config.seed)
    model = ScaleModel(config.model).to(device)
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    start_step = _resume_step(config, run, model, optimizer) if resume else 0
    if gather.rank == 0:
        # Rows after the checkpoint are redone; a fresh start (resume before the first
        # checkpoint) keeps none, so the log never holds a step twice.
        _truncate_metrics(run / METRICS_LOG, start_step)

    full_config = {
        "train": config.to_dict(),
        "model": config.model.to_dict(),
        "store_manifest": store.manifest.to_dict(),
        "scalevid_version": __version__,
    }
    if gather.rank == 0:
        write_text(run / CONFIG, json.dumps(full_config, indent=2, sort_keys=True))
    data = load_train_data(store, config, device)
    trainer = Trainer(
        config=config,
        full_config=full_config,
        model=model,
        optimizer=optimizer,
        data=data,
        gather=gather,
        device=device,
        autocast=autocast_dtype(config.precision, device),
        run=run,
    )
    trainer.fit(start_step)
    if gather.rank == 0:
        save_weights(run, model, {**full_config, "step": trainer.total_steps})
        logger.info("finished: %s", run)
    return run


def _fit_config_to_store(config: TrainConfig, store: FeatureStore, gather: Gather) -> None:
    """Check the store can be trained on and fit the config to it: the model's input dim is the
    store's feature dim; the global batch is at most the store's videos, split evenly over the
    processes."""
    if store.clips_per_video < 2:
        raise ConfigError(
            f"{config.store}: {store.clips_per_video} clip(s) per video; SCALE needs at least 2 "
            "(extract with more clips per video)"
        )
    _check_something_to_mask(store, config)
    if config.model.input_dim != store.dim:
        logger.info("model.input_dim set to the store's feature dim %d", store.dim)
        config.model.input_dim = store.dim
    world_batch = config.batch_size
    if world_batch > len(store):
        logger.warning(
            "batch size %d > %d videos in the store: using %d", world_batch, len(store), len(store)
        )
        world_batch = len(store)
    world_batch -= world_batch % gather.world
    if world_batch < 2 * gather.world:
        raise ConfigError(
            f"{config.store}: {len(store)} videos cannot fill a batch of at least 2 videos per "
            f"process on {gather.world} process(es)"
        )
    config.batch_size = world_batch


def _prepare_run_folder(run: Path, resume: bool, gather: Gather) -> None:
    """Rank 0 creates the run folder (refusing to start over a finished run unless resuming)
    and finishes or cleans up writes that a kill interrupted; then every rank sees it."""
    if gather.rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        if not resume and (run / METRICS_LOG).exists():
            raise FileExistsError(
                f"{run} already holds a run; pass --resume to continue it or choose another --out"
            )
        recover_checkpoint(run / LAST_CHECKPOINT)  # a checkpoint save that a kill interrupted
        for leftover in run.glob(".tmp-*"):  # a final-weights write that a kill interrupted
            if leftover.is_file():
                leftover.unlink()
    if gather.world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank sees the recovered checkpoint


def _resume_step(
    config: TrainConfig, run: Path, model: ScaleModel, optimizer: torch.optim.Optimizer
) -> int:
    """Load the run's last checkpoint into the model and optimizer and return its step (0, a
    fresh start, when there is none); refuse one whose settings differ from `config`."""
    last = run / LAST_CHECKPOINT
    if not last.exists():
        logger.info("no checkpoint in %s: starting from scratch", last)
        return 0
    saved_config = read_json(last / CONFIG)
    try:
        saved_cfg = TrainConfig.from_dict({**saved_config["train"]})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{last / CONFIG}: not the config of a scalevid training run ({e}); "
            "start without --resume or use another --out"
        ) from None
    _check_resumable(saved_cfg, config)
    saved = load_checkpoint(last, model=model, optimizer=optimizer)
    start_step = int(saved["step"])
    logger.info("resuming %s at step %d", run, start_step)
    return start_step


def _check_something_to_mask(store: FeatureStore, config: TrainConfig) -> None:
    """Masked clip modelling needs sets of at least 2 clips (one masked, one visible). A video
    of n valid clips gives sets of at most min(num_views, ceil(n / 2)) clips; when no video can
    give one, every step's MCM loss would be NaN and the run silently SET-only."""
    pretext = config.pretext
    if pretext.mcm_weight <= 0:
        return
    fix = "or set --mcm-weight 0 to train with the SET loss only"
    if pretext.num_views < 2:
        raise ConfigError(
            f"--num-views {pretext.num_views}: a set of one clip has nothing to mask (masked "
            f"clip modelling needs at least 2 clips per set); use --num-views 2 or more, {fix}"
        )
    largest = np.minimum(pretext.num_views, (np.asarray(store.num_clips) + 1) // 2)  # (N,)
    maskable = float((largest >= 2).mean()) if len(largest) else 0.0
    if maskable == 0.0:
        raise ConfigError(
            f"{config.store}: every video has at most {int(store.num_clips.max())} clip(s), so "
            "each of its two sets holds one clip and nothing can be masked; extract at least 3 "
            f"clips per video (--num-clips), {fix}"
        )
    if maskable < 0.5:
        logger.warning(
            "only %.0f%% of the videos in %s have enough clips (3+) to mask one; steps whose "
            "batch has none stop the run with a non-finite loss",
            100 * maskable,
            config.store,
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a row torn by a kill; redone anyway
            continue
    write_text(path, "".join(line + "\n" for line in kept))


def _check_resumable(saved: TrainConfig, now: TrainConfig) -> None:
    """A resumed run must keep everything that shapes its schedule and data order."""
    keys = ("epochs", "batch_size", "lr", "seed", "warmup_fraction", "min_lr", "weight_decay")
    changed = [k for k in keys if getattr(saved, k) != getattr(now, k)]
    if saved.model != now.model:
        changed.append("model")
    if saved.pretext != now.pretext:
        changed.append("pretext")
    if changed:
        raise ConfigError(
            f"cannot resume: {', '.join(changed)} differ from the checkpoint's config; "
            "resume with the same settings or start a new run folder"
        )
