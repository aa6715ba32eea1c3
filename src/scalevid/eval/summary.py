"""From per-seed probe runs to results.json's content: test metrics, mean and spread over seeds,
and each SCALE row's difference to its baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scalevid.eval.cache import ProbeRun
from scalevid.eval.config import EvalConfig, Task
from scalevid.eval.rows import ROWS
from scalevid.eval.splits import mean_squared_error, topk_accuracy


def test_metrics(scores: np.ndarray, labels: np.ndarray, task: Task) -> dict[str, float]:
    if task == "regression":
        return {"mse": mean_squared_error(scores, labels)}
    acc = topk_accuracy(scores, labels, ks=(1, 5))
    return {f"top{k}": v for k, v in acc.items()}


def selection_metric(scores: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Higher is better: top-1 in % or negative MSE."""
    if task == "regression":
        return -mean_squared_error(scores, labels)
    return topk_accuracy(scores, labels, ks=(1,))[1]


def summarise(
    runs: dict[str, list[ProbeRun]],
    *,
    y_test: np.ndarray,
    task: Task,
    config: EvalConfig,
    seed_info: list[dict[str, Any]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """results.json content: per probe its per-seed chosen config and scores, mean, std, and
    the mean over seeds of the per-seed difference to its baseline row."""
    probes = {
        name: _probe_summary(name, per_seed, seed_info, y_test=y_test, task=task)
        for name, per_seed in runs.items()
    }
    for name, entry in probes.items():
        base = ROWS[name].baseline
        if base in probes:
            entry["delta"] = _delta(entry, probes[base])
    primary = "mse" if task == "regression" else "top1"
    pick = min if task == "regression" else max
    best = pick(probes, key=lambda p: probes[p]["mean"][primary])
    return {
        **meta,
        "task": task,
        "primary_metric": primary,
        "metrics": list(next(iter(probes.values()))["mean"]),
        "seeds": seed_info,
        "low_shot": config.low_shot,
        "best_probe": best,
        "probes": probes,
        "config": config.to_dict(),
    }


def _probe_summary(
    name: str,
    per_seed: list[ProbeRun],
    seed_info: list[dict[str, Any]],
    *,
    y_test: np.ndarray,
    task: Task,
) -> dict[str, Any]:
    """One probe's entry: per seed the chosen config, the grid and the test metrics; the
    metrics' mean and sample std over seeds (the delta is filled in by `_summarise`)."""
    seeds = []
    for info, r in zip(seed_info, per_seed, strict=True):
        seeds.append(
            {
                "seed": info["seed"],
                "chosen": r.chosen,
                "val": max((g["val"] for g in r.grid if g["val"] is not None), default=None),
                "grid": r.grid,
                "num_train": r.num_train,
                "test": test_metrics(r.test_scores, y_test, task),
                "seconds": r.seconds,
            }
        )
        if r.curves is not None:
            seeds[-1]["curves"] = r.curves
    stats = {m: _mean_std([s["test"][m] for s in seeds]) for m in seeds[0]["test"]}
    return {
        "label": ROWS[name].label,
        "baseline": ROWS[name].baseline,
        "seeds": seeds,
        "mean": {m: v[0] for m, v in stats.items()},
        "std": {m: v[1] for m, v in stats.items()},
        "delta": None,
    }


def _delta(entry: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Per metric, the mean over seeds of the per-seed difference to the baseline row."""
    pairs = list(zip(entry["seeds"], baseline["seeds"], strict=True))
    return {
        m: float(np.mean([s["test"][m] - b["test"][m] for s, b in pairs])) for m in entry["mean"]
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std
