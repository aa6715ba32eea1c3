"""Set-level probes that train a transformer on a video's clip set: Transformer and SCALE_ft.

Both probes are the SCALE predictor (:class:`~scalevid.model.ScaleModel`) with a linear head on
its SET output, trained supervised on frozen backbone features (cross-entropy for class labels,
MSE for float targets):

- **Transformer**: the predictor architecture from random initialisation (the baseline).
- **SCALE_ft**: the pretrained predictor of a run, fine-tuned the same way, optionally with a
  lower learning rate than the new head (``predictor_lr_scale``).

Every step a batch of videos contributes one random subset of ``num_views`` valid clips each;
at test a video is one set holding all of its valid views. The predictor has no positional
encoding apart from the clip boxes, so a prediction does not depend on the order of the views.
The pretraining heads (SET, prediction, target) are not part of a probe.

Shapes: B videos, K stored clips (views) per video, S sampled clips, D feature dim, H hidden,
C outputs (classes, or regression targets).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from scalevid.hardware import resolve_device
from scalevid.model import ModelConfig, ScaleModel
from scalevid.store import FeatureStore
from scalevid.train import TrainConfig, lr_at, param_groups

logger = logging.getLogger(__name__)

_PRETRAINING_HEADS = ("set_head", "pred_head", "target_head")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of one Transformer / SCALE_ft probe.

    batch_size counts videos per step; one epoch visits every training video once (the last
    partial batch is dropped, at least one step per epoch). The lr warms up linearly over
    ``warmup_fraction`` of the steps, then follows a cosine to 0 (``train.lr_at``). The head
    trains at ``lr``, the predictor at ``lr * predictor_lr_scale``; weight decay skips biases,
    norms and tokens (``train.param_groups``). ``dropout`` replaces the predictor's dropout and
    is also applied to the SET output before the head. ``num_classes`` None = max label + 1.
    """

    lr: float = 1e-4
    predictor_lr_scale: float = 1.0
    weight_decay: float = 0.05
    epochs: int = 20
    warmup_fraction: float = 0.1
    batch_size: int = 64
    num_views: int = 8
    dropout: float = 0.1
    grad_clip: float | None = 1.0
    num_classes: int | None = None
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_views < 1:
            raise ValueError("epochs, batch_size and num_views must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


# --------------------------------------------------------------------------- data


@dataclass
class SetData:
    """Clip sets of a selection of videos, read lazily batch by batch.

    features: a FeatureStore, or an (N, K, D) float array; boxes (N, K, 7) float;
    num_valid (N,) int in [1, K] (the first num_valid[i] rows of video i are real clips).
    rows: (M,) indices of the videos this set holds, None = all N.
    labels: (M,) int class ids >= 0 or (M,) / (M, T) float targets, aligned with `rows`;
    None when unknown (prediction only).
    """

    features: FeatureStore | np.ndarray
    boxes: np.ndarray
    num_valid: np.ndarray
    rows: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        self.num_valid = np.asarray(self.num_valid, dtype=np.int64)
        if self.num_valid.shape != (n,) or len(self.features) != n:
            raise ValueError("features, boxes and num_valid must describe the same N videos")
        self.rows = np.arange(n) if self.rows is None else np.asarray(self.rows, dtype=np.int64)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape[0] != len(self.rows):
                raise ValueError(f"{labels.shape[0]} labels for {len(self.rows)} videos")
            if not np.issubdtype(labels.dtype, np.floating):
                labels = labels.astype(np.int64)
            self.labels = labels

    @classmethod
    def from_store(cls, store: FeatureStore, *, labels: np.ndarray | None = None) -> SetData:
        """All videos of `store` (features stay memory-mapped); labels (N,) if given."""
        return cls(features=store, boxes=store.boxes, num_valid=store.num_clips, labels=labels)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_views(self) -> int:
        """K, stored views per video."""
        return int(self.boxes.shape[1])

    @property
    def task(self) -> str:
        """classification for integer labels, regression for float labels."""
        if self.labels is None:
            raise ValueError("this SetData has no labels")
        return "regression" if np.issubdtype(self.labels.dtype, np.floating) else "classification"

    def subset(self, idx: np.ndarray) -> SetData:
        """The videos at positions `idx` of this selection (nothing is read)."""
        idx = np.asarray(idx, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return dataclasses.replace(self, rows=self.rows[idx], labels=labels)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions idx (B,) -> features (B, K, D), boxes (B, K, 7), num_valid (B,)."""
        rows = self.rows[np.asarray(idx, dtype=np.int64)]
        if isinstance(self.features, FeatureStore):
            feats = self.features.features(rows)
        else:
            feats = np.asarray(self.features[rows])
        return feats, self.boxes[rows], self.num_valid[rows]


def sample_views(
    num_valid: torch.Tensor, *, stored: int, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random subset of up to `count` valid views per video, without replacement.

    num_valid (B,) -> index (B, S) into the K = `stored` views and valid (B, S) bool, with
    S = min(count, K). A video with fewer than S valid views fills the remaining slots with
    padding (valid False).
    """
    b = num_valid.shape[0]
    noise = torch.rand(b, stored, generator=generator)  # (B, K)
    slots = torch.arange(stored)
    noise = noise.masked_fill(slots[None, :] >= num_valid[:, None], 2.0)  # padding sorts last
    width = min(count, stored)
    index = noise.argsort(dim=1)[:, :width]  # (B, S)
    valid = slots[None, :width] < num_valid[:, None]  # (B, S)
    return index, valid


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
    """Predictor + dropout + linear head on the SET output."""

    def __init__(self, predictor: ScaleModel, *, out_dim: int, dropout: float, task: str) -> None:
        super().__init__()
        self.task = task
        self.predictor = predictor
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(predictor.config.hidden, out_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, features: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """features (B, S, D), boxes (B, S, 7), valid (B, S) bool -> outputs (B, C)."""
        pooled = self.predictor(features, boxes, valid=valid).set  # (B, H)
        return self.head(self.drop(pooled))  # (B, C)


def _num_outputs(config: FinetuneConfig, labels: np.ndarray) -> int:
    if np.issubdtype(labels.dtype, np.floating):
        return 1 if labels.ndim == 1 else int(labels.shape[1])
    return config.num_classes if config.num_classes is not None else int(labels.max()) + 1


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# --------------------------------------------------------------------------- train / predict


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
    if train.labels is None:
        raise ValueError("fit_set_probe needs training labels")
    task = train.task
    if task == "classification" and (train.labels < 0).any():
        raise ValueError("class labels must be >= 0 (drop unlabelled videos first)")
    device = resolve_device(config.device)
    n = len(train)
    if n == 0:
        raise ValueError("no training videos")
    out_dim = _num_outputs(config, train.labels)
    if task == "classification":
        targets = torch.as_tensor(train.labels)  # (N,)
    else:
        targets = torch.as_tensor(train.labels, dtype=torch.float32).reshape(n, -1)  # (N, T)

    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(config.seed)
        probe = SetProbe(
            build_predictor(init, dropout=config.dropout),
            out_dim=out_dim,
            dropout=config.dropout,
            task=task,
        ).to(device)
        groups = []
        for module, scale in ((probe.predictor, config.predictor_lr_scale), (probe.head, 1.0)):
            for group in param_groups(module, config.weight_decay):
                groups.append({**group, "lr": config.lr * scale, "base_lr": config.lr * scale})
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
        schedule = TrainConfig(lr=1.0, warmup_fraction=config.warmup_fraction, min_lr=0.0)

        batch = min(config.batch_size, n)
        steps_per_epoch = max(1, n // batch)
        total = steps_per_epoch * config.epochs
        generator = torch.Generator().manual_seed(config.seed)
        losses = []
        probe.train()
        bar = tqdm(total=total, desc=f"set probe lr={config.lr:g}", disable=not progress)
        for epoch in range(config.epochs):
            perm = torch.randperm(n, generator=generator)
            for b in range(steps_per_epoch):
                step = epoch * steps_per_epoch + b
                pos = perm[b * batch : (b + 1) * batch]  # (B,)
                feats, boxes, num_valid = train.read(pos.numpy())
                index, valid = sample_views(
                    torch.as_tensor(num_valid),
                    stored=train.num_views,
                    count=config.num_views,
                    generator=generator,
                )  # (B, S) each
                x = torch.from_numpy(np.ascontiguousarray(feats)).float()  # (B, K, D)
                x = x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))  # (B, S, D)
                bx = torch.from_numpy(np.ascontiguousarray(boxes)).float()  # (B, K, 7)
                bx = bx.gather(1, index[..., None].expand(-1, -1, bx.shape[-1]))  # (B, S, 7)
                out = probe(x.to(device), bx.to(device), valid.to(device))  # (B, C)
                y = targets[pos].to(device)
                loss = F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out, y)
                factor = lr_at(step, total=total, config=schedule)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(probe.parameters(), config.grad_clip)
                optimizer.step()
                losses.append(loss.detach())
                bar.update(1)
            logger.debug("set probe epoch %d: loss %.4f", epoch, float(losses[-1]))
        bar.close()
    probe.eval()
    history = torch.stack(losses).cpu().numpy()
    logger.info(
        "trained a set probe (lr %g, %d epochs) on %d videos: loss %.4f -> %.4f",
        config.lr,
        config.epochs,
        n,
        history[0],
        history[-1],
    )
    return probe, history


@torch.no_grad()
def predict_set_probe(probe: SetProbe, data: SetData, *, batch_size: int = 256) -> np.ndarray:
    """Each video as one set of all its valid views -> (N, C): class probabilities
    (classification) or predictions (regression). `data.labels` is not read."""
    device = next(probe.parameters()).device
    probe.eval()
    out = []
    for start in range(0, len(data), batch_size):
        feats, boxes, num_valid = data.read(np.arange(start, min(start + batch_size, len(data))))
        x = torch.from_numpy(np.ascontiguousarray(feats)).to(device).float()  # (B, K, D)
        bx = torch.from_numpy(np.ascontiguousarray(boxes)).to(device).float()  # (B, K, 7)
        valid = torch.arange(x.shape[1])[None, :] < torch.as_tensor(num_valid)[:, None]  # (B, K)
        scores = probe(x, bx, valid.to(device))  # (B, C)
        if probe.task == "classification":
            scores = scores.softmax(dim=-1)
        out.append(scores.float().cpu())
    if not out:
        return np.zeros((0, probe.head.out_features), dtype=np.float32)
    return torch.cat(out).numpy()


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
