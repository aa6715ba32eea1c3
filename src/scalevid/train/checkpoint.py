"""Checkpoints: weights as safetensors, the resolved config as JSON, and the trainer state
(optimizer, step, RNG) beside them. Loading never unpickles arbitrary objects (safetensors,
JSON, and `torch.load(weights_only=True)`).

Saving is crash-safe at every point. A checkpoint folder ``D`` is rewritten as:

1. write every file into ``.tmp-D-PID`` and fsync it;
2. rename ``D`` to ``.old-D-PID`` (when there is one);
3. rename ``.tmp-D-PID`` to ``D``;
4. delete ``.old-D-PID``.

A process killed anywhere leaves either a complete ``D``, or (between 2 and 3) a complete
``.tmp-D-PID`` beside ``.old-D-PID``. `recover_checkpoint`, run at the start of every training
run, finishes an interrupted swap (the new checkpoint wins) and deletes what is left over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from scalevid.folders import CONFIG, TRAINER_STATE, WEIGHTS
from scalevid.outfiles import make_folder, replace_file, reraise_if_full
from scalevid.store import fsync_path

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint or run folder file that is incomplete, damaged or unsafe; names the file."""


def save_weights(directory: Path, model: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write model.safetensors + config.json into `directory` (which must exist), each file
    replaced atomically."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = safetensors_bytes(state)
    replace_file(directory / WEIGHTS, lambda f: f.write(data))
    text = json.dumps(config, indent=2, sort_keys=True)
    replace_file(directory / CONFIG, lambda f: f.write(text.encode()))


def save_checkpoint(
    directory: Path,
    *,
    model: torch.nn.Module,
    config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
) -> None:
    """Atomically (re)write a checkpoint folder (the steps of the module docstring)."""
    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    _remove(tmp)
    make_folder(tmp.parent).joinpath(tmp.name).mkdir()
    state = {
        "optimizer": optimizer.state_dict(),
        "trainer": trainer_state,
        "torch_rng": torch.get_rng_state(),
    }
    try:
        save_weights(tmp, model, config)
        replace_file(tmp / TRAINER_STATE, lambda f: torch.save(state, f))
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half-written checkpoint
        reraise_if_full(e, directory)
        raise
    fsync_path(tmp)
    old = directory.with_name(f".old-{directory.name}-{os.getpid()}")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    fsync_path(directory.parent)
    _remove(old)


def _remove(path: Path) -> None:
    """Delete a leftover folder, or a link planted in its place (never what the link points to)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def recover_checkpoint(directory: Path) -> None:
    """Finish a save that a killed process left half done, and delete its leftovers.

    When ``directory`` is missing but an interrupted swap left ``.old-<name>-PID`` and the
    complete ``.tmp-<name>-PID`` of the same process, the new checkpoint is renamed into place;
    an ``.old`` alone is put back. Every other ``.tmp-*`` / ``.old-*`` of this checkpoint is
    removed (a save killed while writing, hence incomplete). Call it before resuming, from one
    process.
    """
    directory = Path(directory)
    parent = directory.parent
    if not parent.is_dir():
        return
    pattern = re.compile(rf"^\.(tmp|old)-{re.escape(directory.name)}-(\d+)$")
    found: dict[str, dict[str, Path]] = {}
    for p in parent.iterdir():
        if (m := pattern.match(p.name)) and p.is_dir():
            found.setdefault(m.group(2), {})[m.group(1)] = p
    if not directory.exists():
        for _pid, parts in sorted(found.items()):
            if "old" in parts:  # killed between the two renames: the new one is complete
                chosen = parts.get("tmp", parts["old"])
                logger.warning(
                    "%s: finishing a checkpoint save interrupted by a killed process (using %s)",
                    directory,
                    chosen.name,
                )
                chosen.rename(directory)
                break
    for parts in found.values():
        for p in parts.values():
            if p.exists():
                size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                logger.info("removing %s (%.1f MB), left by an interrupted save", p, size / 1e6)
                shutil.rmtree(p, ignore_errors=True)


def read_json(path: Path) -> Any:
    """A JSON file of a run or checkpoint folder; CheckpointError naming it when unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path}: cannot be read as JSON ({e}); the file is damaged: restore it, or use "
            "another checkpoint or run folder"
        ) from None


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file; CheckpointError naming it when it is damaged."""
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error type for a damaged header
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); the file is "
            "damaged or truncated: restore it, or use another checkpoint or run folder"
        ) from None


def load_checkpoint(
    directory: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG state in place; return the saved trainer state with
    the saved config under "config". Raises CheckpointError naming a missing, damaged or
    unsafe (pickled objects) file."""
    directory = Path(directory)
    missing = [n for n in (WEIGHTS, CONFIG, TRAINER_STATE) if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(
            f"{directory}: incomplete checkpoint (missing {', '.join(missing)}); "
            "start without --resume or point --out at the run folder"
        )
    device = next(model.parameters()).device
    config = read_json(directory / CONFIG)
    try:
        model.load_state_dict(load_weights(directory / WEIGHTS, device))
    except RuntimeError as e:
        raise CheckpointError(
            f"{directory / WEIGHTS}: does not fit the model of {directory / CONFIG} "
            f"({str(e).splitlines()[0]}); resume with the settings the run was started with"
        ) from None
    try:
        state = torch.load(directory / TRAINER_STATE, map_location=device, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, EOFError, RuntimeError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{directory / TRAINER_STATE}: refused or unreadable ({reason}); scalevid loads only "
            "tensors and plain values from a trainer state and never unpickles objects. Use a "
            "checkpoint written by `scalevid train`, or start without --resume"
        ) from None
    if not isinstance(state, dict) or not {"optimizer", "trainer", "torch_rng"} <= set(state):
        raise CheckpointError(
            f"{directory / TRAINER_STATE}: not a scalevid trainer state (expected optimizer, trainer "
            "and torch_rng entries); start without --resume"
        )
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return {"config": config, **state["trainer"]}
