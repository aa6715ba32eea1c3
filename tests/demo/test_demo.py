"""The main job, `scalevid demo --quick`, end to end with the real I3D weights."""

import dataclasses
import json
import math

import numpy as np
import pytest

from scalevid.backbones import WeightsUnavailableError
from scalevid.backbones.i3d import fetch_i3d_weights
from scalevid.cli import main
from scalevid.demo.ceiling import (
    Ceiling,
    CeilingConfig,
    ceiling_from_arrays,
    halves_vectors,
    mean_vectors,
)
from scalevid.demo.pipeline import (
    DemoConfig,
    binomial_se,
    compare,
    demo_steps,
    demo_verdict,
    verdict_sentence,
)
from scalevid.steps import plan_steps


@pytest.fixture(scope="module")
def i3d_weights():
    try:
        return fetch_i3d_weights()
    except WeightsUnavailableError as err:  # offline machine: nothing to run the demo with
        pytest.skip(f"I3D weights unavailable: {err}")


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, i3d_weights, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "SCALE_linear" in printed and "report.md" in printed
    report = (out / "report" / "report.md").read_text()
    rows = ("kNN", "SCALE_kNN", "Linear", "SCALE_linear", "Transformer", "SCALE_ft")
    for row in (*rows, "Attentive", "SCALE_attentive"):
        assert f"| {row} " in report
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["probes"]["scale_linear"]["seeds"]
    # the ceiling, measured before SCALE, and SCALE beside its baselines at both label budgets
    ceiling = json.loads((out / "report" / "ceiling.json").read_text())
    assert 0.0 <= ceiling["baseline"] <= 100.0 and 0.0 <= ceiling["oracle"] <= 100.0
    assert "## The ceiling (measured before SCALE ran)" in report and "order-aware oracle" in report
    assert "| all labels | Transformer |" in report and "| 50% labels | Linear |" in report
    demo = json.loads((out / "report" / "demo.json").read_text())
    assert f"**{demo['verdict']}**" in report and demo["verdict"] in printed
    assert {(c["setting"], c["scale"]) for c in demo["comparisons"]} == {
        ("all labels", "scale_knn"),
        ("all labels", "scale_linear"),
        ("all labels", "scale_ft"),
        ("all labels", "scale_attentive"),
        ("50% labels", "scale_linear"),
    }
    low_shot = json.loads((out / "report" / "low-shot" / "results.json").read_text())
    assert low_shot["low_shot"] == 0.5 and low_shot["seeds"][0]["num_train"] == 24
    for name in ("probes.png", "confusion.png", "embedding_map.png", "pairs.png"):
        assert (out / "report" / name).stat().st_size > 1000
    assert (out / "run" / "curves.png").is_file()
    manifest = json.loads((out / "stores" / "test" / "manifest.json").read_text())
    assert manifest["backbone"] == "i3d" and manifest["dim"] == 1024
    assert manifest["sampling"]["mode"] == "test"
    # the report states what the stores' manifests and the ceiling's config recorded
    assert "clips of 8 frames at stride 4, 64 x 64 crops; 1024-d features" in report
    assert "oracle >= 80%, and oracle - order-blind baseline >= 20 points" in report
    # a second run reuses every step and only renders the report again
    cached = [*(out / "stores").rglob("*.npy"), *(out / "data").rglob("*.mp4")]
    cached += [out / "run" / "model.safetensors", out / "report" / "results.json"]
    cached += [out / "report" / "ceiling.json", out / "report" / "low-shot" / "results.json"]
    stamps = [p.stat().st_mtime_ns for p in cached]
    report_stamp = (out / "report" / "report.md").stat().st_mtime_ns
    assert main(["-q", "demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert (out / "report" / "report.md").stat().st_mtime_ns > report_stamp
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 8 and all("cached" in line for line in lines[:-1])
    assert lines[-1].startswith("[8/8] report ... ") and "cached" not in lines[-1]
    # an edited setting: the steps it decides are made afresh, the videos and stores are not
    edited = dataclasses.replace(DemoConfig.quick(), epochs=3)
    plan = plan_steps(demo_steps(out, edited), out)
    assert plan["run"] == "make afresh: other settings (epochs differ)"
    assert plan["report/probes"].startswith("make afresh: inputs made since (run")
    assert plan["data"] == plan["stores/train"] == plan["report/ceiling"] == "cached"
    fewer = ["-q", "demo", "--quick", "--out", str(out), "--train-videos", "40"]
    assert main(fewer) == 2  # other videos in the same folder: an error, nothing touched
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_demo_size_options_reach_the_config(monkeypatch, tmp_path):
    import scalevid.demo.pipeline

    seen = {}
    monkeypatch.setattr(
        scalevid.demo.pipeline, "run_demo", lambda out, config, **kw: seen.update(c=config)
    )
    argv = [
        "demo",
        "--out",
        str(tmp_path),
        "--train-videos",
        "1440",
        "--test-videos",
        "360",
        "--epochs",
        "40",
        "--batch-size",
        "128",
        "--seeds",
        "0",
        "1",
        "--probes",
        "linear",
        "scale_linear",
    ]
    assert main(argv) == 0
    config = seen["c"]
    assert (config.dataset.train, config.dataset.test) == (1440, 360)
    assert (config.epochs, config.batch_size) == (40, 128)
    assert config.seeds == (0, 1) and config.probes == ("linear", "scale_linear")
    assert (
        config.dataset.val == scalevid.demo.pipeline.DemoConfig().dataset.val
    )  # the rest unchanged
    assert main(["demo", "--quick", "--out", str(tmp_path), "--epochs", "3"]) == 0
    assert seen["c"].epochs == 3 and seen["c"].dataset.train == 48  # --quick's sizes otherwise
    with pytest.raises(SystemExit):
        main(["demo", "--train-videos", "0"])


def test_data_seed_draws_fresh_videos_of_the_same_design(monkeypatch, tmp_path):
    import scalevid.demo.pipeline

    seen = {}
    monkeypatch.setattr(
        scalevid.demo.pipeline,
        "run_demo",
        lambda out, config, **kw: seen.update(c=config, out=out, **kw),
    )
    assert main(["demo", "--data-seed", "7", "--ceiling-only"]) == 0
    default = scalevid.demo.pipeline.DemoConfig()
    assert seen["c"].dataset.seed == 7 and seen["ceiling_only"]
    assert seen["c"].dataset == dataclasses.replace(default.dataset, seed=7)
    assert seen["out"] == "scalevid-demo-seed7"  # never mixed into the default seed's folder
    assert main(["demo", "--quick", "--data-seed", "3", "--out", str(tmp_path)]) == 0
    assert seen["c"].dataset.seed == 3 and seen["c"].dataset.train == 48
    assert seen["out"] == str(tmp_path) and not seen["ceiling_only"]
    with pytest.raises(SystemExit):
        main(["demo", "--data-seed", "-1"])


# ------------------------------------------------------------------ SCALE beside its baseline


def _results(rows: dict[str, list[float]], n: int = 120) -> dict:
    """A hand-made results.json: per probe its per-seed test top-1 and their mean and sample
    std (what `scalevid eval` summarises)."""
    return {
        "num_test_videos": n,
        "probes": {
            name: {
                "seeds": [{"seed": i, "test": {"top1": v}} for i, v in enumerate(values)],
                "mean": {"top1": float(np.mean(values))},
                "std": {"top1": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0},
            }
            for name, values in rows.items()
        },
    }


def test_compare_reads_each_rows_summary_and_pairs_the_seeds():
    results = _results({"linear": [40.0, 50.0], "scale_linear": [45.0, 65.0]})
    results["probes"]["scale_linear"]["mean"]["top1"] = 57.0  # as results.json says
    results["probes"]["scale_linear"]["std"]["top1"] = 1.5
    (c,) = compare(results, setting="all labels")
    assert (c.scale_mean, c.scale_std, c.baseline_mean) == (57.0, 1.5, 45.0)
    assert c.scale_se == pytest.approx(binomial_se(57.0, 120))
    assert c.delta == pytest.approx(10.0) and c.delta_std == pytest.approx(np.std([5, 15], ddof=1))


def test_compare_pairs_rows_with_seed_spread_and_standard_error():
    results = _results(
        {
            "transformer": [40.0, 50.0, 45.0],
            "scale_ft": [60.0, 62.0, 58.0],
            "linear": [20.0, 20.0, 20.0],
        }
    )
    (c,) = compare(results, setting="all labels")  # scale_linear missing: no pair
    assert (c.scale, c.baseline, c.seeds, c.num_test) == ("scale_ft", "transformer", 3, 120)
    assert c.scale_mean == pytest.approx(60.0) and c.baseline_mean == pytest.approx(45.0)
    assert c.delta == pytest.approx(15.0)
    assert c.delta_std == pytest.approx(np.std([20.0, 12.0, 13.0], ddof=1))
    assert c.baseline_std == pytest.approx(5.0)
    assert c.scale_se == pytest.approx(100 * math.sqrt(0.6 * 0.4 / 120))
    assert c.combined_se == pytest.approx(math.hypot(c.scale_se, c.baseline_se))
    assert binomial_se(50.0, 100) == pytest.approx(5.0)
    assert c.verdict == "helped"  # 15 points > 2 x 6.4 and > the delta's seed spread (4.4)


def test_verdict_sentence_says_helped_only_beyond_the_noise():
    clear = compare(
        _results(
            {
                "transformer": [40.0, 41.0, 42.0],
                "scale_ft": [60.0, 61.0, 62.0],
                "linear": [30.0, 31.0, 32.0],
                "scale_linear": [31.0, 31.0, 33.0],
            },
            n=400,
        ),
        setting="all labels",
    )
    sentence = verdict_sentence(clear)
    assert sentence.startswith("SCALE helped here:")
    assert "SCALE_ft vs Transformer (all labels) +20.0" in sentence
    assert "no clear difference for SCALE_linear vs Linear (all labels) +0.7" in sentence
    assert "the largest 2.9 times its noise level" in sentence  # 20.0 / 6.9
    assert "400 test videos" in sentence and "3 probe seeds" in sentence
    assert ". " not in sentence and sentence.endswith(".")  # one sentence

    # +5 points on 120 test videos (combined SE ~6.3) is within the noise: "did not help".
    small = compare(
        _results({"transformer": [40.0, 40.0], "scale_ft": [45.0, 45.0]}), setting="all labels"
    )
    assert small[0].verdict == "no clear difference"
    assert verdict_sentence(small).startswith("SCALE did not help here")

    # A large mean gain that flips sign between seeds is not counted either.
    flaky = compare(
        _results({"transformer": [40.0, 40.0, 40.0], "scale_ft": [90.0, 30.0, 75.0]}, n=2000),
        setting="all labels",
    )
    assert flaky[0].delta > 2 * flaky[0].combined_se and flaky[0].verdict == "no clear difference"

    worse = compare(
        _results({"linear": [60.0, 61.0], "scale_linear": [30.0, 31.0]}, n=400),
        setting="10% labels",
    )
    assert verdict_sentence(worse).startswith("SCALE hurt here:")
    helped = [c for c in clear if c.verdict == "helped"]
    mixed = verdict_sentence(helped + worse)
    assert mixed.startswith("SCALE's effect here is mixed: it helped for SCALE_ft vs Transformer")
    assert "hurt for SCALE_linear vs Linear (10% labels) -30.0 points" in mixed
    assert "no clear difference" not in mixed  # the unclear pair was left out
    assert verdict_sentence([]).startswith("No SCALE row ran")

    # a dataset that fails the design rule gets no verdict, whatever the rows say
    ceiling = Ceiling(
        baseline=47.0,
        oracle=60.0,
        baseline_per_seed=(47.0,),
        oracle_per_seed=(60.0,),
        chance=50.0,
        num_fit=192,
        num_val=48,
    )
    assert demo_verdict(clear, ceiling).startswith("The dataset does not meet the design rule")
    assert demo_verdict(clear, ceiling).endswith("no verdict.") and "oracle 60.0%" in demo_verdict(
        clear, ceiling
    )
    passing = dataclasses.replace(ceiling, oracle=95.0)
    assert demo_verdict(clear, passing) == sentence


# ---------------------------------------------------------------------------- the ceiling


def _order_store(n: int, k: int = 8, d: int = 6, seed: int = 0):
    """Clip features that show which of 3 motions a clip sees; the label is the order."""
    rng = np.random.default_rng(seed)
    perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    labels = np.arange(n) % 6
    starts = np.sort(rng.random((n, k)), axis=1)
    feats = rng.normal(0, 0.3, size=(n, k, d)).astype(np.float32)
    for i in range(n):
        third = np.minimum((starts[i] * 3).astype(int), 2)
        feats[i, np.arange(k), np.take(perms[labels[i]], third)] += 2.0
    order = rng.permutation(k)  # stored clips are not in time order
    return feats[:, order], starts[:, order], labels


def test_ceiling_separates_order_aware_from_order_blind_vectors():
    feats, starts, labels = _order_store(300, k=16)
    config = CeilingConfig(seeds=(0, 1), cs=(1.0,), folds=1)
    ceiling = ceiling_from_arrays(feats, starts, np.full(300, 16), labels, 6, config)
    assert ceiling.oracle >= 75.0  # early vs late halves tell the first and last motion
    assert ceiling.baseline <= 30.0  # every class shows the same three motions
    assert ceiling.chance == pytest.approx(100 / 6) and ceiling.num_val == 60
    assert ceiling.passes() and not dataclasses.replace(ceiling, oracle_min=101.0).passes()
    gain = ceiling.oracle - ceiling.baseline
    assert not dataclasses.replace(ceiling, min_order_gain=gain + 0.1).passes()
    assert dataclasses.replace(ceiling, min_order_gain=gain - 0.1).passes()
    # with the boxes' times scrambled the oracle loses the order
    shuffled = np.random.default_rng(1).permuted(starts, axis=1)
    blind = ceiling_from_arrays(feats, shuffled, np.full(300, 16), labels, 6, config)
    assert blind.oracle < 45.0


def test_halves_use_only_valid_clips():
    feats = np.zeros((1, 4, 1), dtype=np.float32)
    feats[0, :, 0] = [1.0, 3.0, 100.0, 100.0]  # the last two are padding
    starts = np.array([[0.5, 0.1, 0.0, 0.0]])
    assert halves_vectors(feats, starts, np.array([2])).tolist() == [[3.0, 1.0]]
    assert mean_vectors(feats, np.array([2])).tolist() == [[2.0]]
