"""The SCALE pretraining loop: steps, schedule, gradient averaging, logging, checkpoints.

All randomness of a step (the epoch's video order, clip sets, masks, dropout) is a function of
(seed, step), so a resumed run takes exactly the steps an uninterrupted one would, and a
data-parallel run draws exactly what one process would for the same global batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from scalevid.distributed import Gather
from scalevid.folders import CURVES, LAST_CHECKPOINT, METRICS_LOG
from scalevid.model import ScaleModel
from scalevid.outfiles import open_append, reraise_if_full
from scalevid.pretext import pretext_step
from scalevid.progress import progress_bar
from scalevid.train.checkpoint import save_checkpoint
from scalevid.train.config import TrainConfig
from scalevid.train.data import TrainData
from scalevid.train.schedule import warmup_cosine, warmup_steps

logger = logging.getLogger(__name__)

# The logged metrics (each a mean over the steps since the last log line) and how a
# data-parallel run combines the ranks' values: "sum" adds them (a rank's losses are its share of
# the global batch's mean; mcm_dropped counts masked clips left out of a step's loss because they
# overflowed its fixed query capacity), "mean" averages them (accuracies, and mask_ratio, the
# share of valid clips masked: the effective mask ratio, are means over a rank's own videos).
METRICS: dict[str, Literal["sum", "mean"]] = {
    "loss": "sum",
    "mcm_loss": "sum",
    "set_loss": "sum",
    "mcm_acc": "mean",
    "set_acc": "mean",
    "mcm_dropped": "sum",
    "mask_ratio": "mean",
}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/Inf; the run stopped and kept its last good checkpoint."""


# The run's random streams: each is seeded from (seed, stream, counter), so a resumed or
# data-parallel run redraws exactly what an uninterrupted single process would.
EPOCH_ORDER = 0  # the videos' order in an epoch; counter: the epoch
DROPOUT = 1  # torch's global generator, which dropout draws from; counter: the step
PRETEXT = 2  # clip sets and masks (`pretext_step`'s generator); counter: the step


def _stream_seed(seed: int, stream: int, counter: int) -> int:
    return (seed * 4 + stream) * 2**40 + counter


@dataclass
class Trainer:
    """Runs the pretraining steps of one process on its share of each global batch.

    Built by `scalevid.train.run` (which owns set-up: store, model, optimizer, resume, run
    folder); `fit(start_step)` then takes steps `start_step..total_steps`: learning rate from the
    warm-up-cosine schedule, one `pretext_step`, gradients averaged over ranks, a log row every
    `log_every` steps (`METRICS` plus lr and videos/s, in `metrics.jsonl`), a checkpoint at the end
    of each epoch (or every `checkpoint_every` steps) and at the last step, and
    `NonFiniteLossError` on a NaN/Inf loss.
    """

    config: TrainConfig
    full_config: dict[str, Any]
    model: ScaleModel
    optimizer: torch.optim.Optimizer
    data: TrainData
    gather: Gather
    device: torch.device
    autocast: torch.dtype | None
    run: Path

    def __post_init__(self) -> None:
        n = len(self.data)
        self.steps_per_epoch = n // self.config.batch_size  # drop_last
        self.total_steps = self.steps_per_epoch * self.config.epochs
        self.local_batch = self.config.batch_size // self.gather.world
        self.saved_step: int | None = None  # step of the last checkpoint written
        # Known once, on the host: no video needs padding, so steps skip the padding masks.
        stored = self.data.boxes.shape[1]
        full = 2 * self.config.pretext.num_views
        self.all_valid = stored >= full and int(self.data.num_clips.min()) >= full
        if self.config.compile:
            self.model.compile()
        self.main = self.gather.rank == 0
        self.writer = None
        if self.main and self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise RuntimeError(
                    "--tensorboard needs the tensorboard package: pip install 'scalevid[tensorboard]'"
                ) from err

            self.writer = SummaryWriter(str(self.run / "tensorboard"))

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_stream_seed(self.config.seed, EPOCH_ORDER, epoch))
        return torch.randperm(len(self.data), generator=g).to(self.data.index_device)

    def fit(self, start_step: int = 0) -> None:
        cfg = self.config
        self.model.train()
        bar = progress_bar(
            total=self.total_steps,
            initial=start_step,
            enabled=(self.main and cfg.progress),
            desc="train",
            unit="step",
        )
        sums = torch.zeros(len(METRICS), device=self.device)
        counted, tick = 0, time.perf_counter()
        order, order_epoch = None, -1
        self.saved_step = start_step if start_step > 0 else None
        # First step whose loss was NaN/Inf (-1: none), kept on the device so that a step never
        # waits for the host; read where the loop syncs anyway (logging, checkpoints).
        first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        for step in range(start_step, self.total_steps):
            epoch, within = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            lo = within * cfg.batch_size + self.gather.rank * self.local_batch
            metrics = self.train_step(step, order[lo : lo + self.local_batch])
            first_bad.masked_fill_((first_bad < 0) & ~torch.isfinite(metrics["loss"]), step)
            sums += torch.stack([metrics.get(k, sums.new_zeros(())) for k in METRICS])
            counted += 1
            bar.update(1)
            last = step + 1 == self.total_steps
            end_of_epoch = (step + 1) % self.steps_per_epoch == 0
            every = cfg.checkpoint_every
            save = last or (end_of_epoch if every <= 0 else (step + 1) % every == 0)
            if (step + 1) % cfg.log_every == 0 or save:
                self.stop_if_nonfinite(first_bad, metrics)
            if (step + 1) % cfg.log_every == 0 or last:
                row = self.log(step, epoch, sums / counted, time.perf_counter() - tick, counted)
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    mcm=f"{row['mcm_acc']:.2f}",
                    set=f"{row['set_acc']:.2f}",
                )
                sums.zero_()
                counted, tick = 0, time.perf_counter()
            if save:
                self.checkpoint(step + 1)
        bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.main:
            from scalevid.train.curves import chance_accuracies, plot_training_curves

            chance = chance_accuracies(batch_size=cfg.batch_size, num_views=cfg.pretext.num_views)
            plot_training_curves(self.run / METRICS_LOG, self.run / CURVES, chance=chance)

    def stop_if_nonfinite(self, first_bad: torch.Tensor, metrics: dict[str, torch.Tensor]) -> None:
        """Raise NonFiniteLossError, before anything is logged or saved, when a step since the
        last check had a NaN/Inf loss on any rank. The weights are then no longer trustworthy,
        so the last checkpoint (written before that step) is left as it is."""
        bad = first_bad.clone()
        if self.gather.world > 1:
            import torch.distributed as dist

            bad = torch.where(bad < 0, torch.full_like(bad, 2**62), bad)
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
            bad = torch.where(bad == 2**62, torch.full_like(bad, -1), bad)
        step = int(bad.item())
        if step < 0:
            return
        parts = ", ".join(
            f"{k} {float(metrics[k]):.4g}" for k in ("loss", "mcm_loss", "set_loss") if k in metrics
        )
        kept = (
            f"the last good checkpoint, {self.run / LAST_CHECKPOINT} (step "
            f"{self.saved_step}), is kept"
            if self.saved_step is not None
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(
            f"{self.run}: the training loss became NaN/Inf at step {step + 1} (latest: {parts}); "
            f"training stopped and {kept}. Start a new run with a lower --lr or --precision "
            "fp32, and run `scalevid store check` on the store"
        )

    def train_step(self, step: int, index: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        lr = warmup_cosine(
            step,
            total=self.total_steps,
            warmup=warmup_steps(cfg.warmup_fraction, self.total_steps),
            peak=cfg.lr,
            floor=cfg.min_lr,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(_stream_seed(cfg.seed, DROPOUT, step))
        g = torch.Generator(device=self.device).manual_seed(_stream_seed(cfg.seed, PRETEXT, step))
        features, boxes, num_clips = self.data.batch(index)
        metrics = pretext_step(
            self.model,
            features,
            boxes,
            num_clips,
            cfg.pretext,
            g,
            gather=self.gather,
            autocast_dtype=self.autocast,
            all_valid=self.all_valid,
        )
        self.optimizer.zero_grad(set_to_none=True)
        metrics["loss"].backward()
        if self.gather.world > 1:
            self.average_gradients()
        self.optimizer.step()
        metrics["loss"] = metrics["loss"].detach() / self.gather.world
        return metrics

    def average_gradients(self) -> None:
        import torch.distributed as dist

        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.gather.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def log(self, step: int, epoch: int, means: torch.Tensor, seconds: float, steps: int) -> dict:
        if self.gather.world > 1:
            import torch.distributed as dist

            dist.all_reduce(means)  # sums over ranks
            for i, reduction in enumerate(METRICS.values()):
                if reduction == "mean":
                    means[i] /= self.gather.world
        values = dict(zip(METRICS, means.tolist(), strict=True))
        if values["mcm_dropped"] > 0:
            logger.warning(
                "steps up to %d left %.1f masked clips per step out of the MCM loss (query "
                "capacity exceeded; expected with probability < 1e-9 per step)",
                step + 1,
                values["mcm_dropped"],
            )
        row = {
            "step": step + 1,
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            **values,
            "videos_per_s": steps * self.config.batch_size / max(seconds, 1e-9),
        }
        if self.main:
            try:
                with open_append(self.run / METRICS_LOG) as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:
                reraise_if_full(e, self.run / METRICS_LOG)
                raise
            if self.writer is not None:
                for key, value in row.items():
                    if key not in ("step", "epoch"):
                        self.writer.add_scalar(f"train/{key}", value, step + 1)
            logger.info(
                "step %d/%d epoch %d lr %.2e loss %.4f (mcm %.4f acc %.3f, set %.4f acc %.3f) %.0f videos/s",
                step + 1,
                self.total_steps,
                epoch,
                row["lr"],
                row["loss"],
                row["mcm_loss"],
                row["mcm_acc"],
                row["set_loss"],
                row["set_acc"],
                row["videos_per_s"],
            )
        return row

    def checkpoint(self, step: int) -> None:
        if not self.main:
            return
        save_checkpoint(
            self.run / LAST_CHECKPOINT,
            model=self.model,
            config={**self.full_config, "step": step},  # the step its weights are of
            optimizer=self.optimizer,
            trainer_state={"step": step, "epoch": step // max(1, self.steps_per_epoch)},
        )
        self.saved_step = step
