"""Set-up for SCALE pretraining: config, data on the device, model, optimizer, resume, and the
run folder. The step loop itself lives in `engine.py`.

Run folder layout:
    config.json           the resolved TrainConfig (its "model" entry rebuilds the model)
    model.safetensors     final weights (beside config.json, so the folder loads directly)
    checkpoints/last/     weights + config + trainer_state.pt, rewritten atomically
    metrics.jsonl         one row per log interval
    curves.png            loss / accuracy curves, drawn at the end
    tensorboard/          when enabled
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from scalevid import __version__
from scalevid.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_json,
    recover_checkpoint,
    save_weights,
)
from scalevid.config import load_config as load_stage_config
from scalevid.distributed import process_group
from scalevid.hardware import Precision, autocast_dtype, resolve_device
from scalevid.model import ModelConfig, ScaleModel
from scalevid.pretext import Gather, PretextConfig
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the run folder and every checkpoint."""

    store: str = ""
    out: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    epochs: int = 100
    batch_size: int = 512  # videos per step, global over all processes
    lr: float = 3e-4
    weight_decay: float = 1e-4  # not applied to biases, norms and tokens
    warmup_fraction: float = 0.05
    min_lr: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    compile: bool = False
    resident: Literal["auto", "always", "never"] = "auto"  # features in device memory
    log_every: int = 20  # steps
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch
    tensorboard: bool = False
    progress: bool = True
    verify_store: bool = True  # crc32 of every store file on open (False: very large stores)

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule}, got {getattr(self, name)!r}"
            for name, rule, ok in (
                ("epochs", "a positive integer", lambda v: v >= 1),
                ("batch_size", "a positive integer", lambda v: v >= 1),
                ("log_every", "a positive integer", lambda v: v >= 1),
                ("checkpoint_every", "an integer >= 0 (0: every epoch)", lambda v: v >= 0),
                ("lr", "a positive number", lambda v: v > 0),
                ("warmup_fraction", "in [0, 1]", lambda v: 0 <= v <= 1),
            )
            if isinstance(getattr(self, name), bool)
            or not isinstance(getattr(self, name), (int, float))
            or not ok(getattr(self, name))
        ]
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        if isinstance(d.get("model"), dict):
            d["model"] = ModelConfig.from_dict(d["model"])
        if isinstance(d.get("pretext"), dict):
            d["pretext"] = PretextConfig(**d["pretext"])
        return cls(**d)


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig defaults, then a YAML file, then `overrides` (see `scalevid.config`)."""
    return load_stage_config(TrainConfig, path, **overrides)


def lr_at(step: int, *, total: int, config: TrainConfig) -> float:
    """Per-step linear warm-up then cosine decay to min_lr."""
    warmup = max(1, round(config.warmup_fraction * total))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: none on biases, norms and learned tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith("bias") or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=config.lr)


@dataclass
class TrainData:
    """The store's arrays as the trainer uses them: boxes and clip counts always on the device;
    features on the device when `resident`, else gathered from the memory map per step."""

    store: FeatureStore | None  # None when `features` holds everything
    boxes: torch.Tensor  # (N, K, 7) float32
    num_clips: torch.Tensor  # (N,) int64
    features: torch.Tensor | None  # (N, K, D) float16 when resident

    def __len__(self) -> int:
        return self.num_clips.shape[0]

    @property
    def index_device(self) -> torch.device:
        """Where batch indices should live: beside resident features (no per-step copy), else on
        the host, which reads the memory map (no device-to-host copy, hence no sync)."""
        return self.features.device if self.features is not None else torch.device("cpu")

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (b, K, D), boxes (b, K, 7) and clip counts (b,) on the training device, of
        videos `index` (b,), which lives on `index_device`."""
        if self.features is not None:
            feats = self.features[index]
        else:
            wanted = index.cpu().numpy()
            rows = np.sort(wanted)
            order = np.argsort(np.argsort(wanted))
            feats = torch.from_numpy(np.ascontiguousarray(self.store.features(rows)[order]))
            feats = feats.to(self.boxes.device, non_blocking=True)
            index = index.to(self.boxes.device, non_blocking=True)
        return feats, self.boxes[index], self.num_clips[index]


def load_train_data(store: FeatureStore, config: TrainConfig, device: torch.device) -> TrainData:
    size = len(store) * store.clips_per_video * store.dim * 2
    if config.resident == "auto":
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            resident = size < 0.5 * free
        else:
            resident = size < 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        resident = config.resident == "always"
    logger.info(
        "store: %d videos x %d clips x %d dims (%.1f MB); features %s",
        len(store),
        store.clips_per_video,
        store.dim,
        size / 1e6,
        f"resident on {device}" if resident else "read from the memory map per step",
    )
    features = torch.from_numpy(np.asarray(store.features())).to(device) if resident else None
    return TrainData(
        store=store,
        boxes=torch.from_numpy(np.asarray(store.boxes, dtype=np.float32)).to(device),
        num_clips=torch.from_numpy(np.asarray(store.num_clips, dtype=np.int64)).to(device),
        features=features,
    )


def train(config: TrainConfig, *, resume: bool = False) -> Path:
    """Pretrain SCALE on a feature store; returns the run folder. Under torchrun every process
    calls this and takes its share of each global batch."""
    if not config.store or not config.out:
        raise ValueError("train needs both a store (--store) and a run folder (--out)")
    with process_group(resolve_device(config.device)) as procs:
        return _train(config, resume, Gather(rank=procs.rank, world=procs.world), procs.device)


def _train(config: TrainConfig, resume: bool, gather: Gather, device: torch.device) -> Path:
    from scalevid.engine import Trainer

    store = FeatureStore.open(config.store, verify_checksums=config.verify_store)
    if store.clips_per_video < 2:
        raise ValueError(
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
        raise ValueError(
            f"{config.store}: {len(store)} videos cannot fill a batch of at least 2 videos per "
            f"process on {gather.world} process(es)"
        )
    config.batch_size = world_batch

    run = Path(config.out)
    last = run / "checkpoints" / "last"
    if gather.rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        if not resume and (run / "metrics.jsonl").exists():
            raise FileExistsError(
                f"{run} already holds a run; pass --resume to continue it or choose another --out"
            )
        recover_checkpoint(last)  # finish or clean up a save that a kill interrupted
        for leftover in run.glob(".tmp-*"):  # a final-weights write that a kill interrupted
            if leftover.is_file():
                leftover.unlink()
    if gather.world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank sees the recovered checkpoint
    torch.manual_seed(config.seed)
    model = ScaleModel(config.model).to(device)
    optimizer = make_optimizer(model, config)
    start_step = 0
    if resume and last.exists():
        saved_config = read_json(last / "config.json")
        try:
            saved_cfg = TrainConfig.from_dict({**saved_config["train"]})
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{last / 'config.json'}: not the config of a scalevid training run ({e}); "
                "start without --resume or use another --out"
            ) from None
        _check_resumable(saved_cfg, config)
        saved = load_checkpoint(last, model=model, optimizer=optimizer)
        start_step = int(saved["step"])
        logger.info("resuming %s at step %d", run, start_step)
    elif resume:
        logger.info("no checkpoint in %s: starting from scratch", last)
    if gather.rank == 0:
        # Rows after the checkpoint are redone; a fresh start (resume before the first
        # checkpoint) keeps none, so the log never holds a step twice.
        _truncate_metrics(run / "metrics.jsonl", start_step)

    full_config = {
        "train": config.to_dict(),
        "model": config.model.to_dict(),
        "store_manifest": store.manifest.to_dict(),
        "scalevid_version": __version__,
    }
    if gather.rank == 0:
        (run / "config.json").write_text(json.dumps(full_config, indent=2, sort_keys=True))
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
        save_weights(run, model, full_config)
        logger.info("finished: %s", run)
    return run


def _check_something_to_mask(store: FeatureStore, config: TrainConfig) -> None:
    """Masked clip modelling needs sets of at least 2 clips (one masked, one visible). A video
    of n valid clips gives sets of at most min(num_views, ceil(n / 2)) clips; when no video can
    give one, every step's MCM loss would be NaN and the run silently SET-only."""
    pretext = config.pretext
    if pretext.mcm_weight <= 0:
        return
    fix = "or set --mcm-weight 0 to train with the SET loss only"
    if pretext.num_views < 2:
        raise ValueError(
            f"--num-views {pretext.num_views}: a set of one clip has nothing to mask (masked "
            f"clip modelling needs at least 2 clips per set); use --num-views 2 or more, {fix}"
        )
    largest = np.minimum(pretext.num_views, (np.asarray(store.num_clips) + 1) // 2)  # (N,)
    maskable = float((largest >= 2).mean()) if len(largest) else 0.0
    if maskable == 0.0:
        raise ValueError(
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
    path.write_text("".join(line + "\n" for line in kept))


def _check_resumable(saved: TrainConfig, now: TrainConfig) -> None:
    """A resumed run must keep everything that shapes its schedule and data order."""
    keys = ("epochs", "batch_size", "lr", "seed", "warmup_fraction", "min_lr", "weight_decay")
    changed = [k for k in keys if getattr(saved, k) != getattr(now, k)]
    if saved.model != now.model:
        changed.append("model")
    if saved.pretext != now.pretext:
        changed.append("pretext")
    if changed:
        raise ValueError(
            f"cannot resume: {', '.join(changed)} differ from the checkpoint's config; "
            "resume with the same settings or start a new run folder"
        )
