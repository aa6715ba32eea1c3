"""EvalConfig: every setting of the evaluation protocol, saved into results.json.

Which cached baseline rows a setting affects: the fields a row declares (``ProbeRow.cache_fields``
in ``eval/rows.py``) key that row alone; a field marked ``NOT_CACHED`` keys none; every other
field keys every baseline row, so a new setting never leaves a stale cache behind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from scalevid.config import load_config as load_stage_config
from scalevid.config import runtime
from scalevid.eval.attentive import AttentiveConfig
from scalevid.eval.rows import BASELINES, PROBES, ROWS, ProbeName
from scalevid.eval.set_probes import SET_HEADS, FinetuneConfig, SetHead
from scalevid.hardware import Precision

Task = Literal["classification", "regression"]
# Field metadata of the settings that no baseline row's runs depend on (only SCALE rows, the
# report or the console read them), so they are left out of every baseline cache key.
NOT_CACHED = {"baseline_cache": False}


@dataclass
class EvalConfig:
    """Everything `evaluate` depends on; saved into results.json.

    Head probes (linear, scale_linear, mlp) search head_lrs x head_weight_decays in one pass
    (AdamW, cosine schedule, head_epochs). Set probes (transformer, scale_ft) search
    finetune_heads x finetune_lrs, attentive probes (attentive, scale_attentive) attentive_lrs x
    attentive_weight_decays, each grid trained in one pass from `finetune` for the rest (batch,
    views, dropout, warm-up, clipping); transformer and attentive run their grid once per
    input_pca entry (their first k principal components, narrowest first, then the raw
    features); their step count is chosen on validation too: every grid point trains on a
    warm-up + cosine schedule of finetune_max_epochs passes over the train split (at least
    finetune_min_steps, at most finetune_max_steps steps), is validated every
    `validate_every` steps (0: every two passes, at least 10 steps) and stops after `patience`
    validations without progress, neither a better point nor a lower validation loss, or with
    `median_stop` once its best point is below the median running mean of the row's finished
    curves (never before finetune_min_steps); the best (grid point, step) is chosen, and the
    refit on the whole train split replays that schedule for at least the chosen steps, then
    until its training loss reaches the selection run's at the chosen step.
    Selection uses a held-out val_fraction of train, or cv_folds-fold cross-validation when that
    would hold fewer than min_val_videos videos (0 = never).
    The transformer baseline copies the run's predictor architecture when a run is given (a like
    for like comparison), else uses transformer_hidden / _depth / _heads.
    """

    probes: tuple[ProbeName, ...] = field(default=PROBES, metadata=NOT_CACHED)
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=NOT_CACHED)
    val_fraction: float = 0.2
    min_val_videos: int = 50  # a smaller validation split switches to k-fold cross-validation
    cv_folds: int = 5
    low_shot: float | None = None  # fraction of train labels per class, None = all
    task: Literal["auto", "classification", "regression"] = "auto"
    clip_vector: Literal["feature", "token"] = field(default="feature", metadata=NOT_CACHED)
    # kNN
    knn_k: int = 20
    knn_temperature: float = 0.07
    # subtract the train mean before normalising
    scale_knn_center: bool = field(default=False, metadata=NOT_CACHED)
    # "parts": the clip-feature part and the SET part of the SCALE_kNN vector are L2-normalised
    # separately before the whole, so neither dominates by its norm; "whole": the vector at once.
    scale_knn_normalize: Literal["parts", "whole"] = field(default="parts", metadata=NOT_CACHED)
    # linear / MLP heads
    head_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    # AdamW's decoupled decay shrinks a head by about lr x wd x steps / 2 over a cosine schedule:
    # 1e-4 is no decay at these lrs (under 6% even over a Kinetics-400-sized run at lr 1e-2), so
    # the grid holds 0 and 1e-2, which shrinks a long run's heads (docs/evaluation.md).
    head_weight_decays: tuple[float, ...] = (0.0, 1e-2)
    head_epochs: int = 30
    head_batch_size: int = 256
    clips_per_sample: int = 4
    # The non-affine BatchNorm before the linear head, for linear and scale_linear alike: each
    # value is a grid dimension chosen on validation, so a SCALE row and its baseline get the
    # same choice (the paper found it helps VideoMAE features). The MLP probe has none.
    linear_batchnorm: tuple[bool, ...] = (False, True)
    mlp_hidden: tuple[int, ...] = (512,)
    mlp_dropout: float = 0.0
    # set and attentive probes: training settings shared by both families
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_max_epochs: int = 100  # the schedule: passes over the train split ...
    finetune_min_steps: int = 100  # ... but at least this many steps; no early stop before
    finetune_max_steps: int = 2000  # ... and at most this many
    validate_every: int = 0  # steps between validations; 0 = two passes, at least 10 steps
    patience: int = 5  # validations without progress (better point, lower val loss) before a stop
    # The median stopping rule (engine.below_median): a grid point also stops once its best
    # validation point is below the median of the running means of the row's finished curves.
    median_stop: bool = True
    # The rows reading raw features (transformer, attentive) also try their input projected onto
    # this many principal components of the train split's clips, fitted without labels
    # (eval/pca.py); 0 = the raw features. Each value narrower than the features is an input
    # chosen on validation with the rest of the grid.
    input_pca: tuple[int, ...] = (0, 64)
    # transformer / scale_ft
    finetune_lrs: tuple[float, ...] = (3e-3,)
    finetune_heads: tuple[SetHead, ...] = SET_HEADS
    scale_ft_lr_scale: float = field(default=1.0, metadata=NOT_CACHED)  # predictor lr / head lr
    transformer_hidden: int = 256
    transformer_depth: int = 2
    transformer_heads: int = 8
    # The set, attentive and MLP probes' training forward passes: "auto" runs them in bf16
    # autocast where the device has bf16 matrix units (hardware.autocast_dtype), fp32 elsewhere;
    # "fp32" always. Linear heads and kNN always run in fp32.
    precision: Precision = "auto"
    # attentive / scale_attentive
    attentive: AttentiveConfig = field(default_factory=AttentiveConfig)
    attentive_lrs: tuple[float, ...] = (3e-3, 1e-2)
    attentive_weight_decays: tuple[float, ...] = (0.05,)
    # running
    embed_batch_size: int = runtime(256, metadata=NOT_CACHED)
    # A runtime setting, yet in every baseline key: a cached row is not reused across devices.
    device: str = runtime("auto")
    # Processes that train the probe runs (row x seed) on a CPU, each with an equal share of
    # torch's threads (eval/workers.py); 0 = one per torch thread; 1 = this process alone.
    # Linux only; elsewhere and on an accelerator the runs train in this process.
    workers: int = runtime(0, metadata=NOT_CACHED)
    progress: bool = runtime(True, metadata=NOT_CACHED)
    plots: bool = field(default=True, metadata=NOT_CACHED)
    embedding_map: Literal["pca", "tsne"] = field(default="pca", metadata=NOT_CACHED)

    def __post_init__(self) -> None:
        self.probes = tuple(self.probes)
        unknown = sorted(set(self.probes) - set(PROBES))
        if unknown:
            raise ValueError(f"unknown probes {unknown}; choose from {list(PROBES)}")
        if not self.probes or not self.seeds:
            raise ValueError("evaluation needs at least one probe and one seed")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.low_shot is not None and not 0.0 < self.low_shot <= 1.0:
            raise ValueError(f"low_shot must be in (0, 1], got {self.low_shot}")
        for name in (
            "seeds",
            "head_lrs",
            "head_weight_decays",
            "mlp_hidden",
            "finetune_lrs",
            "finetune_heads",
            "attentive_lrs",
            "attentive_weight_decays",
            "input_pca",
        ):
            setattr(self, name, tuple(getattr(self, name)))
        if isinstance(self.linear_batchnorm, bool):
            self.linear_batchnorm = (self.linear_batchnorm,)
        self.linear_batchnorm = tuple(dict.fromkeys(map(bool, self.linear_batchnorm)))
        if not self.linear_batchnorm:
            raise ValueError("linear_batchnorm needs at least one value: true, false or both")
        if self.scale_knn_normalize not in ("parts", "whole"):
            raise ValueError(
                f"scale_knn_normalize must be 'parts' or 'whole', got {self.scale_knn_normalize!r}"
            )
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig(**self.finetune)
        if isinstance(self.attentive, dict):
            self.attentive = AttentiveConfig(**self.attentive)
        bad_heads = sorted(set(self.finetune_heads) - set(SET_HEADS))
        if not self.finetune_heads or bad_heads:
            raise ValueError(f"finetune_heads must be a non-empty subset of {list(SET_HEADS)}")
        if not self.finetune_lrs or not self.attentive_lrs or not self.attentive_weight_decays:
            raise ValueError("finetune_lrs, attentive_lrs and attentive_weight_decays need values")
        if not self.input_pca or min(self.input_pca) < 0:
            raise ValueError(
                f"input_pca needs values >= 0 (0 = raw features), got {list(self.input_pca)}"
            )
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per torch thread), got {self.workers}")
        if self.cv_folds < 2 or self.min_val_videos < 0:
            raise ValueError("cv_folds must be >= 2 and min_val_videos >= 0")
        if min(self.finetune_max_epochs, self.finetune_min_steps, self.patience) < 1:
            raise ValueError("finetune_max_epochs, finetune_min_steps and patience must be >= 1")
        if self.finetune_max_steps < self.finetune_min_steps or self.validate_every < 0:
            raise ValueError(
                "finetune_max_steps must be >= finetune_min_steps, validate_every >= 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown evaluation config keys: {sorted(unknown)}")
        return cls(**d)


def baseline_settings(config: EvalConfig, row: ProbeName) -> dict[str, Any]:
    """The settings (`to_dict()` entries) that baseline `row`'s cached runs are keyed on: the
    fields the row declares, and every field that no row declares and that is not NOT_CACHED."""
    if row not in BASELINES:
        raise ValueError(f"{row!r} is not a baseline row; baselines: {list(BASELINES)}")
    declared = {name for r in ROWS.values() for name in r.cache_fields}
    keyed = set(ROWS[row].cache_fields) | {
        f.name
        for f in fields(EvalConfig)
        if f.name not in declared and f.metadata.get("baseline_cache", True)
    }
    return {k: v for k, v in config.to_dict().items() if k in keyed}


def load_eval_config(path: str | Path | None = None, **overrides: Any) -> EvalConfig:
    """EvalConfig defaults, then a YAML file, then `overrides` (see `scalevid.config`)."""
    return load_stage_config(EvalConfig, path, **overrides)
