"""Tests for scalevid.eval.summary's uncertainty: the test standard error of every row, the
chance level, the margin a difference must clear, and the best probe named only beyond it.
Expected values are worked out by hand or with `statistics`, not with the helpers under test."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from scalevid.eval.cache import ProbeRun
from scalevid.eval.config import EvalConfig
from scalevid.eval.report import format_table, results_markdown
from scalevid.eval.summary import binomial_se, chance_level, summarise


def _scores(labels: np.ndarray, correct: int, classes: int) -> np.ndarray:
    """Scores (N, C) whose argmax is right on the first `correct` videos, wrong on the rest."""
    predicted = np.where(np.arange(len(labels)) < correct, labels, (labels + 1) % classes)
    return np.eye(classes, dtype=np.float32)[predicted]


def _run(scores: np.ndarray, chosen: dict | None = None) -> ProbeRun:
    chosen = chosen or {"lr": 0.01, "weight_decay": 0.0}
    grid = [{"config": chosen, "val": 50.0, "val_loss": 1.0}]
    return ProbeRun(chosen=chosen, grid=grid, num_train=10, test_scores=scores)


def _summarise(runs: dict[str, list[ProbeRun]], y_test: np.ndarray, task: str = "classification"):
    seeds = len(next(iter(runs.values())))
    seed_info = [
        {"seed": s, "num_train": 10, "selection": "hold-out", "num_fit": 8, "num_val": 2}
        for s in range(seeds)
    ]
    meta = {
        "dataset": "hand",
        "backbone": "none",
        "num_classes": int(y_test.max()) + 1 if task == "classification" else 0,
        "class_names": [],
        "num_train_videos": 10,
        "num_test_videos": len(y_test),
    }
    config = EvalConfig(probes=tuple(runs), seeds=tuple(range(seeds)))
    return summarise(runs, y_test=y_test, task=task, config=config, seed_info=seed_info, meta=meta)


def test_binomial_se_by_hand():
    assert binomial_se(50.0, 100) == pytest.approx(5.0)
    assert binomial_se(90.0, 400) == pytest.approx(1.5)  # 100 sqrt(0.09 / 400)
    assert binomial_se(100.0, 24) == 0.0


def test_a_gap_within_the_noise_names_no_best_probe():
    # The case: +8.3 points on 24 test videos and one seed.
    y = np.arange(24) % 2
    results = _summarise({"linear": [_run(_scores(y, 20, 2))], "mlp": [_run(_scores(y, 18, 2))]}, y)
    linear, mlp = results["probes"]["linear"], results["probes"]["mlp"]
    assert linear["mean"]["top1"] == pytest.approx(100 * 20 / 24)
    assert linear["se"]["top1"] == pytest.approx(100 * math.sqrt((20 / 24) * (4 / 24) / 24))
    assert mlp["se"]["top1"] == pytest.approx(100 * math.sqrt(0.75 * 0.25 / 24))
    ranking = results["ranking"]
    assert (ranking["leader"], ranking["runner_up"]) == ("linear", "mlp")
    assert ranking["difference"] == pytest.approx(100 * 2 / 24)
    # 2 x sqrt(7.61^2 + 8.84^2) = 23.32 points
    assert ranking["margin"] == pytest.approx(23.3, abs=0.05)
    assert results["best_probe"] is None
    assert (
        "Linear leads MLP by 8.33 top-1 points, within the margin of 23.32"
        in (results["best_probe_reason"])
    )
    assert "24 test videos" in results["best_probe_reason"]
    # balanced test set: chance is 1/classes
    assert results["chance"] == {"top1": pytest.approx(50.0)}

    text = results_markdown(results)
    assert "Best probe: none named. Linear leads MLP by 8.33" in text
    assert "Chance: 50.00 top-1 %" in text
    row = next(line for line in text.splitlines() if line.startswith("| Linear |"))
    assert [c.strip() for c in row.strip("|").split("|")][1:3] == ["83.33", "7.61"]
    console = format_table(results)
    assert "Best probe: none named" in console and "Chance: 50.00 top-1 %" in console


def test_a_gap_beyond_the_noise_names_the_best_probe():
    y = np.arange(400) % 4
    results = _summarise(
        {
            "linear": [_run(_scores(y, 360, 4)), _run(_scores(y, 364, 4))],
            "mlp": [_run(_scores(y, 300, 4)), _run(_scores(y, 296, 4))],
            "knn": [_run(_scores(y, 100, 4), {"k": 20}) for _ in range(2)],
        },
        y,
    )
    ranking = results["ranking"]
    assert results["best_probe"] == "linear" == ranking["leader"]
    assert ranking["runner_up"] == "mlp"
    assert ranking["difference"] == pytest.approx(16.0)  # 90.5 - 74.5
    se_a = 100 * math.sqrt(0.905 * 0.095 / 400)
    se_b = 100 * math.sqrt(0.745 * 0.255 / 400)
    assert ranking["margin"] == pytest.approx(2 * math.sqrt(se_a**2 + se_b**2))
    assert "more than the margin" in results["best_probe_reason"]
    assert "Best probe: Linear." in results_markdown(results)


def test_delta_margin_is_the_larger_of_twice_the_combined_se_and_the_seed_spread():
    y = np.arange(100) % 2
    base = [_run(_scores(y, c, 2)) for c in (50, 50, 50)]
    scale = [_run(_scores(y, c, 2)) for c in (90, 30, 75)]  # a gain that flips sign
    results = _summarise({"linear": base, "scale_linear": scale}, y)
    entry = results["probes"]["scale_linear"]
    diffs = [40.0, -20.0, 25.0]
    assert entry["delta"]["top1"] == pytest.approx(statistics.mean(diffs))
    two_se = 2 * math.hypot(binomial_se(65.0, 100), binomial_se(50.0, 100))
    assert statistics.stdev(diffs) > two_se
    assert entry["delta_margin"]["top1"] == pytest.approx(statistics.stdev(diffs))
    assert results["probes"]["linear"]["delta_margin"] is None
    row = next(
        line for line in results_markdown(results).splitlines() if "| SCALE_linear |" in line
    )
    assert row.rstrip(" |").endswith(f"±{statistics.stdev(diffs):.2f}")


def test_one_probe_is_not_named_best():
    y = np.arange(10) % 2
    results = _summarise({"linear": [_run(_scores(y, 10, 2))]}, y)
    assert results["best_probe"] is None and results["ranking"]["runner_up"] is None
    assert "no runner-up" in results["best_probe_reason"]


def test_chance_is_the_majority_rate_on_test():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    assert chance_level(y, "classification", ["top1"]) == {"top1": pytest.approx(60.0)}
    # 7 classes, the 5 most frequent hold 6 + 3 + 2 + 1 + 1 of 15 videos
    y = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3, 4, 5, 6])
    chance = chance_level(y, "classification", ["top1", "top5"])
    assert chance == {"top1": pytest.approx(40.0), "top5": pytest.approx(100 * 13 / 15)}
    targets = np.array([1.0, 2.0, 3.0, 6.0])
    assert chance_level(targets, "regression", ["mse"]) == {"mse": pytest.approx(3.5)}


def test_regression_se_is_the_standard_error_of_the_mean_squared_error():
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    a = np.array([0.5, 1.0, 1.0, 3.5, 4.0], dtype=np.float32).reshape(-1, 1)
    b = np.array([0.0, 2.0, 2.0, 3.0, 2.0], dtype=np.float32).reshape(-1, 1)
    results = _summarise({"linear": [_run(a)], "mlp": [_run(b)]}, y, task="regression")
    squared = [0.25, 0.0, 1.0, 0.25, 0.0]
    expected = statistics.stdev(squared) / math.sqrt(5)
    assert results["probes"]["linear"]["se"]["mse"] == pytest.approx(expected)
    assert results["ranking"]["leader"] == "linear"  # lower MSE leads
    assert results["ranking"]["difference"] == pytest.approx(1.0 - 0.3)
    assert results["chance"] == {"mse": pytest.approx(2.0)}
    assert "MSE" in results["best_probe_reason"]


def test_the_demo_reads_the_one_binomial_se():
    from scalevid.demo import pipeline
    from scalevid.eval import summary

    assert pipeline.binomial_se is summary.binomial_se
