"""The one config merge: dataclass defaults < YAML < flags; runtime fields left out of results."""

import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from scalevid import cli
from scalevid.cli import stages
from scalevid.config import (
    ConfigError,
    build_config,
    config_dict,
    load_config,
    merge,
    parse_settings,
    result_settings,
    runtime,
)


@dataclass
class Inner:
    depth: int = 2
    workers: int = runtime(4)

    def to_dict(self):
        return {"depth": self.depth, "workers": self.workers}


@dataclass
class Outer:
    lr: float = 0.1
    device: str = runtime("auto")
    inner: Inner = field(default_factory=Inner)

    def to_dict(self):
        return {"lr": self.lr, "device": self.device, "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, d):
        return cls(lr=d["lr"], device=d["device"], inner=Inner(**d["inner"]))


def test_result_settings_leave_out_runtime_fields_at_every_depth():
    cfg = Outer(device="cuda", inner=Inner(depth=3, workers=8))
    assert result_settings(cfg) == {"lr": 0.1, "inner": {"depth": 3}}
    assert result_settings(Outer()) == result_settings(Outer(device="cpu", inner=Inner(workers=1)))


def test_yaml_then_flags_override_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\ninner: {depth: 5}\n")
    cfg = load_config(Outer, path, **{"inner.workers": 2, "lr": None})
    assert (cfg.lr, cfg.inner.depth, cfg.inner.workers, cfg.device) == (0.5, 5, 2, "auto")


def test_unknown_keys_name_their_source(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner: {deep: 1}\n")
    with pytest.raises(ValueError, match="c.yaml.*'deep'"):
        load_config(Outer, path)
    with pytest.raises(ValueError, match="flags.*'nope'"):
        load_config(Outer, None, nope=1)


# ------------------------------------------------------------------------------ merge


def test_merge_reaches_any_depth_and_copies():
    base = {"a": {"b": {"c": 1, "d": 2}}, "e": [1]}
    merged = merge(base, {"a.b.c": 5, "a": {"b": {"d": 6}}})
    assert merged == {"a": {"b": {"c": 5, "d": 6}}, "e": [1]}
    assert base["a"]["b"] == {"c": 1, "d": 2}  # the base is left alone
    merged["e"].append(2)
    assert base["e"] == [1]
    # free-form (no source): new keys and sections are added; nested keys are not split
    assert merge({}, {"sweep": {"pretext.mask_ratio": [0.1]}, "x.y": 1}) == {
        "sweep": {"pretext.mask_ratio": [0.1]},
        "x": {"y": 1},
    }
    with pytest.raises(ValueError, match="flags.*'lr' is a value"):
        merge({"lr": 0.1}, {"lr.x": 1}, source="flags")
    with pytest.raises(ValueError, match="flags: unknown config key 'z' in 'a.b'"):
        merge(base, {"a.b.z": 1}, source="flags")


@dataclass
class Needs:
    path: str = runtime()
    depth: int = 2


def test_build_config_from_a_class_or_an_instance_with_named_sources():
    cfg = build_config(Needs, ("file", {"depth": 3}), ("flags", {"path": "x"}))
    assert (cfg.path, cfg.depth) == ("x", 3)
    assert build_config(cfg, ("more", {"depth": 4})) == Needs(path="x", depth=4)
    with pytest.raises(ValueError, match=r"Needs needs a value for \['path'\]"):
        build_config(Needs)
    with pytest.raises(ValueError, match="more: unknown config key 'deep'"):
        build_config(cfg, ("more", {"deep": 4}))
    assert result_settings(cfg) == {"depth": 3}


# ------------------------------------------------------------------------------ the CLI's tables


@pytest.mark.parametrize(
    ("table", "config"),
    [
        ("TRAIN_FLAGS", "scalevid.train.config:TrainConfig"),
        ("EXTRACT_FLAGS", "scalevid.extract:ExtractConfig"),
        ("EVAL_FLAGS", "scalevid.eval.config:EvalConfig"),
        ("MAKE_DATASET_FLAGS", "scalevid.demo.synthetic:DatasetConfig"),
        ("DEMO_FLAGS", "scalevid.demo.pipeline:DemoConfig"),
        ("DEMO_SIZE_FLAGS", "scalevid.demo.pipeline:DemoConfig"),
    ],
)
def test_every_flag_names_a_config_key(table, config):
    import importlib

    module, name = config.split(":")
    defaults = config_dict(getattr(importlib.import_module(module), name))
    for flag in getattr(stages, table):
        merge(defaults, {flag.key: 1}, source=flag.flag)  # an unknown key raises


@pytest.fixture
def captured_extract(monkeypatch) -> dict:
    """`scalevid extract` with the extraction replaced by recording its config in ["c"]."""
    import scalevid.extract

    seen: dict = {}

    class Report:
        failed = 0

        def summary(self):
            return "ok"

    monkeypatch.setattr(scalevid.extract, "extract", lambda c: seen.update(c=c) or Report())
    return seen


def test_extract_reads_a_config_file_under_its_flags(tmp_path, captured_extract):
    seen = captured_extract
    path = tmp_path / "extract.yaml"
    path.write_text("backbone: module\nnum_clips: 4\nseed: 3\nprogress: false\n")
    argv = ["extract", "--config", str(path), "--list", "l.csv", "--out", "s", "--seed", "5"]
    assert cli.main(argv) == 0
    config = seen["c"]
    assert (config.backbone, config.num_clips, config.seed, config.progress) == (
        "module",
        4,
        5,
        False,
    )
    assert (config.list, config.out, config.workers) == ("l.csv", "s", 2)
    assert cli.main(["extract", "--list", "l", "--out", "s", "--no-progress"]) == 0
    assert seen["c"].progress is False and seen["c"].backbone == "i3d"
    path.write_text("frobnicate: 1\n")
    assert cli.main(argv) == 2  # unknown key: an error naming the file


def test_required_paths_may_come_from_the_config_file(tmp_path, captured_extract, capsys):
    seen = captured_extract
    path = tmp_path / "extract.yaml"
    path.write_text("list: videos.csv\nout: store\n")
    assert cli.main(["extract", "--config", str(path)]) == 0
    assert (seen["c"].list, seen["c"].out) == ("videos.csv", "store")
    # neither flag nor file: one line naming both ways to give it
    path.write_text("list: videos.csv\n")
    assert cli.main(["extract", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert "--out required" in error and "`out:` in a --config file" in error
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "--store required" in capsys.readouterr().err


# ------------------------------------------------------------------------------ --set values


@dataclass
class Typed:
    lr: float = 0.1
    steps: int | None = None
    mode: Literal["auto", "on", "off"] = "auto"
    name: str = "x"
    seeds: tuple[int, ...] = (0,)
    pair: tuple[int, int] = (1, 2)
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_parse_settings_reads_yaml_and_checks_the_annotation():
    settings = parse_settings(
        Typed,
        ["lr=1e-3", "steps=null", "mode=on", "name=1", "seeds=3", "pair=[4, 5]", "inner.depth=7"],
    )
    assert settings == {
        "lr": 1e-3,  # YAML 1.1 reads 1e-3 as text; a float field takes it as the number
        "steps": None,
        "mode": "on",  # YAML reads `on` as true; the Literal takes the text
        "name": "1",
        "seeds": [3],  # one value for a list field
        "pair": [4, 5],
        "inner.depth": 7,
    }
    assert parse_settings(Typed, ["lr=2", "flag=true"]) == {"lr": 2.0, "flag": True}
    for item, words in (
        ("steps=1.5", "steps: must be an integer or null"),
        ("pair=[1, 2, 3]", "pair: must be a list of 2"),
        ("flag=maybe", "flag: must be true or false"),
        ("inner.deep=1", "unknown config key 'deep' in 'inner'"),
        ("lr.x=1", "'lr' is a value"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_settings(Typed, [item])
