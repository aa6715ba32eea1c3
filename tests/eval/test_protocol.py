"""Tests for scalevid.eval.protocol (the honest protocol), scalevid.eval.report (the report),
scalevid.eval.representations and scalevid.eval.embed."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

from scalevid.config import result_settings
from scalevid.eval import families, representations, workers
from scalevid.eval import selection as selection_mod
from scalevid.eval.attentive import AttentiveConfig
from scalevid.eval.cache import load_probe_run
from scalevid.eval.config import EvalConfig, baseline_settings, load_eval_config
from scalevid.eval.embed import export_embeddings, search
from scalevid.eval.protocol import evaluate
from scalevid.eval.report import format_table, markdown_table
from scalevid.eval.representations import ClipVectors
from scalevid.eval.rows import PROBES
from scalevid.eval.set_probes import FinetuneConfig
from scalevid.eval.splits import make_split
from scalevid.model import ScaleModel
from scalevid.store import FeatureStore, Manifest, StoreWriter
from scalevid.train import load_config, train

DIM, CLASSES = 16, 4
TEMPORAL, SPATIAL = 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def write_store(
    path: Path,
    *,
    videos: int,
    mode: str,
    seed: int,
    clips: int = 8,
    unlabelled: int = 0,
    permute_labels: int | None = None,
    regression: bool = False,
) -> Path:
    """A learnable store: feature = class centre + video latent + time * direction + noise.

    mode "train": `clips` random clips per video; mode "test": TEMPORAL x SPATIAL views on a
    grid. The first `unlabelled` videos are written with label -1. `permute_labels` (a seed)
    writes the same features with the labels shuffled. `regression`: labels -1 and a float
    target (the class id plus noise) instead.
    """
    centers = 1.5 * np.random.default_rng(0).normal(size=(CLASSES, DIM))
    rng = np.random.default_rng(seed)
    labels = np.arange(videos) % CLASSES
    written = labels.copy()
    if permute_labels is not None:
        written = np.random.default_rng(permute_labels).permutation(labels)
    views = clips if mode == "train" else TEMPORAL * SPATIAL
    sampling = (
        {"mode": "train", "passes": 1}
        if mode == "train"
        else {"mode": "test", "temporal_views": TEMPORAL, "spatial_views": SPATIAL}
    )
    manifest = Manifest(
        dim=DIM,
        clips_per_video=views,
        backbone="synthetic",
        sampling=sampling,
        dataset="synthetic",
        class_names=[f"class{c}" for c in range(CLASSES)],
    )
    with StoreWriter(path, manifest, shard_size=30) as writer:
        for i in range(videos):
            if mode == "train":
                t0 = rng.uniform(0, 0.9, size=views)
                y0 = x0 = rng.uniform(0, 0.3, size=views)
            else:
                t0 = np.repeat(np.linspace(0, 0.9, TEMPORAL), SPATIAL)
                y0 = x0 = np.tile(np.linspace(0, 0.3, SPATIAL), TEMPORAL)
            boxes = np.stack([np.ones(views), t0, y0, x0, t0 + 0.1, y0 + 0.7, x0 + 0.7], axis=1)
            latent = centers[labels[i]] + rng.normal(size=DIM)
            direction = 2 * rng.normal(size=DIM)
            feats = latent + (t0[:, None] - 0.5) * direction + 0.3 * rng.normal(size=(views, DIM))
            label = -1 if i < unlabelled or regression else int(written[i])
            target = float(labels[i] + 0.1 * rng.normal()) if regression else None
            writer.add(
                video_id=f"{mode}{i:04d}",
                path=f"{mode}/{i:04d}.mp4",
                features=feats.astype(np.float16),
                boxes=boxes.astype(np.float32),
                label=label,
                target=target,
            )
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    return {
        "train": write_store(root / "train", videos=72, mode="train", seed=1, unlabelled=8),
        "test": write_store(root / "test", videos=40, mode="test", seed=2),
        "test_permuted": write_store(
            root / "test_permuted", videos=40, mode="test", seed=2, permute_labels=5
        ),
    }


@pytest.fixture(scope="module")
def run(stores, tmp_path_factory) -> Path:
    overrides = {
        "model.hidden": 32,
        "model.heads": 4,
        "model.depth": 1,
        "model.set_head": [32, 16],
        "model.pred_head": [32, 16],
        "model.target_head": [32, 16],
        "pretext.num_views": 4,
    }
    out = tmp_path_factory.mktemp("runs") / "run"
    config = load_config(
        None, store=str(stores["train"]), out=str(out), epochs=2, batch_size=32, **overrides
    )
    config.progress = False
    config.device = "cpu"
    return train(config)


def tiny_config(**changes) -> EvalConfig:
    base = EvalConfig(
        seeds=(0, 1),
        head_lrs=(1e-3, 1e-2),
        head_weight_decays=(0.0, 1e-3),
        head_epochs=4,
        head_batch_size=16,
        clips_per_sample=2,
        mlp_hidden=(32,),
        finetune=FinetuneConfig(batch_size=16, num_views=4, warmup_fraction=0.2),
        finetune_lrs=(1e-3, 3e-3),
        finetune_max_epochs=3,
        finetune_heads=("clip_set",),
        attentive=AttentiveConfig(heads=4),
        attentive_lrs=(1e-3,),
        attentive_weight_decays=(0.01, 0.1),
        finetune_min_steps=1,
        min_val_videos=0,  # hold-out selection; the cross-validation tests turn it on
        transformer_hidden=32,
        transformer_heads=4,
        transformer_depth=1,
        device="cpu",
        progress=False,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def evaluated(stores, run, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval") / "report"
    results = evaluate(
        train_store=stores["train"],
        test_store=stores["test"],
        run=run,
        config=tiny_config(),
        out=out,
    )
    return results, out


# --------------------------------------------------------------------------- protocol


def test_model_selection_never_reads_test_labels(stores, run, evaluated, tmp_path):
    results, out = evaluated
    permuted = evaluate(
        train_store=stores["train"],
        test_store=stores["test_permuted"],
        run=run,
        config=tiny_config(),
        out=tmp_path / "permuted",
    )
    first, second = np.load(out / "predictions.npz"), np.load(tmp_path / "permuted/predictions.npz")
    assert not np.array_equal(first["labels"], second["labels"])  # the labels did change
    assert set(results["probes"]) == set(PROBES)
    for name, entry in results["probes"].items():
        other = permuted["probes"][name]["seeds"]
        for mine, theirs in zip(entry["seeds"], other, strict=True):
            assert mine["chosen"] == theirs["chosen"], name
            assert [g["val"] for g in mine["grid"]] == [g["val"] for g in theirs["grid"]], name
        # Same train labels, same test features: the test predictions are identical too.
        np.testing.assert_array_equal(first[name], second[name])
    # A grid with a real choice exists, so "unchanged" is not vacuous.
    grids = [g["val"] for s in results["probes"]["linear"]["seeds"] for g in s["grid"]]
    assert len(grids) == 2 * 4 * 2  # seeds x (lr, wd) x BatchNorm on/off


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux only")
def test_forked_workers_give_the_same_results_as_one_process(stores, run, evaluated, tmp_path):
    results, out = evaluated  # one torch thread here: every run trained in this process
    assert results["config"]["workers"] == 0
    forked = evaluate(
        train_store=stores["train"],
        test_store=stores["test"],
        run=run,
        config=tiny_config(workers=3),  # 3 processes of 1 thread, as one process had
        out=tmp_path / "forked",
    )
    assert forked["config"]["workers"] == 3
    assert list(forked["probes"]) == list(results["probes"])
    for name, entry in results["probes"].items():
        for mine, theirs in zip(entry["seeds"], forked["probes"][name]["seeds"], strict=True):
            assert theirs["seconds"] > 0, name
            mine, theirs = ({k: v for k, v in s.items() if k != "seconds"} for s in (mine, theirs))
            assert mine == theirs, name
    first, second = np.load(out / "predictions.npz"), np.load(tmp_path / "forked/predictions.npz")
    assert first.files == second.files
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])
    assert multiprocessing.active_children() == []  # the workers are gone


def test_low_shot_subset_is_class_balanced_and_seeded(stores, tmp_path):
    config = tiny_config(probes=("knn", "linear"), low_shot=0.5, head_epochs=1)
    results = evaluate(
        train_store=stores["train"], test_store=stores["test"], config=config, out=tmp_path / "a"
    )
    labels = FeatureStore.open(stores["train"]).labels
    splits = {s: np.load(tmp_path / "a" / "splits" / f"seed{s}.npz") for s in (0, 1)}
    for seed, split in splits.items():
        train_rows, fit, val = split["train"], split["fit"], split["val"]
        assert (labels[train_rows] >= 0).all()  # unlabelled videos never enter
        # 16 labelled videos per class, half of them kept, the same number for every class
        assert np.bincount(labels[train_rows]).tolist() == [8] * CLASSES
        assert np.bincount(labels[val]).tolist() == [2] * CLASSES  # val carved from the subset
        assert np.intersect1d(fit, val).size == 0
        np.testing.assert_array_equal(np.union1d(fit, val), train_rows)
        assert results["seeds"][seed]["train_class_counts"] == [8] * CLASSES
        assert all(e["seeds"][seed]["num_train"] == 32 for e in results["probes"].values())
    assert not np.array_equal(splits[0]["train"], splits[1]["train"])  # seeds differ
    evaluate(
        train_store=stores["train"],
        test_store=stores["test"],
        config=dataclasses.replace(config, seeds=(1,)),
        out=tmp_path / "b",
    )
    again = np.load(tmp_path / "b" / "splits" / "seed1.npz")
    for key in ("train", "fit", "val"):
        np.testing.assert_array_equal(again[key], splits[1][key])  # same seed, same subset
    direct = make_split(
        labels, labelled=np.flatnonzero(labels >= 0), val_fraction=0.2, low_shot=0.5, seed=1
    )
    np.testing.assert_array_equal(direct.train, splits[1]["train"])


def test_final_fit_retrains_on_the_whole_train_split(stores, tmp_path, monkeypatch):
    calls: dict[str, list] = {"grid": [], "final": [], "set": []}

    def recorder(fn, key):
        def wrapped(*args, **kwargs):
            calls[key].append((len(args[1]), len(args[2])))
            return fn(*args, **kwargs)

        return wrapped

    def set_recorder(configs, trains, **kwargs):
        calls["set"].append(
            sorted(
                (c.lr, c.steps, c.schedule_steps, len(d))
                for c, d in zip(configs, trains, strict=True)
            )
        )
        return real_set(configs, trains, **kwargs)

    real_set = families.train_set_grid
    monkeypatch.setattr(selection_mod, "fit_grid", recorder(selection_mod.fit_grid, "grid"))
    monkeypatch.setattr(families, "fit_predict", recorder(families.fit_predict, "final"))
    monkeypatch.setattr(families, "train_set_grid", set_recorder)
    config = tiny_config(seeds=(3,), head_epochs=1, finetune_max_epochs=1)
    results = evaluate(
        train_store=stores["train"], test_store=stores["test"], config=config, out=tmp_path
    )
    # No run: only the baseline rows.
    assert list(results["probes"]) == ["knn", "linear", "mlp", "transformer", "attentive"]
    assert results["skipped_probes"] == ["scale_attentive", "scale_ft", "scale_knn", "scale_linear"]
    info = results["seeds"][0]
    assert info["num_train"] == 64 == results["num_train_videos"]  # the 8 unlabelled left out
    assert info["num_fit"] + info["num_val"] == 64 and info["num_val"] == 12
    assert info["selection"] == "hold-out"
    assert calls["grid"] == [(info["num_fit"], info["num_val"])] * 3  # knn, linear, mlp
    assert calls["final"] == [(64, 40)] * 3  # retrained on all of train, scored on all of test
    # Per set / attentive row: one pass for the grid on the fit split, every point on the
    # whole schedule (one pass over the train split: 64 // 16 = 4 steps), then the chosen
    # point on all of train, the same schedule cut at the chosen step.
    steps, fit = 64 // 16, info["num_fit"]
    transformer_grid, transformer_refit, attentive_grid, attentive_refit = calls["set"]
    assert transformer_grid == [(1e-3, steps, steps, fit), (3e-3, steps, steps, fit)]
    assert attentive_grid == [(1e-3, steps, steps, fit)] * 2  # two weight decays
    for refit, row in ((transformer_refit, "transformer"), (attentive_refit, "attentive")):
        chosen = results["probes"][row]["seeds"][0]["chosen"]
        assert refit == [(chosen["lr"], chosen["steps"], steps, 64)]
        assert 1 <= chosen["steps"] <= steps
    for entry in results["probes"].values():
        assert entry["seeds"][0]["num_train"] == 64


def test_set_probes_choose_their_step_on_validation(stores, tmp_path, monkeypatch):
    """Even a one-point grid is validated as it trains: the step with the best validation score
    is chosen, a point stops after `patience` validations without improving, and the refit on
    train stops at the chosen step."""
    config = tiny_config(
        seeds=(0,),
        probes=("transformer",),
        finetune_lrs=(1e-3,),
        finetune_max_epochs=12,
        validate_every=2,
        patience=2,
    )
    results = evaluate(
        train_store=stores["train"], test_store=stores["test"], config=config, out=tmp_path
    )
    seed = results["probes"]["transformer"]["seeds"][0]
    (point,) = seed["grid"]
    curves = json.loads((tmp_path / "results.json").read_text())["probes"]["transformer"]
    curve = curves["seeds"][0]["curves"]["grid"][0]
    assert curve["steps"] == list(range(2, 2 * len(curve["steps"]) + 1, 2))
    best = max(range(len(curve["steps"])), key=lambda i: (curve["metric"][i], -curve["loss"][i]))
    assert seed["chosen"]["steps"] == point["best_step"] == curve["steps"][best]
    assert seed["chosen"]["schedule_steps"] == 12 * (64 // 16)
    # stopped early, or ran to the end of its schedule
    stopped_early = len(curve["steps"]) - 1 - best >= 2
    assert stopped_early or curve["steps"][-1] == 48
    assert point["val"] == curve["metric"][best]
    # the refit trains at least the chosen steps, then until the selection run's training loss
    refit = curves["seeds"][0]["curves"]
    assert seed["chosen"]["steps"] <= refit["refit_steps"] <= 48
    assert refit["refit_loss_target"] == curve["train_loss"][best]
    assert (tmp_path / "curves_transformer.png").is_file()


def test_the_mlp_row_trains_at_the_configured_precision_and_linear_in_fp32(stores, tmp_path):
    """EvalConfig.precision reaches the MLP row's heads (their chosen config records it); the
    linear row's heads always train in fp32."""
    config = tiny_config(seeds=(0,), probes=("linear", "mlp"), precision="bf16")
    results = evaluate(
        train_store=stores["train"], test_store=stores["test"], config=config, out=tmp_path
    )
    mlp, linear = (results["probes"][r]["seeds"][0] for r in ("mlp", "linear"))
    assert mlp["chosen"]["precision"] == "bf16"
    assert {g["config"]["precision"] for g in mlp["grid"]} == {"bf16"}
    assert linear["chosen"]["precision"] == "fp32"


def test_the_median_rule_measures_each_pass_against_the_rows_finished_curves(
    stores, tmp_path, monkeypatch
):
    """The Transformer's four passes (one grid point each) train narrow input first; each one's
    early stopping gets the row's curves trained before it, less the pruned ones; the pruned
    points are marked in results.json; median_stop off prunes nothing."""
    seen: list[tuple[int, bool]] = []
    real = families.EarlyStopping

    def spy(**kwargs):
        seen.append((len(kwargs["finished"]), kwargs["median"]))
        return real(**kwargs)

    monkeypatch.setattr(families, "EarlyStopping", spy)
    config = tiny_config(
        seeds=(0,),
        probes=("transformer",),
        input_pca=(0, 4),
        finetune_heads=("clip_set", "set"),
        finetune_lrs=(1e-3,),
        workers=1,
    )
    for median in (True, False):
        seen.clear()
        results = evaluate(
            train_store=stores["train"],
            test_store=stores["test"],
            config=dataclasses.replace(config, median_stop=median),
            out=tmp_path / str(median),
        )
        grid = results["probes"]["transformer"]["seeds"][0]["grid"]
        order = [(g["config"]["input_pca"], g["config"]["head"]) for g in grid]
        assert order == [(4, "clip_set"), (4, "set"), (0, "clip_set"), (0, "set")]
        assert [n for n, _ in seen] == [sum(not g["pruned"] for g in grid[:i]) for i in range(4)]
        assert all(m == median for _, m in seen)
        # on this store the raw-feature points trail the projection's: the rule stops them
        assert [g["pruned"] for g in grid] == [False, False, median, median]


def test_raw_feature_rows_also_choose_a_pca_input(stores, run, tmp_path, monkeypatch):
    """With input_pca (0, 4) on 16-wide features, Transformer and Attentive train their grid on
    both inputs and record the chosen one; the projection is fitted per seed on the train
    split's videos without their labels; the SCALE rows read their own vectors only."""
    fitted = []
    real = families.fit_pca

    def spy(data, dims, **kwargs):
        fitted.append((data.rows.copy(), data.labels, dims))
        return real(data, dims, **kwargs)

    monkeypatch.setattr(families, "fit_pca", spy)
    rows = ("transformer", "scale_ft", "attentive", "scale_attentive")
    config = tiny_config(seeds=(0,), probes=rows, input_pca=(0, 4))
    results = evaluate(
        train_store=stores["train"], test_store=stores["test"], run=run, config=config, out=tmp_path
    )
    for row in rows:
        seed = results["probes"][row]["seeds"][0]
        inputs = [g["config"]["input_pca"] for g in seed["grid"]]
        if row.startswith("scale"):
            assert set(inputs) == {0} and seed["chosen"]["input_pca"] == 0
            continue
        half = len(inputs) // 2
        assert half > 0 and inputs == [4] * half + [0] * half  # the narrow input trains first
        chosen = seed["grid"][seed["curves"]["chosen"]]["config"]["input_pca"]
        assert seed["chosen"]["input_pca"] == chosen
        assert len(seed["curves"]["grid"]) == len(inputs)
    assert len(fitted) == 2  # one projection per raw-feature row
    labels = FeatureStore.open(stores["train"]).labels
    for rows_read, labels_read, dims in fitted:
        assert labels_read is None and dims == 4
        assert len(rows_read) == results["probes"]["transformer"]["seeds"][0]["num_train"]
        assert (labels[rows_read] >= 0).all()  # labelled train videos, never test ones
    # a PCA width at or above the features' is the raw input: nothing else is trained
    wide = evaluate(
        train_store=stores["train"],
        test_store=stores["test"],
        config=tiny_config(seeds=(0,), probes=("attentive",), input_pca=(DIM,)),
        out=tmp_path / "wide",
    )
    grid = wide["probes"]["attentive"]["seeds"][0]["grid"]
    assert {g["config"]["input_pca"] for g in grid} == {0}


def test_regression_targets(tmp_path):
    train_store = write_store(tmp_path / "tr", videos=48, mode="train", seed=1, regression=True)
    test_store = write_store(tmp_path / "te", videos=20, mode="test", seed=2, regression=True)
    config = tiny_config(seeds=(0,), head_epochs=3, finetune_max_epochs=2, plots=False)
    results = evaluate(train_store=train_store, test_store=test_store, config=config, out=tmp_path)
    assert results["task"] == "regression" and results["metrics"] == ["mse"]
    # no kNN on targets
    assert list(results["probes"]) == ["linear", "mlp", "transformer", "attentive"]
    assert all(np.isfinite(e["mean"]["mse"]) for e in results["probes"].values())
    assert "MSE" in (tmp_path / "results.md").read_text()
    targets = FeatureStore.open(test_store).targets
    assert results["chance"]["mse"] == pytest.approx(np.var(targets.astype(np.float64)))
    assert all(e["se"]["mse"] > 0 for e in results["probes"].values())
    assert "Chance: " in (tmp_path / "results.md").read_text()


# --------------------------------------------------------------------------- reports


def test_reports_written_and_deltas_match_per_seed_numbers(evaluated):
    results, out = evaluated
    for name in ("results.json", "results.md", "predictions.npz"):
        assert (out / name).stat().st_size > 0
    for name in ("probes.png", "confusion.png", "embedding_map.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["metrics"] == ["top1"]  # 4 classes: no top-5

    probes = results["probes"]
    for entry in probes.values():
        per_seed = [s["test"]["top1"] for s in entry["seeds"]]
        assert entry["mean"]["top1"] == pytest.approx(np.mean(per_seed))
        assert entry["std"]["top1"] == pytest.approx(np.std(per_seed, ddof=1))
    pairs = {"scale_knn": "knn", "scale_linear": "linear", "scale_ft": "transformer"}
    for scale, base in pairs.items():
        diffs = [
            s["test"]["top1"] - b["test"]["top1"]
            for s, b in zip(probes[scale]["seeds"], probes[base]["seeds"], strict=True)
        ]
        assert probes[scale]["delta"]["top1"] == pytest.approx(np.mean(diffs))
    assert probes["mlp"]["delta"] is None and probes["knn"]["delta"] is None

    # the test SE of every row: binomial on the test videos; the margin of every Δ
    n = results["num_test_videos"]
    for entry in probes.values():
        p = entry["mean"]["top1"] / 100
        assert entry["se"]["top1"] == pytest.approx(100 * np.sqrt(p * (1 - p) / n))
    for scale, base in pairs.items():
        diffs = [
            s["test"]["top1"] - b["test"]["top1"]
            for s, b in zip(probes[scale]["seeds"], probes[base]["seeds"], strict=True)
        ]
        two_se = 2 * np.hypot(probes[scale]["se"]["top1"], probes[base]["se"]["top1"])
        margin = max(two_se, np.std(diffs, ddof=1))
        assert probes[scale]["delta_margin"]["top1"] == pytest.approx(margin)
    # chance: the majority class rate of the test labels
    labels = np.load(out / "predictions.npz")["labels"]
    assert results["chance"]["top1"] == pytest.approx(100 * np.bincount(labels).max() / n)
    # the best probe is named only when it leads the runner-up by more than the margin
    ranking = results["ranking"]
    means = {k: e["mean"]["top1"] for k, e in probes.items()}
    assert means[ranking["leader"]] == max(means.values())
    clear = ranking["difference"] > ranking["margin"]
    assert results["best_probe"] == (ranking["leader"] if clear else None)

    text = (out / "results.md").read_text()
    lines = text.split("## Model selection")[0].splitlines()  # the results table
    rows = [line for line in lines if line.startswith("| ") and "Probe" not in line]
    selection = [line for line in text.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert [row.split("|")[2].strip() for row in selection] == ["hold-out", "hold-out"]
    num_val = results["seeds"][0]["num_val"]
    assert f"held-out validation split of train ({num_val} videos; seeds 0, 1)" in text
    assert "cross-validation" not in text
    assert "kNN nothing (one setting: k 20)" in text
    assert "Transformer 2 settings and the step count" in text
    expected = ["kNN", "SCALE_kNN", "Linear", "SCALE_linear", "MLP", "Transformer", "SCALE_ft"]
    expected += ["Attentive", "SCALE_attentive"]
    assert [r.split("|")[1].strip() for r in rows] == expected
    for row, name in zip(rows, PROBES, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        entry = probes[name]
        margin = entry["delta_margin"]
        assert cells[1] == f"{entry['mean']['top1']:.2f} ± {entry['std']['top1']:.2f}"
        assert cells[2] == f"{entry['se']['top1']:.2f}"
        assert cells[3] == (f"{entry['delta']['top1']:+.2f}" if entry["delta"] else "")
        assert cells[4] == (f"±{margin['top1']:.2f}" if margin else "")
    best = "none named" if results["best_probe"] is None else probes[results["best_probe"]]["label"]
    assert f"Best probe: {best}. {results['best_probe_reason']}." in text
    assert f"Chance: {results['chance']['top1']:.2f} top-1 %" in text

    text = format_table(results)
    table, notes = text.strip().split("\n\n")
    assert "|" not in text and len(table.splitlines()) == 2 + len(expected)
    assert text.splitlines()[2].split()[0] == "kNN"
    assert notes.splitlines()[0].startswith("Chance:")
    assert notes.splitlines()[-1].startswith("Best probe:")


@pytest.mark.parametrize("resident", [True, False])
def test_clip_vectors_match_the_dense_array(stores, run, resident, monkeypatch):
    # resident: read once and kept; else assembled from the memory map on every read
    monkeypatch.setattr(representations, "RESIDENT_BYTES", 1 << 30 if resident else 0)
    store = FeatureStore.open(stores["train"])
    rng = np.random.default_rng(0)
    sets = rng.normal(size=(len(store), 5)).astype(np.float32)
    tokens = rng.normal(size=(len(store), store.clips_per_video, 3)).astype(np.float16)
    dense = np.concatenate(
        [
            store.features().astype(np.float32),
            tokens.astype(np.float32),
            np.repeat(sets[:, None], store.clips_per_video, 1),
        ],
        axis=2,
    )
    x = ClipVectors(store, more=tokens, extra=sets)  # [clip feature, token, per-video part]
    assert x.shape == dense.shape
    rows = np.array([70, 3, 3, 41])
    view = x[rows]  # lazy
    assert view.shape == (4, store.clips_per_video, DIM + 3 + 5)
    np.testing.assert_array_equal(np.asarray(view), dense[rows])
    cols = np.array([[0, 7], [1, 1], [2, 3], [6, 5]])
    np.testing.assert_array_equal(view[np.arange(4)[:, None], cols], dense[rows[:, None], cols])
    np.testing.assert_array_equal(np.asarray(view[np.array([2, 0])]), dense[[3, 70]])
    assert (x._all() is not None) == resident
    raw = ClipVectors(store)[rows]  # no per-video part: the store's own dtype, either way
    assert (
        np.asarray(raw).dtype == np.float16 and raw[np.arange(4)[:, None], cols].dtype == np.float16
    )
    np.testing.assert_array_equal(np.asarray(raw), store.features(rows))


def test_config_overrides_and_validation():
    config = load_eval_config(None, seeds=[4, 5], low_shot=None, **{"finetune.lr": 0.5})
    assert config.seeds == (4, 5) and config.finetune.lr == 0.5
    assert EvalConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown config key"):
        load_eval_config(None, nope=1)
    with pytest.raises(ValueError, match="unknown probes"):
        EvalConfig(probes=("knn", "svm"))
    with pytest.raises(ValueError, match="val_fraction"):
        EvalConfig(val_fraction=0.0)


def test_baseline_cache_keys_hold_the_settings_each_row_reads():
    """The fields in each baseline row's cache key, from the rows' declarations and the
    NOT_CACHED marks, against hand-kept lists."""
    common = ["cv_folds", "device", "low_shot", "min_val_videos", "task", "val_fraction"]
    heads = ["clips_per_sample", "head_batch_size", "head_epochs", "head_lrs"]
    heads += ["head_weight_decays", "mlp_dropout", "mlp_hidden"]
    stopping = ["finetune", "finetune_max_epochs", "finetune_max_steps", "finetune_min_steps"]
    stopping += ["patience", "median_stop", "precision", "validate_every"]
    expected = {
        "knn": [*common, "knn_k", "knn_temperature"],
        "linear": [*common, *heads, "linear_batchnorm"],
        "mlp": [*common, *heads, "precision"],
        "transformer": [*common, *stopping, "finetune_heads", "finetune_lrs", "input_pca"]
        + ["transformer_depth", "transformer_heads", "transformer_hidden"],
        "attentive": [*common, *stopping, "attentive", "attentive_lrs", "attentive_weight_decays"]
        + ["input_pca"],
    }
    config = tiny_config()
    for row, names in expected.items():
        settings = baseline_settings(config, row)
        assert sorted(settings) == sorted(names), row
        assert all(settings[k] == config.to_dict()[k] for k in names)
    with pytest.raises(ValueError, match="not a baseline row"):
        baseline_settings(config, "scale_knn")
    # runtime fields are left out of the settings that affect results
    assert {"device", "progress", "embed_batch_size"}.isdisjoint(result_settings(config))
    assert "plots" in result_settings(config)


def test_baseline_cache_misses_when_the_training_protocol_changes(stores, monkeypatch):
    import torch

    from scalevid.eval import cache

    store = FeatureStore.open(stores["train"])
    args = dict(
        train_store=store,
        test_store=store,
        config=tiny_config(),
        task="classification",
        device=torch.device("cpu"),
        architecture=None,
    )
    before = cache.baseline_file("attentive", 0, **args)
    assert cache.baseline_file("attentive", 0, **args) == before
    monkeypatch.setattr(cache, "PROTOCOL", cache.PROTOCOL + 1)
    assert cache.baseline_file("attentive", 0, **args) != before


def test_one_markdown_table_builder():
    table = markdown_table(["Name", "a", "b"], [["x", "1", "2"], ["y", "3", "4"]])
    assert table == "| Name | a | b |\n|---|---:|---:|\n| x | 1 | 2 |\n| y | 3 | 4 |\n"
    lines = markdown_table(["A", "B"], [["1", "2"]], align="rl").splitlines()
    assert lines[1] == "|---:|---|"
    with pytest.raises(ValueError, match="columns"):
        markdown_table(["A", "B"], [["1"]])


def test_embedding_and_report_modules_do_not_import_the_protocol():
    import ast

    import scalevid.eval.embed
    import scalevid.eval.report
    import scalevid.eval.representations

    for module in (scalevid.eval.embed, scalevid.eval.report, scalevid.eval.representations):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "scalevid.eval.protocol" not in imported, module.__name__


# --------------------------------------------------------------------------- embed / search


def test_export_embeddings_and_search(stores, run, tmp_path):
    store = FeatureStore.open(stores["test"])
    npy, ids = export_embeddings(store=store, run=run, out=tmp_path, device="cpu", progress=False)
    vectors = np.load(npy)
    assert vectors.shape == (40, DIM + 32) and vectors.dtype == np.float32
    assert ids.read_text().splitlines() == store.video_ids
    model = ScaleModel.from_pretrained(run)
    feats = store.features(7).astype(np.float32)
    expected_set = model.embed(feats, store.boxes[7]).set.numpy()
    np.testing.assert_allclose(vectors[7, :DIM], feats.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vectors[7, DIM:], expected_set, rtol=1e-4, atol=1e-5)

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for query in ("test0000", "test0013", "test0039"):
        hits = search(store=store, query=query, k=5, embeddings=tmp_path)
        assert len(hits) == 5 and query not in [h[0] for h in hits]  # k neighbours, not the query
        q = store.video_ids.index(query)
        others = [i for i in np.argsort(-(unit @ unit[q]), kind="stable") if i != q]
        assert [h[0] for h in hits] == [store.video_ids[i] for i in others[:5]]
        sims = [s for _, _, s in hits]
        assert sims == sorted(sims, reverse=True) and all(s <= 1.0 + 1e-6 for s in sims)
    everyone = search(store=store, query="test0000", k=len(store) + 3, embeddings=tmp_path)
    assert len(everyone) == len(store) - 1
    from_run = search(store=store, query="test0013", k=5, run=run, device="cpu")
    assert [h[0] for h in from_run] == [
        h[0] for h in search(store=store, query="test0013", k=5, embeddings=tmp_path)
    ]
    with pytest.raises(ValueError, match="not in"):
        search(store=store, query="missing", embeddings=tmp_path)


# --------------------------------------------------------------------------- baseline reuse


def test_baseline_rows_are_reused_across_runs_and_recomputed_when_settings_change(
    stores, run, tmp_path, monkeypatch
):
    cache = tmp_path / "baselines"
    config = tiny_config(seeds=(0,), head_epochs=2, finetune_max_epochs=1)

    def cached_evaluate(out: str, test: str = "test", **changes) -> dict:
        return evaluate(
            train_store=stores["train"],
            test_store=stores[test],
            run=run,
            config=dataclasses.replace(config, **changes),
            out=tmp_path / out,
            baseline_cache=cache,
        )

    first = cached_evaluate("a")
    assert first["reused_baselines"] == []
    baselines = ["attentive", "knn", "linear", "mlp", "transformer"]
    assert len(list(cache.glob("*.npz"))) == len(baselines)

    ran: list[str] = []
    real_run = workers.run_row  # in this process: the module runs with one thread, one worker
    monkeypatch.setattr(workers, "run_row", lambda n, *a: ran.append(n) or real_run(n, *a))
    # a SCALE-only setting changes: every baseline is reused, every SCALE row runs
    second = cached_evaluate("b", scale_knn_normalize="whole")
    assert sorted(ran) == ["scale_attentive", "scale_ft", "scale_knn", "scale_linear"]
    assert len(second["reused_baselines"]) == len(baselines)

    def timeless(seeds: list[dict]) -> str:  # a reused run has no seconds: not trained here
        return json.dumps([{k: v for k, v in s.items() if k != "seconds"} for s in seeds])

    for name in baselines:
        same = timeless(second["probes"][name]["seeds"]) == timeless(first["probes"][name]["seeds"])
        assert same, name
    a = np.load(tmp_path / "a" / "predictions.npz")
    b = np.load(tmp_path / "b" / "predictions.npz")
    for key in a.files:
        if not key.startswith("scale"):
            np.testing.assert_array_equal(a[key], b[key])

    ran.clear()  # a setting the head baselines read: they run again, the transformer is reused
    cached_evaluate("c", head_epochs=3, probes=("linear", "transformer"))
    assert ran == ["linear"]

    ran.clear()  # another test store (other content): nothing is reused
    cached_evaluate("d", "test_permuted", probes=("knn",))
    assert ran == ["knn"]

    ran.clear()  # a damaged cache file is recomputed and rewritten, not trusted
    damaged = sorted(cache.glob("knn-seed0-*.npz"))  # the test and the test_permuted rows
    for path in damaged:
        path.write_bytes(b"not a zip")
    cached_evaluate("e", probes=("knn",))
    assert ran == ["knn"] and sum(load_probe_run(p) is not None for p in damaged) == 1


def test_store_fingerprint_follows_content(stores, tmp_path):
    import shutil

    from scalevid.store import FeatureStore

    a = FeatureStore.open(stores["test"])
    assert FeatureStore.open(stores["test"]).fingerprint == a.fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(stores["test"], copy)
    assert FeatureStore.open(copy).fingerprint == a.fingerprint  # same content, other place
    assert FeatureStore.open(stores["test_permuted"]).fingerprint != a.fingerprint


def test_small_validation_switches_to_cross_validation_and_is_reported(stores, tmp_path):
    config = tiny_config(
        probes=("linear", "transformer"),
        seeds=(3,),
        head_epochs=1,
        finetune_max_epochs=2,
        finetune_min_steps=10,
        min_val_videos=100,
        cv_folds=4,
    )
    results = evaluate(
        train_store=stores["train"], test_store=stores["test"], config=config, out=tmp_path
    )
    info = results["seeds"][0]
    assert info["selection"] == "4-fold CV" and info["num_val"] == 64  # every train video
    split = np.load(tmp_path / "splits" / "seed3.npz")
    vals = [split[f"fold{i}_val"] for i in range(4)]
    np.testing.assert_array_equal(np.sort(np.concatenate(vals)), split["train"])
    for i in range(4):
        assert np.intersect1d(split[f"fold{i}_fit"], vals[i]).size == 0
    # The schedule is 2 passes over the 64-video train split (4 steps each), floored at 10.
    grid = results["probes"]["transformer"]["seeds"][0]["grid"]
    assert {g["config"]["schedule_steps"] for g in grid} == {10}
    assert all(g["config"]["head"] == "clip_set" for g in grid)
    assert all(np.isfinite(g["val_loss"]) for g in grid)
    chosen = results["probes"]["transformer"]["seeds"][0]["chosen"]
    linear = results["probes"]["linear"]["seeds"][0]["chosen"]
    text = (tmp_path / "results.md").read_text()
    assert "## Model selection" in text
    assert "4-fold cross-validation on train (all 64 of its videos scored once; seed 3)" in text
    assert "held-out" not in text
    row = next(line for line in text.splitlines() if line.startswith("| 3 |"))
    assert row == (
        f"| 3 | 4-fold CV | 64 | lr {linear['lr']:g}, wd {linear['weight_decay']:g} | "
        f"clip_set head, lr {chosen['lr']:g}, {chosen['steps']} of 10 steps |"
    )
    with pytest.raises(ValueError, match="finetune_heads"):
        EvalConfig(finetune_heads=("cls",))
