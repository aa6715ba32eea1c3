import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scalevid.cli import main
from scalevid.model import ScaleModel
from scalevid.train import TrainConfig, engine, load_config, train
from scalevid.train.schedule import param_groups, warmup_cosine, warmup_steps
from tests.synthetic_store import write_synthetic_store

SMALL = {
    "model": {
        "hidden": 32,
        "heads": 4,
        "depth": 2,
        "set_head": [64, 16],
        "pred_head": [64, 16],
        "target_head": [64, 64, 16],
    },
    "log_every": 5,
    "progress": False,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_synthetic_store(tmp_path_factory.mktemp("store") / "train", short_videos=10)


def small_config(store: Path, out: Path, **kw) -> TrainConfig:
    overrides = {"store": str(store), "out": str(out), **kw}
    cfg = load_config(None, **overrides)
    cfg = TrainConfig.from_dict(
        {**cfg.to_dict(), **{k: v for k, v in SMALL.items() if k != "model"}}
    )
    cfg.model = type(cfg.model).from_dict({**cfg.model.to_dict(), **SMALL["model"]})
    return cfg


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_short_run_learns(store, tmp_path):
    cfg = small_config(store, tmp_path / "run", epochs=20, batch_size=64, lr=1e-3)
    run = train(cfg)
    log = rows(run)
    assert log[-1]["loss"] < 0.75 * log[0]["loss"]
    assert log[-1]["mcm_loss"] < log[0]["mcm_loss"] - 1.0
    # 1024 candidate clips per query: chance is 0.001; finding the right video gives ~1/16
    assert log[-1]["mcm_acc"] > max(5 * log[0]["mcm_acc"], 0.02)
    assert log[-1]["set_acc"] > log[0]["set_acc"] + 0.2
    # the effective mask ratio is logged: over all steps, the configured 0.25 (1024 clips a step)
    assert abs(sum(r["mask_ratio"] for r in log) / len(log) - 0.25) < 0.01
    assert (run / "curves.png").stat().st_size > 1000
    model = ScaleModel.from_pretrained(run)
    assert model.config.hidden == 32 and model.config.input_dim == 32
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["epochs"] == 20 and saved["model"]["hidden"] == 32


def test_lr_schedule_warmup_then_cosine():
    lrs = [warmup_cosine(s, total=100, warmup=warmup_steps(0.1, 100)) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    # the half cosine ends at the floor, its midpoint is halfway between peak and floor
    mid = warmup_cosine(60, total=110, warmup=10, peak=3.0, floor=1.0)
    assert mid == pytest.approx(2.0)
    assert warmup_cosine(110, total=110, warmup=10, peak=3.0, floor=1.0) == pytest.approx(1.0)


def test_lr_schedule_without_warmup_starts_at_peak():
    assert warmup_cosine(0, total=10, warmup=0, peak=2.0) == 2.0
    assert warmup_steps(0.0, 10) == 1 and warmup_steps(0.05, 1000) == 50


def test_no_weight_decay_on_biases_norms_tokens():
    model = ScaleModel(TrainConfig().model)
    decay, no_decay = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"msk_token", "set_token", "norm.weight", "input_proj.bias"} <= skipped
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


def test_config_file_and_flags_override(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump({"epochs": 7, "model": {"depth": 3}, "pretext": {"mask_ratio": 0.5}})
    )
    cfg = load_config(path, epochs=9, **{"pretext.num_views": 4})
    assert (cfg.epochs, cfg.model.depth, cfg.pretext.mask_ratio, cfg.pretext.num_views) == (
        9,
        3,
        0.5,
        4,
    )
    path.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown config key 'epochz'"):
        load_config(path)


def test_a_saved_config_naming_the_one_loss_computation_still_loads():
    saved = TrainConfig().to_dict()
    saved["pretext"]["output_sparsity"] = True
    assert TrainConfig.from_dict(saved) == TrainConfig()
    saved["pretext"]["output_sparsity"] = False
    with pytest.raises(ValueError, match="output_sparsity"):
        TrainConfig.from_dict(saved)


def test_resume_equals_uninterrupted(store, tmp_path, monkeypatch):
    base = dict(epochs=3, batch_size=64, checkpoint_every=5)
    full = train(small_config(store, tmp_path / "full", **base))

    real_step = engine.Trainer.train_step

    def crash_at_7(self, step, index):
        if step == 7:
            raise KeyboardInterrupt
        return real_step(self, step, index)

    monkeypatch.setattr(engine.Trainer, "train_step", crash_at_7)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(store, tmp_path / "cut", **base))
    monkeypatch.setattr(engine.Trainer, "train_step", real_step)
    resumed = train(small_config(store, tmp_path / "cut", **base), resume=True)

    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert [r["step"] for r in rows(resumed)] == [r["step"] for r in rows(full)]
    assert rows(resumed)[-1]["loss"] == pytest.approx(rows(full)[-1]["loss"])


def test_refuses_to_overwrite_a_run(store, tmp_path):
    train(small_config(store, tmp_path / "run", epochs=1, batch_size=64))
    with pytest.raises(FileExistsError, match="--resume"):
        train(small_config(store, tmp_path / "run", epochs=1, batch_size=64))


def test_a_run_draws_the_chance_of_its_own_batch(store, tmp_path, monkeypatch):
    from scalevid.train import curves

    seen = {}
    monkeypatch.setattr(curves, "plot_training_curves", lambda m, o, *, chance: seen.update(chance))
    cfg = small_config(store, tmp_path / "run", epochs=1, batch_size=64)
    train(cfg)
    assert seen == curves.chance_accuracies(batch_size=64, num_views=cfg.pretext.num_views)


def test_cli_train_with_config_file(store, tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    code = main(
        [
            "-q",
            "train",
            "--store",
            str(store),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(cfg),
            "--epochs",
            "1",
            "--batch-size",
            "32",
        ]
    )
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["batch_size"] == 32 and saved["model"]["hidden"] == 32
    assert (
        main(["-q", "train", "--store", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")]) == 2
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(store, tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "model": {**SMALL["model"], "dropout": 0.0}}))
    common = [
        "train",
        "--store",
        str(store),
        "--config",
        str(cfg),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--no-progress",
        "--log-every",
        "1",
    ]
    assert main(["-q", *common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "scalevid.cli",
        "-q",
        *common,
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for key in a:
        # Adam moves every weight by ~lr per step whatever the gradient's size, so weights whose
        # gradient is exactly 0 in theory (the attention key bias) drift by up to steps * lr from
        # float noise alone; the per-step losses below are the tight check.
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=8 * 3e-4)
    la, lb = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for key in ("loss", "mcm_loss", "set_loss"):
        # the first step sees identical weights and data: equal up to summation order; later steps
        # drift apart slowly (Adam normalises noise-sized gradients); exact gradient equality is
        # tested in test_pretext.py
        assert la[0][key] == pytest.approx(lb[0][key], rel=1e-6)
        for ra, rb in zip(la, lb, strict=True):
            assert ra[key] == pytest.approx(rb[key], rel=2e-3)


def test_memory_mapped_features_train_exactly_as_resident(store, tmp_path):
    """resident=never reads each batch from the memory map (indices on the host); it must take
    the very same steps as features held in memory."""
    base = dict(epochs=2, batch_size=64)
    a = train(small_config(store, tmp_path / "resident", resident="always", **base))
    b = train(small_config(store, tmp_path / "mapped", resident="never", **base))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
    # the store has short videos (padding), so every step took the padded-mask path too
    assert [r["loss"] for r in rows(a)] == [r["loss"] for r in rows(b)]
