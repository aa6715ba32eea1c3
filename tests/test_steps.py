"""The one orchestrator's caching rule, on hand-made steps that count their runs, and on the
demo's own pretraining step interrupted mid-run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from scalevid.demo.pipeline import DemoConfig, demo_steps
from scalevid.recipes import TINY
from scalevid.steps import Step, StepError, plan_steps, record_path, run_steps
from scalevid.train import engine
from tests.synthetic_store import write_synthetic_store


class Counter:
    """A step's `make` that writes its output file and counts its calls."""

    def __init__(self, out: Path, name: str) -> None:
        self.path, self.calls = out / name, 0

    def __call__(self) -> dict:
        self.calls += 1
        self.path.write_text(str(self.calls))
        return {"calls": self.calls}


def _steps(out: Path, makes: dict[str, Counter], *, a: int = 1, b: int = 1) -> list[Step]:
    return [
        Step("a", "make a", {"x": a}, makes["a"]),
        Step(
            "b",
            "make b",
            {"y": {"z": b}},
            makes["b"],
            inputs=("a",),
            on_change="recompute",
            fresh=(makes["b"].path,),
        ),
        Step("table", "render", {}, makes["table"], inputs=("b",), cached=False),
    ]


@pytest.fixture
def makes(tmp_path: Path) -> dict[str, Counter]:
    return {name: Counter(tmp_path, name) for name in ("a", "b", "table")}


def test_finished_steps_are_reused_and_uncached_ones_run_again(tmp_path, makes, capsys):
    done = run_steps(_steps(tmp_path, makes), tmp_path)
    assert [m.calls for m in makes.values()] == [1, 1, 1] and not done["a"].reused
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/3] make a ... ") and lines[0].endswith(" s")
    record = json.loads(record_path(tmp_path, "b").read_text())
    assert record["complete"] and record["settings"] == {"y": {"z": 1}}
    assert record["inputs"] == {"a": done["a"].made} and record["outcome"] == {"calls": 1}

    again = run_steps(_steps(tmp_path, makes), tmp_path)
    assert [m.calls for m in makes.values()] == [1, 1, 2]
    assert again["a"].reused and again["b"].outcome == {"calls": 1}
    lines = capsys.readouterr().out.splitlines()
    assert "cached" in lines[0] and "cached" in lines[1] and "cached" not in lines[2]
    assert plan_steps(_steps(tmp_path, makes), tmp_path) == {
        "a": "cached",
        "b": "cached",
        "table": "render",
    }


def test_changed_settings_are_an_error_or_made_afresh_as_the_step_says(tmp_path, makes, caplog):
    run_steps(_steps(tmp_path, makes), tmp_path)
    # `a` refuses: nothing runs, not even the steps before it would have
    assert (
        plan_steps(_steps(tmp_path, makes, a=2), tmp_path)["a"]
        == "error: other settings (x differ)"
    )
    with pytest.raises(StepError, match=r"other settings \(x differ\).*another --out"):
        run_steps(_steps(tmp_path, makes, a=2), tmp_path)
    assert [m.calls for m in makes.values()] == [1, 1, 1]
    # `b` is made afresh, its output deleted first, and one log line says why
    makes["b"].path.write_text("stale")
    with caplog.at_level(logging.WARNING, logger="scalevid.steps"):
        run_steps(_steps(tmp_path, makes, b=2), tmp_path)
    assert [m.calls for m in makes.values()] == [1, 2, 2]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "scalevid.steps"]
    assert line == "b: made with other settings (y.z differ): making it afresh"
    assert makes["b"].path.read_text() == "2"


def test_an_interrupted_step_runs_again_and_what_reads_it_is_remade(tmp_path, makes):
    run_steps(_steps(tmp_path, makes), tmp_path)
    record = json.loads(record_path(tmp_path, "a").read_text())

    def interrupted() -> dict:
        raise KeyboardInterrupt

    steps = _steps(tmp_path, makes)
    record_path(tmp_path, "a").unlink()
    steps[0].make = interrupted
    with pytest.raises(KeyboardInterrupt):
        run_steps(steps, tmp_path)
    cut = json.loads(record_path(tmp_path, "a").read_text())
    assert cut["complete"] is False and cut["settings"] == record["settings"]
    assert plan_steps(_steps(tmp_path, makes), tmp_path) == {
        "a": "resume",
        "b": "make afresh: inputs made since (a)",
        "table": "render",
    }
    run_steps(_steps(tmp_path, makes), tmp_path)
    assert [m.calls for m in makes.values()] == [2, 2, 2]  # `b` read the old `a`: remade


def test_upgrade_brings_a_record_to_todays_names(tmp_path, makes):
    run_steps(_steps(tmp_path, makes), tmp_path)
    path = record_path(tmp_path, "a")
    path.write_text(json.dumps({**json.loads(path.read_text()), "settings": {"old_x": 1}}))
    with pytest.raises(StepError, match="old_x, x differ"):
        run_steps(_steps(tmp_path, makes), tmp_path)
    steps = _steps(tmp_path, makes)
    steps[0].upgrade = lambda settings: settings.update(x=settings.pop("old_x"))
    run_steps(steps, tmp_path)
    assert makes["a"].calls == 1


def test_the_demos_pretraining_resumes_from_its_checkpoint(tmp_path, monkeypatch, caplog):
    """The demo's own `run` step, on a small stand-in store: stopped at step 5, run again, it
    goes on from the last checkpoint (an epoch's end) instead of starting over."""
    write_synthetic_store(tmp_path / "stores" / "train", videos=48, clips=6, dim=16)
    settings = DemoConfig.train_settings
    small = {"model": TINY["train"]["model"]}  # the demo's schedule, a small predictor
    monkeypatch.setattr(DemoConfig, "train_settings", lambda self: {**settings(self), **small})
    steps = demo_steps(tmp_path, DemoConfig.quick())
    (pretrain,) = [s for s in steps if s.key == "run"]
    real_step = engine.Trainer.train_step
    seen: list[int] = []

    def counted(self, step, index):
        if step == 5 and not seen.count(-1):
            seen.append(-1)  # the interruption
            raise KeyboardInterrupt
        seen.append(step)
        return real_step(self, step, index)

    monkeypatch.setattr(engine.Trainer, "train_step", counted)
    with pytest.raises(KeyboardInterrupt):
        run_steps([pretrain], tmp_path)
    assert not json.loads(record_path(tmp_path, "run").read_text())["complete"]
    with caplog.at_level(logging.INFO):
        run_steps([pretrain], tmp_path)
    assert "resuming" in caplog.text and (tmp_path / "run" / "model.safetensors").is_file()
    # 48 videos in batches of 24: 2 steps an epoch, a checkpoint at each epoch's end (step 4)
    assert seen == [0, 1, 2, 3, 4, -1, *range(4, 16)]
    assert json.loads(record_path(tmp_path, "run").read_text())["complete"]
