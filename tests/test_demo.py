"""The main job, `scalevid demo --quick`, end to end with the real I3D weights."""

import json

import pytest

from scalevid.backbones import WeightsUnavailableError
from scalevid.backbones.i3d import fetch_i3d_weights
from scalevid.cli import main


@pytest.fixture(scope="module")
def i3d_weights():
    try:
        return fetch_i3d_weights()
    except WeightsUnavailableError as err:  # offline machine: nothing to run the demo with
        pytest.skip(f"I3D weights unavailable: {err}")


def test_quick_demo_end_to_end(tmp_path, i3d_weights, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "SCALE_linear" in printed and "report.md" in printed
    report = (out / "report" / "report.md").read_text()
    for row in ("kNN", "SCALE_kNN", "Linear", "SCALE_linear", "MLP", "Transformer", "SCALE_ft"):
        assert f"| {row} " in report
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["probes"]["scale_linear"]["seeds"]
    for name in ("probes.png", "confusion.png", "embedding_map.png"):
        assert (out / "report" / name).stat().st_size > 1000
    assert (out / "run" / "curves.png").is_file()
    manifest = json.loads((out / "stores" / "test" / "manifest.json").read_text())
    assert manifest["backbone"] == "i3d" and manifest["dim"] == 1024
    assert manifest["sampling"]["mode"] == "test"
    # a second run reuses the videos and stores (nothing re-extracted) and trains afresh
    cached = sorted((out / "stores").rglob("*.npy")) + sorted((out / "data").rglob("*.mp4"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(["-q", "demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_demo_size_options_reach_the_config(monkeypatch, tmp_path):
    import scalevid.demo

    seen = {}
    monkeypatch.setattr(scalevid.demo, "run_demo", lambda out, config, **kw: seen.update(c=config))
    argv = ["demo", "--out", str(tmp_path), "--train-videos", "1440", "--test-videos", "360",
            "--epochs", "40", "--batch-size", "128", "--seeds", "0", "1",
            "--probes", "linear", "scale_linear"]  # fmt: skip
    assert main(argv) == 0
    config = seen["c"]
    assert (config.dataset.train, config.dataset.test) == (1440, 360)
    assert (config.epochs, config.batch_size) == (40, 128)
    assert config.seeds == (0, 1) and config.probes == ("linear", "scale_linear")
    assert config.dataset.val == scalevid.demo.DemoConfig().dataset.val  # the rest unchanged
    assert main(["demo", "--quick", "--out", str(tmp_path), "--epochs", "3"]) == 0
    assert seen["c"].epochs == 3 and seen["c"].dataset.train == 48  # --quick's sizes otherwise
    with pytest.raises(SystemExit):
        main(["demo", "--train-videos", "0"])
