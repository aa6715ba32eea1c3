"""EvalConfig: every setting of the evaluation protocol, saved into results.json; and the probe
rows' names (baseline -> SCALE counterpart)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from scalevid.config import load_config as load_stage_config
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

    probes: tuple[ProbeName, ...] = PROBES
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.2
    min_val_videos: int = 100  # a smaller validation split switches to k-fold cross-validation
    cv_folds: int = 5
    low_shot: float | None = None  # fraction of train labels per class, None = all
    task: Literal["auto", "classification", "regression"] = "auto"
    clip_vector: Literal["feature", "token"] = "feature"
    # kNN
    knn_k: int = 20
    knn_temperature: float = 0.07
    scale_knn_center: bool = False  # subtract the train mean before normalising
    # "parts": the clip-feature part and the SET part of the SCALE_kNN vector are L2-normalised
    # separately before the whole, so neither dominates by its norm; "whole": the vector at once.
    scale_knn_normalize: Literal["parts", "whole"] = "parts"
    # linear / MLP heads
    head_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    head_weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-2)
    head_epochs: int = 30
    head_batch_size: int = 256
    clips_per_sample: int = 4
    # The non-affine BatchNorm before the linear head, for linear and scale_linear alike: each
    # value is a grid dimension chosen on validation, so a SCALE row and its baseline get the
    # same choice (the paper found it helps VideoMAE features). The MLP probe has none.
    linear_batchnorm: tuple[bool, ...] = (False, True)
    mlp_hidden: tuple[int, ...] = (512,)
    mlp_dropout: float = 0.0
    # transformer / scale_ft
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_lrs: tuple[float, ...] = (1e-4, 1e-3)
    finetune_epochs: tuple[int, ...] = (10, 30)
    finetune_min_steps: int = 100  # floor of every set-probe budget, in optimizer steps
    finetune_heads: tuple[SetHead, ...] = ("clip_set",)  # add "set" to choose it on validation
    scale_ft_lr_scale: float = 1.0  # predictor lr / head lr for scale_ft
    transformer_hidden: int = 256
    transformer_depth: int = 2
    transformer_heads: int = 8
    # running
    embed_batch_size: int = 256
    device: str = "auto"
    progress: bool = True
    plots: bool = True
    embedding_map: Literal["pca", "tsne"] = "pca"

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


def load_eval_config(path: str | Path | None = None, **overrides: Any) -> EvalConfig:
    """EvalConfig defaults, then a YAML file, then `overrides` (see `scalevid.config`)."""
    return load_stage_config(EvalConfig, path, **overrides)
