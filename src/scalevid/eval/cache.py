"""Baseline reuse: the runs of the baseline rows (those of `eval/rows.py` that read no run), which do not
depend on the SCALE weights, saved per probe and seed in a folder (`evaluate(baseline_cache=...)`)
and read back by later evaluations on the same stores with the same settings.

A run's file name holds a digest of everything it depends on, so a changed store, setting,
architecture, device type or version misses the cache instead of reading a stale run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalevid.eval.config import EvalConfig, Task, baseline_settings
from scalevid.hardware import autocast_dtype
from scalevid.outfiles import replace_file
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)

# How the baseline rows are trained, beyond their settings: raised whenever a change to the
# training or selection code changes a row's result under the same settings, so that caches
# written before miss instead of returning the old protocol's numbers. 2: early stopping counts
# a lower validation loss as progress.
PROTOCOL = 2


@dataclass
class ProbeRun:
    """One probe on one seed: the grid on val, the chosen config, and test scores (Nte, C)."""

    chosen: dict[str, Any]
    grid: list[dict[str, Any]]
    num_train: int
    test_scores: np.ndarray
    curves: dict[str, Any] | None = None  # set / attentive rows: validation and training curves
    seconds: float | None = None  # wall time of this evaluation's run (not cached)


@dataclass(frozen=True)
class BaselineCache:
    """A folder of baseline rows' runs for one pair of stores (see `evaluate`)."""

    folder: Path
    train_store: FeatureStore
    test_store: FeatureStore

    def path(
        self,
        name: str,
        seed: int,
        *,
        config: EvalConfig,
        task: Task,
        device: torch.device,
        architecture: dict[str, Any] | None,
    ) -> Path:
        """Where the run of probe `name` on `seed` is cached (it may not exist yet)."""
        file = baseline_file(
            name,
            seed,
            train_store=self.train_store,
            test_store=self.test_store,
            config=config,
            task=task,
            device=device,
            architecture=architecture,
        )
        return self.folder / file


def baseline_file(
    name: str,
    seed: int,
    *,
    train_store: FeatureStore,
    test_store: FeatureStore,
    config: EvalConfig,
    task: Task,
    device: torch.device,
    architecture: dict[str, Any] | None,
) -> str:
    """File name of one baseline row's cached run: the probe, the seed and a digest of all it
    depends on (store contents, the settings it reads, the architecture, device type, version
    and `PROTOCOL`).
    Which settings it reads is EvalConfig's field metadata (`baseline_settings`).
    `architecture` (the transformer row's model config as a dict) is None for the other rows."""
    from scalevid import __version__

    key = {
        "probe": name,
        "seed": seed,
        "train_store": train_store.fingerprint,
        "test_store": test_store.fingerprint,
        "settings": baseline_settings(config, name),
        "task": task,
        "device": device.type,
        # "auto" precision resolves per machine: the dtype it ran in keys the run
        "autocast": str(autocast_dtype(config.precision, device)),
        "version": __version__,
        "protocol": PROTOCOL,
    }
    if architecture is not None:
        key["architecture"] = architecture
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-seed{seed}-{digest[:20]}.npz"


def save_probe_run(result: ProbeRun, path: Path) -> None:
    """Atomically write one probe run (test scores + chosen config and grid as JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "chosen": result.chosen,
        "grid": result.grid,
        "num_train": result.num_train,
        "curves": result.curves,
    }
    replace_file(
        path, lambda f: np.savez(f, test_scores=result.test_scores, meta=np.array(json.dumps(meta)))
    )


def load_probe_run(path: Path) -> ProbeRun | None:
    """A cached probe run, or None when there is none or it cannot be read (then it is
    recomputed and rewritten)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            scores = np.array(data["test_scores"])
        return ProbeRun(
            chosen=meta["chosen"],
            grid=meta["grid"],
            num_train=meta["num_train"],
            test_scores=scores,
            curves=meta.get("curves"),
        )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        logger.warning("%s: unreadable cached baseline (%s); recomputing it", path, err)
        return None
