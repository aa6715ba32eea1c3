"""EvalConfig: every setting of the evaluation protocol, saved into results.json; and the probe
rows' names (baseline -> SCALE counterpart).

Which cached baseline rows a setting affects is field metadata (`cache_keys(...)`): a baseline
row's cache key holds the fields that list the row and every field without that metadata, so a
new setting never leaves a stale cache behind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from scalevid.config import load_config as load_stage_config
from scalevid.config import runtime
from scalevid.eval.set_probes import SET_HEADS, FinetuneConfig, SetHead

ProbeName = Literal["knn", "scale_knn", "linear", "scale_linear", "mlp", "transformer", "scale_ft"]
PROBES: tuple[ProbeName, ...] = get_args(ProbeName)
LABELS: dict[str, str] = {
    "knn": "kNN",
    "scale_knn": "SCALE_kNN",
    "linear": "Linear",
    "scale_linear": "SCALE_linear",
    "mlp": "MLP",
    "transformer": "Transformer",
    "scale_ft": "SCALE_ft",
}
BASELINE_OF: dict[str, str] = {
    "scale_knn": "knn",
    "scale_linear": "linear",
    "scale_ft": "transformer",
}
NEEDS_RUN = frozenset({"scale_knn", "scale_linear", "scale_ft"})
CLASSIFICATION_ONLY = frozenset({"knn", "scale_knn"})
Task = Literal["classification", "regression"]
# The rows that do not depend on the SCALE weights, whose runs a baseline cache keeps.
BASELINES: tuple[ProbeName, ...] = ("knn", "linear", "mlp", "transformer")
_KEYS = "baseline_keys"


def cache_keys(*rows: ProbeName) -> dict[str, Any]:
    """Field metadata: the cached runs of these baseline rows depend on the field (none: only
    SCALE rows or the report read it). A field without it is in every baseline row's key."""
    return {_KEYS: rows}


@dataclass
class EvalConfig:
    """Everything `evaluate` depends on; saved into results.json.

    Head probes (linear, scale_linear, mlp) search head_lrs x head_weight_decays in one pass
    (AdamW, cosine schedule); set probes (transformer, scale_ft) search finetune_heads x
    finetune_lrs x finetune_epochs (budgets turned into optimizer steps, see the module
    docstring), all grid points and folds of one head trained in one batched pass, starting from
    `finetune` for the rest (its `head`, `epochs` and `steps` are replaced by the grid's).
    Selection uses a held-out val_fraction of train, or cv_folds-fold cross-validation when that
    would hold fewer than min_val_videos videos (0 = never).
    The transformer baseline copies the run's predictor architecture when a run is given (a like
    for like comparison), else uses transformer_hidden / _depth / _heads.
    """

    probes: tuple[ProbeName, ...] = field(default=PROBES, metadata=cache_keys())
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=cache_keys())
    val_fraction: float = 0.2
    min_val_videos: int = 100  # a smaller validation split switches to k-fold cross-validation
    cv_folds: int = 5
    low_shot: float | None = None  # fraction of train labels per class, None = all
    task: Literal["auto", "classification", "regression"] = "auto"
    clip_vector: Literal["feature", "token"] = field(default="feature", metadata=cache_keys())
    # kNN
    knn_k: int = field(default=20, metadata=cache_keys("knn"))
    knn_temperature: float = field(default=0.07, metadata=cache_keys("knn"))
    # subtract the train mean before normalising
    scale_knn_center: bool = field(default=False, metadata=cache_keys())
    # "parts": the clip-feature part and the SET part of the SCALE_kNN vector are L2-normalised
    # separately before the whole, so neither dominates by its norm; "whole": the vector at once.
    scale_knn_normalize: Literal["parts", "whole"] = field(default="parts", metadata=cache_keys())
    # linear / MLP heads
    head_lrs: tuple[float, ...] = field(
        default=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2), metadata=cache_keys("linear", "mlp")
    )
    head_weight_decays: tuple[float, ...] = field(
        default=(0.0, 1e-4, 1e-2), metadata=cache_keys("linear", "mlp")
    )
    head_epochs: int = field(default=30, metadata=cache_keys("linear", "mlp"))
    head_batch_size: int = field(default=256, metadata=cache_keys("linear", "mlp"))
    clips_per_sample: int = field(default=4, metadata=cache_keys("linear", "mlp"))
    # The non-affine BatchNorm before the linear head, for linear and scale_linear alike: each
    # value is a grid dimension chosen on validation, so a SCALE row and its baseline get the
    # same choice (the paper found it helps VideoMAE features). The MLP probe has none.
    linear_batchnorm: tuple[bool, ...] = field(default=(False, True), metadata=cache_keys("linear"))
    # The linear head's config carries the MLP settings too (unused there), so they key it.
    mlp_hidden: tuple[int, ...] = field(default=(512,), metadata=cache_keys("linear", "mlp"))
    mlp_dropout: float = field(default=0.0, metadata=cache_keys("linear", "mlp"))
    # transformer / scale_ft
    finetune: FinetuneConfig = field(
        default_factory=FinetuneConfig, metadata=cache_keys("transformer")
    )
    finetune_lrs: tuple[float, ...] = field(
        default=(1e-4, 1e-3), metadata=cache_keys("transformer")
    )
    finetune_epochs: tuple[int, ...] = field(default=(10, 30), metadata=cache_keys("transformer"))
    # floor of every set-probe budget, in optimizer steps
    finetune_min_steps: int = field(default=100, metadata=cache_keys("transformer"))
    # add "set" to choose it on validation
    finetune_heads: tuple[SetHead, ...] = field(
        default=("clip_set",), metadata=cache_keys("transformer")
    )
    scale_ft_lr_scale: float = field(default=1.0, metadata=cache_keys())  # predictor lr / head lr
    transformer_hidden: int = field(default=256, metadata=cache_keys("transformer"))
    transformer_depth: int = field(default=2, metadata=cache_keys("transformer"))
    transformer_heads: int = field(default=8, metadata=cache_keys("transformer"))
    # running
    embed_batch_size: int = runtime(256, metadata=cache_keys())
    # A runtime setting, yet in every baseline key: a cached row is not reused across devices.
    device: str = runtime("auto")
    progress: bool = runtime(True, metadata=cache_keys())
    plots: bool = field(default=True, metadata=cache_keys())
    embedding_map: Literal["pca", "tsne"] = field(default="pca", metadata=cache_keys())

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
        for name in ("seeds", "head_lrs", "head_weight_decays", "mlp_hidden"):
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
        self.finetune_lrs = tuple(self.finetune_lrs)
        self.finetune_epochs = tuple(self.finetune_epochs)
        self.finetune_heads = tuple(self.finetune_heads)
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig(**self.finetune)
        bad_heads = sorted(set(self.finetune_heads) - set(SET_HEADS))
        if not self.finetune_heads or bad_heads:
            raise ValueError(f"finetune_heads must be a non-empty subset of {list(SET_HEADS)}")
        if self.cv_folds < 2 or self.min_val_videos < 0 or self.finetune_min_steps < 1:
            raise ValueError("cv_folds must be >= 2, min_val_videos >= 0, finetune_min_steps >= 1")

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
    fields whose `cache_keys(...)` lists the row, and the fields without that metadata."""
    if row not in BASELINES:
        raise ValueError(f"{row!r} is not a baseline row; baselines: {list(BASELINES)}")
    keyed = {f.name for f in fields(EvalConfig) if row in f.metadata.get(_KEYS, BASELINES)}
    return {k: v for k, v in config.to_dict().items() if k in keyed}


def load_eval_config(path: str | Path | None = None, **overrides: Any) -> EvalConfig:
    """EvalConfig defaults, then a YAML file, then `overrides` (see `scalevid.config`)."""
    return load_stage_config(EvalConfig, path, **overrides)
