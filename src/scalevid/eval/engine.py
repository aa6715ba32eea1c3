"""The grid trainer: every trained probe (linear and MLP heads, set probes, attentive probes) is
a grid of M models of one architecture whose weights are stacked along a leading model dim and
trained in one pass by :class:`GridTrainer`.

What a probe family supplies:
- the stacked weights (name -> (M, *shape)) and their optimizer (``eval/stacked.py``);
- ``loss(weights, batch) -> (M',)``: the losses of M' models on one batch, given their rows of
  the stacks (one batched call), or with ``per_model`` a list of the M' models' own weights
  (``StackedAdamW.rows``: a loss that calls the models one by one; see ``set_probes``);
- one batch stream per training set (``next(step, device) -> batch``); models on the same
  training set (e.g. the lrs of one cross-validation fold) share its batches, read once a step.

What the trainer does, the same for every family: the step loop; each model's learning rate on
the warm-up + cosine schedule of its own length (``schedule_steps``, ``train.schedule``); a
model leaves the stacks at its ``stop_steps`` (the rows left keep stepping); and, given an
:class:`EarlyStopping`, validation every ``every`` steps of each *group* of models (one grid
point's folds), whose curve it records; a group stops after ``patience`` validations without
improving on its best point, or (the median stopping rule) once its best point falls below the
median of the running means of the curves that have finished. A schedule longer than the stop is
how a refit replays a selection run exactly: the same schedule, cut at the chosen step.

Shapes: M models, M' of them still training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from scalevid.eval.stacked import StackedAdamW, StackedSGD
from scalevid.progress import progress_bar
from scalevid.train.schedule import warmup_cosine

Weights = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, ...]
# rows of the stacks (or, per model, its own weights), batch -> (M',)
StackLoss = Callable[[Weights | list[Weights], Batch], torch.Tensor]


class Stream(Protocol):
    """One training set's batches: the batch of optimizer step `step` (0-based)."""

    def next(self, step: int, device: torch.device) -> Batch: ...


@dataclass
class Curve:
    """One group's validation curve: at each validated step, the metric (higher is better) and
    the loss (lower is better; breaks ties of the metric); its best point so far, and its
    lowest loss so far."""

    steps: list[int] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    best: int = -1  # index into the lists, -1 before the first validation
    lowest: int = -1  # index of the lowest (non-NaN) loss so far

    def add(self, step: int, metric: float, loss: float, *, tol: float = 1e-9) -> bool:
        """Record one validation; True when it is the new best point."""
        self.steps.append(step)
        self.metric.append(metric)
        self.loss.append(loss)
        i = len(self.steps) - 1
        if not math.isnan(loss) and (self.lowest < 0 or loss < self.loss[self.lowest] - tol):
            self.lowest = i
        if self.best < 0:
            self.best = i
            return True
        m, b = self.metric[self.best], self.loss[self.best]
        better = metric > m + tol or (
            abs(metric - m) <= tol and not math.isnan(loss) and (math.isnan(b) or loss < b)
        )
        if better:
            self.best = i
        return better

    @property
    def best_step(self) -> int:
        return self.steps[self.best]

    def since_best(self) -> int:
        """Validations after the best point."""
        return len(self.steps) - 1 - self.best

    def since_progress(self) -> int:
        """Validations after the last one that improved anything: the best point, or the
        lowest loss (a curve on a plateau of the metric whose loss still falls is learning)."""
        return len(self.steps) - 1 - max(self.best, self.lowest)

    def running_mean(self, step: int) -> float | None:
        """The mean metric of the validations up to `step` (None before the first)."""
        values = [m for s, m in zip(self.steps, self.metric, strict=True) if s <= step]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {"steps": self.steps, "metric": self.metric, "loss": self.loss}


def below_median(curve: Curve, finished: Sequence[Curve], step: int) -> bool:
    """The median stopping rule (Golovin et al., *Google Vizier*, KDD 2017, section 3.2.2): a
    curve at `step` whose best metric is below the median, over the `finished` curves (those
    that ran their course), of each one's running mean up to `step`. A running mean, not a best,
    so a finished curve that sat on a plateau before it found the signal stops nothing early on
    that plateau."""
    means = [m for m in (f.running_mean(step) for f in finished) if m is not None]
    return bool(means) and curve.metric[curve.best] < float(np.median(means))


# (active model -> its current weights) -> per active group, (metric, loss) on validation
GroupScorer = Callable[[Callable[[int], Weights], Sequence[int]], dict[int, tuple[float, float]]]


@dataclass
class EarlyStopping:
    """Validation of groups of models during training.

    groups[m]: the group of model m (a grid point; its members are its folds). Every `every`
    steps `score(weights_of, active)` scores the groups with an active member (weights_of(m) is
    model m's current weights); a group stops once `patience` validations have passed without
    progress, neither a new best point (``Curve.add``) nor a lower validation loss (a curve can
    sit on a plateau of its metric while its loss falls, before the signal is found), and not
    before `min_steps` steps. With `median`, a group also stops (is pruned) once its best point
    is below the median of the running means of the finished curves (``below_median``): the
    `finished` curves given (other grid points of the row, trained before) and this pass's
    groups that have stopped by their patience or budget (a pruned curve is not finished, as
    in Vizier, where the median is over completed trials).
    """

    groups: Sequence[int]
    score: GroupScorer
    every: int
    patience: int
    min_steps: int = 0
    median: bool = False
    finished: list[Curve] = field(default_factory=list)
    curves: dict[int, Curve] = field(default_factory=dict)
    pruned: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.every < 1 or self.patience < 1:
            raise ValueError("early stopping needs every >= 1 and patience >= 1")
        self.curves = {g: Curve() for g in dict.fromkeys(self.groups)}
        self.finished = list(self.finished)

    def validate(
        self,
        step: int,
        weights_of: Callable[[int], Weights],
        active: list[int],
        ending: set[int] | frozenset[int] = frozenset(),
    ) -> set:
        """Score after `step` + 1 steps; the groups that stop now (`ending`: groups that stop
        now anyway, at the end of their budget)."""
        scores = self.score(weights_of, active)
        stopped = set()
        for g, (metric, loss) in scores.items():
            curve = self.curves[g]
            curve.add(step + 1, metric, loss)
            if step + 1 < self.min_steps:
                continue
            if curve.since_progress() >= self.patience:
                stopped.add(g)
            elif self.median and below_median(curve, self.finished, step + 1):
                stopped.add(g)
                self.pruned.add(g)
        ended = (g for g in scores if (g in stopped or g in ending) and g not in self.pruned)
        self.finished += [self.curves[g] for g in ended]
        return stopped


@dataclass(frozen=True)
class LossTarget:
    """Train past `min_steps` until the mean training loss of the last `window` steps is at most
    `loss` (and at most to the model's stop step). This is how a refit on more data reaches
    the point that validation chose: its step count alone may not suffice, because a run can
    find the signal later than the validated run did (Goodfellow, Bengio and Courville, *Deep
    Learning*, section 7.8, the second way to use all the data after early stopping)."""

    loss: float
    min_steps: int
    window: int

    def reached(self, history: list[torch.Tensor]) -> bool:
        if len(history) < self.min_steps:
            return False
        return float(torch.stack(history[-self.window :]).mean()) <= self.loss


@dataclass
class TrainedGrid:
    """What a grid run leaves: each model's final weights (name -> (*shape)), its per-step
    training losses, the step it stopped after, the groups' validation curves and the groups
    the median stopping rule stopped."""

    weights: list[Weights]
    losses: list[np.ndarray]
    stopped_at: list[int]
    curves: dict[int, Curve]
    pruned: set[int] = field(default_factory=set)


class GridTrainer:
    """M models trained in one pass: see the module docstring.

    params: name -> (M, *shape) leaf tensors, the optimizer's (it replaces them as models leave).
    streams: one per training set; stream_of[m] the training set of model m.
    lrs: (M,) peak learning rates; schedule_steps[m] the length of model m's schedule (warm-up
    over its first warmups[m] steps, then cosine to 0); stop_steps[m] <= schedule_steps[m] the
    steps it trains at most; targets[m] (optional) stops it earlier (``LossTarget``).
    autocast: the forward passes' autocast dtype (None: fp32); weights, gradients and the
    optimizer stay fp32. per_model: the loss takes a list of the models' own weights
    (``StackedAdamW.rows``) instead of their rows of the stacks.
    """

    def __init__(
        self,
        *,
        optimizer: StackedAdamW | StackedSGD,
        loss: StackLoss,
        streams: Sequence[Stream],
        stream_of: Sequence[int],
        lrs: Sequence[float],
        schedule_steps: Sequence[int],
        warmups: Sequence[int],
        stop_steps: Sequence[int],
        stopping: EarlyStopping | None = None,
        targets: Sequence[LossTarget | None] | None = None,
        autocast: torch.dtype | None = None,
        per_model: bool = False,
        device: torch.device,
    ) -> None:
        m = len(lrs)
        if per_model and not isinstance(optimizer, StackedAdamW):
            raise ValueError("a per-model loss needs StackedAdamW (its per-model weights)")
        if not (len(stream_of) == len(schedule_steps) == len(warmups) == len(stop_steps) == m):
            raise ValueError("one stream index, schedule, warm-up and stop per model")
        if any(s < 1 or s > t for s, t in zip(stop_steps, schedule_steps, strict=True)):
            raise ValueError("every model needs 1 <= stop step <= schedule length")
        self.optimizer, self.loss, self.streams = optimizer, loss, list(streams)
        self.stream_of, self.device = list(stream_of), device
        self.lrs = torch.tensor(list(lrs), dtype=torch.float32, device=device)  # (M,)
        self.schedule, self.warmups = list(schedule_steps), list(warmups)
        self.stop_steps, self.stopping = list(stop_steps), stopping
        self.targets = list(targets) if targets is not None else [None] * m
        self.autocast, self.per_model = autocast, per_model
        self.active = list(range(m))  # model index of each row of the stacks
        self.final: dict[int, Weights] = {}
        self.stopped_at = [0] * m
        self.history: list[list[torch.Tensor]] = [[] for _ in range(m)]

    def run(self, *, progress: bool = False, desc: str = "grid") -> TrainedGrid:
        total = max(self.stop_steps)
        bar = progress_bar(total=total, desc=f"{desc} x{len(self.lrs)}", enabled=progress)
        step = 0
        while self.active and step < total:
            self._step(step)
            done = [m for m in self.active if self.stop_steps[m] == step + 1]
            done += [
                m
                for m in self.active
                if m not in done and self.targets[m] and self.targets[m].reached(self.history[m])
            ]
            if self.stopping is not None and (done or (step + 1) % self.stopping.every == 0):
                ending = {self.stopping.groups[m] for m in done}
                groups = self.stopping.validate(step, self._weights_of, self.active, ending)
                done += [m for m in self.active if self.stopping.groups[m] in groups]
            self._retire(set(done), step)
            step += 1
            bar.update(1)
        bar.close()
        return TrainedGrid(
            weights=[self.final[m] for m in range(len(self.lrs))],
            losses=[torch.stack(h).cpu().numpy() for h in self.history],
            stopped_at=self.stopped_at,
            curves=self.stopping.curves if self.stopping is not None else {},
            pruned=self.stopping.pruned if self.stopping is not None else set(),
        )

    def _step(self, step: int) -> None:
        rows = {m: r for r, m in enumerate(self.active)}
        params = self.optimizer.params
        own = self.optimizer.rows() if self.per_model else None  # type: ignore[union-attr]
        loss = torch.zeros((), device=self.device)
        for s, stream in enumerate(self.streams):
            live = [m for m in self.active if self.stream_of[m] == s]
            if not live:
                continue
            batch = stream.next(step, self.device)
            index = [rows[m] for m in live]
            weights: Weights | list[Weights] = params
            if own is not None:
                weights = [own[r] for r in index]
            elif index != list(range(len(self.active))):  # a part of the stacks reads this set
                picked = torch.tensor(index, device=self.device)
                weights = {k: v[picked] for k, v in params.items()}
            with torch.autocast(
                self.device.type,
                dtype=self.autocast or torch.float32,
                enabled=self.autocast is not None,
            ):
                per_model = self.loss(weights, batch).float()  # (len(live),)
            loss = loss + per_model.sum()  # models share nothing: each gets its own gradients
            for m, value in zip(live, per_model.detach(), strict=True):
                self.history[m].append(value)
        loss.backward()
        factor = [
            warmup_cosine(step, total=self.schedule[m], warmup=self.warmups[m]) for m in self.active
        ]
        index = torch.tensor(self.active, device=self.device)
        self.optimizer.step(self.lrs[index] * torch.tensor(factor, device=self.device))

    def _weights_of(self, m: int) -> Weights:
        r = self.active.index(m)
        return {k: v[r].detach() for k, v in self.optimizer.params.items()}

    def _retire(self, done: set[int], step: int) -> None:
        """Keep the final weights of the models in `done` and drop them from the stacks."""
        if not done:
            return
        for m in done:
            self.final[m] = self._weights_of(m)
            self.stopped_at[m] = step + 1
        keep = [r for r, m in enumerate(self.active) if m not in done]
        self.active = [self.active[r] for r in keep]
        if keep:
            self.optimizer.keep(keep)
