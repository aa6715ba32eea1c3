"""From per-seed probe runs to results.json's content: test metrics, mean and spread over seeds,
each SCALE row's difference to its baseline, and how sure each number is: the test set's
standard error of every row, the chance level, the difference that counts between two rows,
and the best row only where it clears that difference over the runner-up."""

from __future__ import annotations

import math
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


# --------------------------------------------------------------------------- uncertainty

SE_RULE = {
    "classification": "binomial, 100 sqrt(p (1 - p) / n) at the seeds' mean p; more seeds do "
    "not shrink it, as they score the same videos",
    "regression": "the squared errors' sample std / sqrt(n), averaged over seeds",
}
CHANCE_RULE = {
    "classification": "the majority class rate on test (top-5: the 5 most frequent classes' "
    "share), the best score of a constant guess; it is 1/classes on a balanced test set and "
    "more otherwise",
    "regression": "the MSE of the best constant guess, the test targets' variance",
}
MARGIN_RULE = (
    "2 sqrt(SE_a^2 + SE_b^2) of the two rows, or the seeds' std of their per-seed difference "
    "when that is larger"
)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error (points) of an accuracy of `accuracy` % measured on n test videos,
    100 sqrt(p (1 - p) / n). More probe seeds do not shrink it: they score the same videos."""
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / max(n, 1))


def difference_margin(se_a: float, se_b: float, *, spread: float = 0.0) -> float:
    """How large a difference between two rows must be to count: twice their combined standard
    error, and at least `spread`, the seeds' std of the per-seed difference. The combination
    treats the rows' test errors as independent, which is conservative: both rows are scored on
    the same videos."""
    return max(2.0 * math.hypot(se_a, se_b), spread)


def chance_level(y_test: np.ndarray, task: Task, metrics: Sequence[str]) -> dict[str, float]:
    """Per metric, the best score a constant prediction reaches on the test labels (N,):
    the majority class rate (top-k: the k most frequent classes' share) in %, or for
    regression the MSE of the test mean (the targets' variance)."""
    if task == "regression":
        return {"mse": float(np.var(np.asarray(y_test, dtype=np.float64)))}
    counts = np.sort(np.bincount(np.asarray(y_test, dtype=np.int64)))[::-1]
    share = np.cumsum(counts) / max(len(y_test), 1)
    return {m: 100.0 * float(share[min(int(m[3:]), len(share)) - 1]) for m in metrics}


def row_standard_error(
    per_seed_scores: Sequence[np.ndarray],
    y_test: np.ndarray,
    task: Task,
    mean: dict[str, float],
) -> dict[str, float]:
    """Per metric, the test set's standard error of a row whose seed-mean metrics are `mean`
    (the rule: `SE_RULE`)."""
    n = len(y_test)
    if task == "classification":
        return {m: binomial_se(v, n) for m, v in mean.items()}
    targets = np.asarray(y_test, dtype=np.float64).reshape(n)
    ses = []
    for scores in per_seed_scores:
        squared = (np.asarray(scores, dtype=np.float64).reshape(n) - targets) ** 2
        ses.append(float(squared.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0)
    return {"mse": float(np.mean(ses))}


# --------------------------------------------------------------------------- results.json


def summarise(
    runs: dict[str, list[ProbeRun]],
    *,
    y_test: np.ndarray,
    task: Task,
    config: EvalConfig,
    seed_info: list[dict[str, Any]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """results.json content: per probe its per-seed chosen config and scores, mean, std, test
    standard error, and the mean over seeds of the per-seed difference to its baseline row with
    the margin that difference must clear; the chance level; and the best probe, named only
    when it leads the runner-up by more than their margin (else None, and the reason)."""
    probes = {
        name: _probe_summary(name, per_seed, seed_info, y_test=y_test, task=task)
        for name, per_seed in runs.items()
    }
    for name, entry in probes.items():
        base = ROWS[name].baseline
        if base in probes:
            entry["delta"], entry["delta_margin"] = _delta(entry, probes[base])
    primary = "mse" if task == "regression" else "top1"
    metrics = list(next(iter(probes.values()))["mean"])
    ranking = rank_probes(probes, primary=primary, num_test=len(y_test))
    return {
        **meta,
        "task": task,
        "primary_metric": primary,
        "metrics": metrics,
        "seeds": seed_info,
        "low_shot": config.low_shot,
        "chance": chance_level(y_test, task, metrics),
        "uncertainty": {
            "se": SE_RULE[task],
            "chance": CHANCE_RULE[task],
            "margin": MARGIN_RULE,
        },
        "best_probe": ranking.pop("best_probe"),
        "best_probe_reason": ranking.pop("reason"),
        "ranking": ranking,
        "probes": probes,
        "config": config.to_dict(),
    }


def rank_probes(probes: dict[str, Any], *, primary: str, num_test: int) -> dict[str, Any]:
    """The leading row on the primary metric, the runner-up, their difference (positive: how
    far the leader is ahead) and its margin (`difference_margin`); "best_probe" is the leader
    when the difference exceeds the margin, else None, and "reason" says which and why."""
    lower_is_better = primary == "mse"
    order = sorted(probes, key=lambda p: probes[p]["mean"][primary], reverse=not lower_is_better)
    leader = order[0]
    if len(order) == 1:
        return {
            "leader": leader,
            "runner_up": None,
            "difference": None,
            "margin": None,
            "best_probe": None,
            "reason": f"only {ROWS[leader].label} ran: there is no runner-up to beat",
        }
    runner_up = order[1]
    a, b = probes[leader], probes[runner_up]
    sign = -1.0 if lower_is_better else 1.0
    diffs = [
        sign * (s["test"][primary] - r["test"][primary])
        for s, r in zip(a["seeds"], b["seeds"], strict=True)
    ]
    difference = float(np.mean(diffs))
    margin = difference_margin(a["se"][primary], b["se"][primary], spread=_mean_std(diffs)[1])
    unit = "MSE" if lower_is_better else f"{primary.replace('top', 'top-')} points"
    names = f"{ROWS[leader].label} leads {ROWS[runner_up].label} by {difference:.2f} {unit}"
    if difference == 0:
        names = f"{ROWS[leader].label} and {ROWS[runner_up].label} tie"
    clear = difference > margin
    if clear:
        reason = f"{names}, more than the margin of {margin:.2f}"
    else:
        reason = (
            f"{names}, within the margin of {margin:.2f}: on {num_test} test videos no row is "
            "clearly best"
        )
    return {
        "leader": leader,
        "runner_up": runner_up,
        "difference": difference,
        "margin": margin,
        "best_probe": leader if clear else None,
        "reason": reason,
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
    metrics' mean and sample std over seeds, and their test standard error (the delta and its
    margin are filled in by `summarise`)."""
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
    mean = {m: v[0] for m, v in stats.items()}
    return {
        "label": ROWS[name].label,
        "baseline": ROWS[name].baseline,
        "seeds": seeds,
        "mean": mean,
        "std": {m: v[1] for m, v in stats.items()},
        "se": row_standard_error([r.test_scores for r in per_seed], y_test, task, mean),
        "delta": None,
        "delta_margin": None,
    }


def _delta(
    entry: dict[str, Any], baseline: dict[str, Any]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean over seeds of the per-seed difference to the baseline row, and the
    margin that difference must clear to count (`difference_margin`)."""
    pairs = list(zip(entry["seeds"], baseline["seeds"], strict=True))
    delta, margin = {}, {}
    for m in entry["mean"]:
        mean, spread = _mean_std([s["test"][m] - b["test"][m] for s, b in pairs])
        delta[m] = mean
        margin[m] = difference_margin(entry["se"][m], baseline["se"][m], spread=spread)
    return delta, margin


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std
