"""Checkpoints: weights as safetensors, the resolved config as JSON, and the trainer state
(optimizer, step, RNG) beside them. Written to a temporary folder and renamed into place, so an
interrupted save never replaces a good checkpoint with a half one. Loading never unpickles
arbitrary objects (safetensors, JSON, and `torch.load(weights_only=True)`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "trainer_state.pt"


def save_weights(directory: Path, model: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write model.safetensors + config.json into `directory` (which must exist)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))


def save_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
) -> None:
    """Atomically (re)write a checkpoint folder."""
    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_weights(tmp, model, config)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "trainer": trainer_state,
            "torch_rng": torch.get_rng_state(),
        },
        tmp / STATE,
    )
    old = directory.with_name(f".old-{directory.name}-{os.getpid()}")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(
    directory: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG state in place; return the saved trainer state with
    the saved config under "config"."""
    directory = Path(directory)
    missing = [n for n in (WEIGHTS, CONFIG, STATE) if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}: incomplete checkpoint (missing {', '.join(missing)}); "
            "start without --resume or point --out at the run folder"
        )
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=str(device)))
    state = torch.load(directory / STATE, map_location=device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return {"config": json.loads((directory / CONFIG).read_text()), **state["trainer"]}
