"""TrainConfig: everything a pretraining run depends on, saved in the run folder and in every
checkpoint so that a run is rebuilt from its folder alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from scalevid.config import load_config as load_stage_config
from scalevid.config import runtime
from scalevid.distributed import DEFAULT_TIMEOUT_S
from scalevid.hardware import Precision
from scalevid.model import ModelConfig
from scalevid.pretext import PretextConfig


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the run folder and every checkpoint.

    Fields declared with `runtime(...)` do not change the trained model (see
    `scalevid.config.result_settings`).
    """

    store: str = runtime("")
    out: str = runtime("")
    model: ModelConfig = field(default_factory=ModelConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    epochs: int = 100
    batch_size: int = 512  # videos per step, global over all processes
    lr: float = 3e-4
    weight_decay: float = 1e-4  # not applied to biases, norms and tokens
    warmup_fraction: float = 0.05
    min_lr: float = 0.0
    seed: int = 0
    device: str = runtime("auto")
    precision: Precision = "auto"
    compile: bool = False
    resident: Literal["auto", "always", "never"] = "auto"  # features in device memory
    log_every: int = runtime(20)  # steps
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch
    tensorboard: bool = runtime(False)
    progress: bool = runtime(True)
    verify_store: bool = True  # crc32 of every store file on open (False: very large stores)
    dist_timeout: float = runtime(DEFAULT_TIMEOUT_S)  # s a torchrun rank waits for the others

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
            pretext = drop_retired(dict(d["pretext"]))
            if "output_sparsity" in pretext:
                raise ValueError("pretext.output_sparsity: false is no longer supported")
            d["pretext"] = PretextConfig(**pretext)
        return cls(**d)


# Pretext settings that are no longer settings, each with the one value that computed what runs
# now (bit for bit): configs and records saved with that value still load and match.
RETIRED_PRETEXT = {"output_sparsity": True}


def drop_retired(pretext: dict[str, Any]) -> dict[str, Any]:
    """Remove from a saved pretext section (in place; also returned) each retired setting that
    holds its retired value; any other value stays, to be refused by the caller."""
    for key, value in RETIRED_PRETEXT.items():
        if key in pretext and pretext[key] == value:
            del pretext[key]
    return pretext


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig defaults, then a YAML file, then `overrides` (see `scalevid.config`)."""
    return load_stage_config(TrainConfig, path, **overrides)
