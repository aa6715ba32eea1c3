"""Set-level probes that train a transformer on a video's clip set: Transformer and SCALE_ft.

Both probes are the SCALE predictor (:class:`~scalevid.model.ScaleModel`) with a linear head,
trained supervised on frozen backbone features (cross-entropy for class labels, MSE for float
targets):

- **Transformer**: the predictor architecture from random initialisation (the baseline).
- **SCALE_ft**: the pretrained predictor of a run, fine-tuned the same way, optionally with a
  lower learning rate than the new head (``predictor_lr_scale``).

The head (``FinetuneConfig.head``) is the paper's by default (section 4.1: "a linear softmax head
on the concatenation of the individual clip features and the [SET] token before averaging"):
``clip_set`` gives every clip i its own output ``W [LN(x_i), SET] + b``, where ``x_i`` is the
clip's *backbone feature* (the paper's clip encoding C_i, the predictor's input; the same vector
SCALE_linear concatenates), LN a LayerNorm without parameters (so a head on raw features of any
scale trains stably; docs/evaluation.md) and SET the predictor's SET output over the whole set; the video's
prediction is the mean of the clips' softmax probabilities (regression: of their outputs), as the
linear baseline averages its clips' softmax. Training applies the cross-entropy to every valid
clip's output (averaged per video). ``set`` is the older head: one output from SET alone.

Every step a batch of videos contributes one random subset of ``num_views`` valid clips each;
at test a video is one set holding all of its valid views. The predictor has no positional
encoding apart from the clip boxes, so a prediction does not depend on the order of the views.
The pretraining heads (SET, prediction, target) are not part of a probe.

:func:`fit_set_probes` trains many probes in one pass over stacked weights: a model-selection
grid (lrs x step budgets) on one or several training sets (cross-validation folds) reads each
training set once per step for all its probes, and one optimizer step updates them all. On CUDA
the probes of a training set run as one batched call (``torch.func`` ``vmap``); on a CPU, where
vmap's per-operation cost is a tenth of a step at the demo's size, and its attention falls back to
a loop anyway, they are called one by one, each on its own weights (leaves that share the
stacks' memory, ``StackedAdamW.rows``), drawing the same dropout masks (see
``_PLAIN_DEVICES``): up to float rounding, the same numbers.

Shapes: B videos, K stored clips (views) per video, S sampled clips, D feature dim, H hidden,
C outputs (classes, or regression targets), M probes trained together.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from scalevid.eval.attentive import AttentiveConfig, AttentiveProbe
from scalevid.eval.clip_sets import ClipSetBatches, SetData, video_batches
from scalevid.eval.engine import Batch, Curve, EarlyStopping, GridTrainer, LossTarget
from scalevid.eval.probes import is_regression, steps_per_epoch
from scalevid.eval.stacked import StackedAdamW
from scalevid.hardware import Precision, autocast_dtype, resolve_device
from scalevid.model import Dropout, ModelConfig, ScaleModel
from scalevid.train.schedule import param_groups, warmup_steps

logger = logging.getLogger(__name__)

_PRETRAINING_HEADS = ("set_head", "pred_head", "target_head")


SetHead = Literal["clip_set", "set"]
SET_HEADS: tuple[SetHead, ...] = ("clip_set", "set")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of one Transformer / SCALE_ft probe.

    batch_size counts videos per step. The budget is ``steps`` optimizer steps when given, else
    ``epochs`` passes over the training videos (the last partial batch of a pass is dropped, at
    least one step per pass); a budget in steps means the same training whatever the size of the
    training set, which is what model selection on a part of train needs. The lr warms up
    linearly over ``warmup_fraction`` of the schedule, then follows a cosine to 0
    (``train.schedule.warmup_cosine``); the schedule lasts the run, or ``schedule_steps`` when
    that is longer (a refit that replays a longer selection run up to its chosen step). The head trains at ``lr``, the predictor at
    ``lr * predictor_lr_scale``; weight decay skips biases, norms and tokens
    (``train.schedule.param_groups``). ``dropout`` replaces the predictor's dropout and is also
    applied to the head's input. ``head``: ``clip_set`` (the paper's per-clip [clip feature, SET]
    head, see the module docstring) or ``set`` (SET output only). ``num_classes`` None = max
    label + 1. ``precision``: the forward passes' autocast (``hardware.autocast_dtype``: "auto"
    is bf16 where the device has bf16 matrix units, else fp32).
    """

    lr: float = 1e-4
    predictor_lr_scale: float = 1.0
    weight_decay: float = 0.05
    epochs: int = 20
    steps: int | None = None
    schedule_steps: int | None = None
    warmup_fraction: float = 0.1
    batch_size: int = 64
    num_views: int = 8
    dropout: float = 0.1
    grad_clip: float | None = 1.0
    head: SetHead = "clip_set"
    num_classes: int | None = None
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_views < 1:
            raise ValueError("epochs, batch_size and num_views must be >= 1")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise ValueError(f"schedule_steps must be >= 1 (or None), got {self.schedule_steps}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 (or None to count epochs), got {self.steps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.head not in SET_HEADS:
            raise ValueError(f"head must be one of {SET_HEADS}, got {self.head!r}")

    def total_steps(self, num_videos: int) -> int:
        """Optimizer steps of one run on `num_videos` training videos."""
        if self.steps is not None:
            return self.steps
        return steps_per_epoch(num_videos, self.batch_size) * self.epochs


# --------------------------------------------------------------------------- model


def build_predictor(init: ModelConfig | ScaleModel, *, dropout: float) -> ScaleModel:
    """A predictor without pretraining heads: random init from a ModelConfig (drawn from the
    global RNG), or a copy of a pretrained model's weights. `dropout` replaces the config's."""
    source = init.config if isinstance(init, ScaleModel) else init
    # Tiny placeholder heads: they are dropped below, so their (large) defaults are never built.
    config = dataclasses.replace(
        source, dropout=dropout, set_head=(1,), pred_head=(1,), target_head=(1,)
    )
    model = ScaleModel(config)
    for name in _PRETRAINING_HEADS:
        setattr(model, name, nn.Identity())
    if isinstance(init, ScaleModel):
        state = {
            k: v for k, v in init.state_dict().items() if k.split(".")[0] not in _PRETRAINING_HEADS
        }
        model.load_state_dict(state)
    return model


class SetProbe(nn.Module):
    """Predictor + dropout + linear head: per clip on [clip feature, SET] (``clip_set``, the
    paper's head) or once on the SET output (``set``)."""

    def __init__(
        self,
        predictor: ScaleModel,
        *,
        out_dim: int,
        dropout: float,
        task: str,
        head: SetHead = "clip_set",
    ) -> None:
        super().__init__()
        if head not in SET_HEADS:
            raise ValueError(f"head must be one of {SET_HEADS}, got {head!r}")
        self.task = task
        self.head_kind = head
        self.predictor = predictor
        self.drop = Dropout(dropout)  # the predictor's: a cheaper mask on a CPU
        width = predictor.config.hidden
        if head == "clip_set":
            width += predictor.config.input_dim
            # Backbone features come at any scale (I3D's have norms near 80): a linear head on
            # them raw steps its logits by lr x that norm. A parameter-free LayerNorm puts the
            # clip part on the scale of the SET part (the predictor's normed output).
            self.clip_norm = nn.LayerNorm(predictor.config.input_dim, elementwise_affine=False)
        self.head = nn.Linear(width, out_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, features: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """features (B, S, D), boxes (B, S, 7), valid (B, S) bool -> per-view outputs (B, V, C):
        V = S (one output per clip; padded clips' rows are meaningless) for ``clip_set``,
        V = 1 for ``set``. :func:`combine_views` turns them into video predictions."""
        pooled = self.predictor(features, boxes, valid=valid).set  # (B, H)
        if self.head_kind == "set":
            return self.head(self.drop(pooled))[:, None]  # (B, 1, C)
        per_clip = torch.cat(
            [self.clip_norm(features), pooled[:, None].expand(-1, features.shape[1], -1)], dim=-1
        )  # (B, S, D + H)
        return self.head(self.drop(per_clip))  # (B, S, C)


def _view_weights(outputs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, V) weights averaging over the valid views (V = S), or 1 for a single SET view."""
    if outputs.shape[1] == 1:
        return outputs.new_ones(outputs.shape[0], 1)
    w = valid.to(outputs.dtype)  # (B, S)
    return w / w.sum(dim=1, keepdim=True).clamp_min(1.0)


def combine_views(outputs: torch.Tensor, valid: torch.Tensor, *, task: str) -> torch.Tensor:
    """Per-view outputs (B, V, C) and valid (B, S) -> video predictions (B, C): the mean over
    valid views of the softmax probabilities (classification) or of the outputs (regression)."""
    w = _view_weights(outputs, valid)[..., None]  # (B, V, 1)
    values = outputs.softmax(dim=-1) if task == "classification" else outputs
    return torch.where(w > 0, values * w, 0.0).sum(dim=1)  # padded views: exactly 0


def set_probe_loss(
    outputs: torch.Tensor, valid: torch.Tensor, targets: torch.Tensor, *, task: str
) -> torch.Tensor:
    """Training loss of per-view outputs (B, V, C). Classification: the cross-entropy of every
    valid view's output (each view is a softmax classifier, as in the linear baseline), averaged
    per video, then over videos. Regression: MSE of the view-averaged output against (B, T)."""
    w = _view_weights(outputs, valid)  # (B, V)
    if task == "classification":
        b, v, c = outputs.shape
        per_view = F.cross_entropy(
            outputs.reshape(b * v, c), targets.repeat_interleave(v), reduction="none"
        ).reshape(b, v)
        return torch.where(w > 0, per_view * w, 0.0).sum(dim=1).mean()
    return F.mse_loss(combine_views(outputs, valid, task=task), targets)


def _num_outputs(config: FinetuneConfig, labels: Sequence[np.ndarray]) -> int:
    first = labels[0]
    if is_regression(first):
        return 1 if first.ndim == 1 else int(first.shape[1])
    if config.num_classes is not None:
        return config.num_classes
    return max(int(y.max()) for y in labels) + 1


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# --------------------------------------------------------------------------- train / predict


def stack_key(config: FinetuneConfig) -> FinetuneConfig:
    """What probes trained in one batched pass must share: all but lr, lr scale, weight decay
    and the budget (epochs, steps, schedule)."""
    return dataclasses.replace(
        config,
        lr=0.0,
        predictor_lr_scale=1.0,
        weight_decay=0.0,
        epochs=1,
        steps=None,
        schedule_steps=None,
    )


def _stacked_optimizer(
    template: nn.Module, configs: Sequence[FinetuneConfig], device: torch.device
) -> StackedAdamW:
    """M = len(configs) copies of the template's weights, stacked, and their optimizer: the
    predictor at lr * predictor_lr_scale, weight decay only where `param_groups` applies it."""
    no_decay = {
        id(p)
        for group in param_groups(template, 1.0)
        if group["weight_decay"] == 0.0
        for p in group["params"]
    }
    params, lr_scale, decay = {}, {}, {}
    for k, p in template.named_parameters():
        params[k] = p.detach()[None].repeat(len(configs), *([1] * p.ndim)).requires_grad_()
        is_predictor = k.startswith("predictor.")
        lr_scale[k] = [c.predictor_lr_scale if is_predictor else 1.0 for c in configs]
        decay[k] = [0.0 if id(p) in no_decay else c.weight_decay for c in configs]
    return StackedAdamW(params, lr_scale=lr_scale, decay=decay, grad_clip=configs[0].grad_clip)


# On a CPU the probes are called one by one on their own weights, the random state
# rewound before each: dropout draws its masks with `bernoulli_` (or `model.Dropout`'s words)
# inside vmap (randomness="same") and outside it alike, so every probe gets the masks one probe
# trained alone draws, and vmap's per-operation cost (and its attention fallback loop) is saved.
# On CUDA, dropout outside vmap is a fused kernel whose draws differ from vmap's `bernoulli_`,
# so probes there keep to vmap (and to the masks they draw trained together).
_PLAIN_DEVICES = ("cpu",)


class _StackLoss:
    """The losses (M',) of M' probes of one template on one batch: given their rows of the
    stacked weights, one vmap call; on a CPU (see ``_PLAIN_DEVICES``), given each probe's own
    weights (``StackedAdamW.rows``), the probes one by one."""

    def __init__(self, template: nn.Module, device: torch.device) -> None:
        self.template, self.device = template, device
        self.batched = vmap(self._one, in_dims=(0, None, None, None, None), randomness="same")

    def _one(
        self,
        weights: dict[str, torch.Tensor],
        x: torch.Tensor,
        bx: torch.Tensor,
        valid: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        outputs = functional_call(self.template, weights, (x, bx, valid))
        return set_probe_loss(outputs, valid, y, task=self.template.task)

    @property
    def per_model(self) -> bool:
        """Whether it takes the probes' own weights (``GridTrainer``'s per_model)."""
        return self.device.type in _PLAIN_DEVICES

    def __call__(
        self, weights: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]], batch: Batch
    ) -> torch.Tensor:
        if isinstance(weights, dict):
            return self.batched(weights, *batch)
        state = torch.get_rng_state()
        losses = []
        for own in weights:
            torch.set_rng_state(state)  # every probe draws the dropout masks one alone draws
            losses.append(self._one(own, *batch))  # ()
        return torch.stack(losses)


@torch.no_grad()
def predict_with(
    template: nn.Module,
    weights: dict[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, ...]],
    *,
    autocast: torch.dtype | None = None,
) -> np.ndarray:
    """Video predictions (N, C) of the template with `weights`, in eval mode, on prepared
    batches of whole videos ((B, K, D) features, (B, K, 7) boxes, (B, K) valid)."""
    was_training = template.training
    template.eval()
    out = []
    device = next(iter(weights.values())).device
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        for x, bx, valid in batches:
            outputs = functional_call(template, weights, (x, bx, valid)).float()
            out.append(combine_views(outputs, valid, task=template.task).cpu())
    template.train(was_training)
    return torch.cat(out).numpy()


def _check_training_sets(configs: Sequence[FinetuneConfig], trains: Sequence[SetData]) -> str:
    """The task of probes that can train together; raises where they cannot."""
    if not configs or len(configs) != len(trains):
        raise ValueError("fit_set_probes needs one training set per config")
    key = stack_key(configs[0])
    if any(stack_key(c) != key for c in configs):
        raise ValueError(
            "probes trained together may differ only in lr, predictor_lr_scale, weight_decay "
            "and budget"
        )
    for data in trains:
        if data.labels is None:
            raise ValueError("fit_set_probe needs training labels")
        if len(data) == 0:
            raise ValueError("no training videos")
        if data.task == "classification" and (data.labels < 0).any():
            raise ValueError("class labels must be >= 0 (drop unlabelled videos first)")
    task = trains[0].task
    if any(d.task != task for d in trains):
        raise ValueError("probes trained together need one task")
    return task


ProbeInit = ModelConfig | ScaleModel | AttentiveConfig


def build_probe(
    init: ProbeInit, config: FinetuneConfig, *, in_dim: int, out_dim: int, task: str
) -> nn.Module:
    """The probe a grid point trains, initialised from the global RNG: a Transformer
    (ModelConfig), SCALE_ft (a pretrained ScaleModel: its weights copied) or an attentive probe
    (AttentiveConfig, over `in_dim`-wide clip vectors)."""
    if isinstance(init, AttentiveConfig):
        return AttentiveProbe(
            init, in_dim=in_dim, out_dim=out_dim, dropout=config.dropout, task=task
        )
    predictor = build_predictor(init, dropout=config.dropout)
    return SetProbe(predictor, out_dim=out_dim, dropout=config.dropout, task=task, head=config.head)


@dataclass
class SetGrid:
    """A trained grid: per config its probe (eval mode) and per-step training losses, the step
    each stopped after, the validation curves by group and the groups the median stopping rule
    stopped (see ``engine.EarlyStopping``)."""

    probes: list[tuple[nn.Module, np.ndarray]]
    stopped_at: list[int]
    curves: dict[int, Curve]
    pruned: set[int] = dataclasses.field(default_factory=set)


def _batch_streams(
    config: FinetuneConfig, trains: Sequence[SetData]
) -> tuple[list[ClipSetBatches], list[int]]:
    """One batch stream per distinct training set (by identity) and the stream of each probe."""
    index: dict[int, int] = {}  # id(SetData) -> its stream index
    streams = []
    for data in trains:
        if id(data) not in index:
            index[id(data)] = len(streams)
            streams.append(
                ClipSetBatches(
                    data, batch_size=config.batch_size, num_views=config.num_views, seed=config.seed
                )
            )
    return streams, [index[id(d)] for d in trains]


def train_set_grid(
    configs: Sequence[FinetuneConfig],
    trains: Sequence[SetData],
    *,
    init: ProbeInit,
    stopping: Callable[[nn.Module], EarlyStopping] | None = None,
    targets: Sequence[LossTarget | None] | None = None,
    progress: bool = False,
) -> SetGrid:
    """Train probe m with configs[m] on trains[m], all M probes in one pass of the grid trainer
    (``eval.engine``); `stopping(template)` gives its early stopping, None trains every probe to
    its budget; `targets` (per config) stop probes at a training loss (``engine.LossTarget``).
    See :func:`fit_set_probes` for what may differ between the configs."""
    task = _check_training_sets(configs, trains)
    cfg = configs[0]
    device = resolve_device(cfg.device)
    out_dim = _num_outputs(cfg, [d.labels for d in trains])
    stops = [c.total_steps(len(d)) for c, d in zip(configs, trains, strict=True)]
    schedules = [max(s, c.schedule_steps or 0) for c, s in zip(configs, stops, strict=True)]
    streams, stream_of = _batch_streams(cfg, trains)
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(cfg.seed)
        template = build_probe(init, cfg, in_dim=trains[0].dim, out_dim=out_dim, task=task).to(
            device
        )
        template.train()
        loss = _StackLoss(template, device)
        trainer = GridTrainer(
            optimizer=_stacked_optimizer(template, configs, device),
            loss=loss,
            streams=streams,
            stream_of=stream_of,
            lrs=[c.lr for c in configs],
            schedule_steps=schedules,
            warmups=[warmup_steps(cfg.warmup_fraction, t) for t in schedules],
            stop_steps=stops,
            stopping=None if stopping is None else stopping(template),
            targets=targets,
            autocast=autocast_dtype(cfg.precision, device),
            per_model=loss.per_model,
            device=device,
        )
        trained = trainer.run(progress=progress, desc="set probes")
    probes = []
    for weights, history in zip(trained.weights, trained.losses, strict=True):
        probe = copy.deepcopy(template)  # the architecture; its weights are replaced next
        probe.load_state_dict(weights, strict=False)
        probes.append((probe.eval(), history))
    logger.info(
        "trained %d set probes (%s, %d steps max) on %d training set(s)",
        len(configs),
        type(template).__name__,
        max(trained.stopped_at),
        len(streams),
    )
    return SetGrid(
        probes=probes, stopped_at=trained.stopped_at, curves=trained.curves, pruned=trained.pruned
    )


def fit_set_probes(
    configs: Sequence[FinetuneConfig],
    trains: Sequence[SetData],
    *,
    init: ProbeInit,
    progress: bool = False,
) -> list[tuple[nn.Module, np.ndarray]]:
    """Train probe m with configs[m] on trains[m], all M probes in one batched pass.

    The configs may differ only in lr, predictor_lr_scale, weight_decay and budget (epochs /
    steps / schedule_steps). Every probe starts from the same seeded initialisation; probes
    given the same SetData object (by identity) share its batch stream, which is read once per
    step for all of them, and each probe's batches and views are those it would see trained
    alone. A probe whose budget is spent leaves the stack, so a grid of budgets costs what its
    longest member costs per model. Dropout masks are drawn once per training set and step,
    shared by its probes (as separate runs from one seed would draw them). `init` is never
    modified; the caller's RNG state is left as it was. Returns, per probe, (the probe in eval
    mode, per-step training losses (steps,)).
    """
    return train_set_grid(configs, trains, init=init, progress=progress).probes


def fit_set_probe(
    config: FinetuneConfig,
    train: SetData,
    *,
    init: ModelConfig | ScaleModel,
    progress: bool = False,
) -> tuple[SetProbe, np.ndarray]:
    """Train a Transformer (init = ModelConfig) or SCALE_ft (init = pretrained ScaleModel) probe.

    `init` is never modified. Initialisation, batches, view subsets and dropout are drawn from
    config.seed alone (the caller's RNG state is left as it was). Returns (the probe in eval
    mode, per-step training losses (steps,)).
    """
    return fit_set_probes([config], [train], init=init, progress=progress)[0]


def predict_set_probes(
    probes: Sequence[nn.Module], data: SetData, *, batch_size: int = 256
) -> list[np.ndarray]:
    """Each video as one set of all its valid views, scored by every probe (each batch is read
    once) -> per probe (N, C): class probabilities (the mean of the views' softmax) or
    predictions. `data.labels` is not read."""
    device = next(probes[0].parameters()).device
    out: list[list[torch.Tensor]] = [[] for _ in probes]
    with torch.no_grad():
        for x, bx, valid in video_batches(data, batch_size=batch_size, device=device):
            for probe, acc in zip(probes, out, strict=True):
                probe.eval()
                scores = combine_views(probe(x, bx, valid), valid, task=probe.task)  # (B, C)
                acc.append(scores.float().cpu())
    return [
        torch.cat(acc).numpy() if acc else np.zeros((0, p.head.out_features), dtype=np.float32)
        for p, acc in zip(probes, out, strict=True)
    ]


def predict_set_probe(probe: SetProbe, data: SetData, *, batch_size: int = 256) -> np.ndarray:
    """Each video as one set of all its valid views -> (N, C): class probabilities
    (classification) or predictions (regression). `data.labels` is not read."""
    return predict_set_probes([probe], data, batch_size=batch_size)[0]


def fit_predict_set(
    config: FinetuneConfig,
    train: SetData,
    test: SetData,
    *,
    init: ModelConfig | ScaleModel,
    progress: bool = False,
) -> np.ndarray:
    """Train on `train`, then score `test` (N, C); `test.labels` is never read."""
    probe, _ = fit_set_probe(config, train, init=init, progress=progress)
    return predict_set_probe(probe, test, batch_size=config.eval_batch_size)
