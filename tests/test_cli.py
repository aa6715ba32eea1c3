"""The command line end to end on small local files: import -> check -> train -> load; and how
every subcommand builds its config (--config < flags < --set, --print-config, generated help)."""

import argparse
import dataclasses
import inspect
import json
import logging
import typing

import numpy as np
import pytest
import torch
import yaml

from scalevid import ScaleModel
from scalevid.cli import build_parser, main
from scalevid.config import config_dict
from scalevid.data.list_formats import Format
from scalevid.demo.pipeline import DemoConfig
from scalevid.eval.config import EvalConfig
from scalevid.extract import ExtractConfig
from scalevid.store import FeatureStore
from scalevid.train import TrainConfig
from tests.conftest import subnormal_product


def write_npy_folder(root, videos=40, clips=6, dim=16, *, classes=("jump", "run"), seed=0):
    """Per-video .npy clip features and a `path label` list; vid005.npy is broken. Each clip is
    its class's centre (8 along the class's own axis, the same for every seed) plus unit noise:
    nearest neighbours share their class, so any sound probe is right on nearly every video."""
    centres = 8 * np.eye(len(classes), dim)  # (C, D)
    rng = np.random.default_rng(seed)
    feats = root / "feats"
    feats.mkdir()
    lines = []
    for i in range(videos):
        c = i % len(classes)
        clip_features = centres[c] + rng.normal(size=(clips, dim))  # (clips, D)
        np.save(feats / f"vid{i:03d}.npy", clip_features.astype(np.float32))
        lines.append(f"videos/vid{i:03d}.mp4 {classes[c]}")
    (feats / "vid005.npy").write_bytes(b"not an npy file")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return feats, root / "train.csv"


def import_npy(feats, listing, store) -> int:
    return main(
        [
            "-q",
            "import",
            "--features",
            str(feats),
            "--list",
            str(listing),
            "--out",
            str(store),
            "--no-progress",
        ]
    )


@pytest.mark.slow
def test_import_check_train_load(tmp_path, capsys):
    feats, listing = write_npy_folder(tmp_path)
    store = tmp_path / "store"
    code = import_npy(feats, listing, store)
    assert code == 1  # one broken .npy: recorded, the rest imported
    assert "vid005" in (store / "failures.jsonl").read_text()
    opened = FeatureStore.open(store)
    assert len(opened) == 39 and opened.manifest.class_names == ["jump", "run"]
    t0 = opened.boxes[0, :, 1]
    assert np.allclose(t0, np.arange(6) / 6)  # uniform temporal positions, full frame

    assert main(["store", "check", str(store), "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out

    run = tmp_path / "run"
    args = [
        "-q",
        "train",
        "--store",
        str(store),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--num-views",
        "3",
        "--no-progress",
    ]
    assert main(args) == 0
    model = ScaleModel.from_pretrained(run)
    out = model.embed(opened.features(0).astype(np.float32), opened.boxes[0])
    assert out.clips.shape == (6, 256) and out.set.shape == (256,)


def test_store_check_reports_a_truncated_shard(tmp_path, capsys):
    feats, listing = write_npy_folder(tmp_path)
    store = tmp_path / "store"
    import_npy(feats, listing, store)
    shard = next((store / "shards").iterdir())
    data = (shard / "features.npy").read_bytes()
    (shard / "features.npy").write_bytes(data[: len(data) // 2])
    assert main(["store", "check", str(store), "--no-progress"]) == 1
    assert shard.name in capsys.readouterr().out
    assert main(["-q", "train", "--store", str(store), "--out", str(tmp_path / "r")]) == 2


CLASSES = ("jump", "run", "swim", "throw")


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """Train and test stores of separable classes (fresh videos in each, vid005 of each broken)
    and a small run trained on the train store: (train store, test store, run)."""
    root = tmp_path_factory.mktemp("separable")
    stores = {}
    for split, videos, seed in (("train", 48, 0), ("test", 25, 1)):
        (root / split).mkdir()
        feats, listing = write_npy_folder(root / split, videos=videos, classes=CLASSES, seed=seed)
        stores[split] = root / f"{split}_store"
        import_npy(feats, listing, stores[split])
    config = root / "small.yaml"
    config.write_text(
        "model: {hidden: 32, heads: 4, set_head: [64, 16], pred_head: [64, 16], "
        "target_head: [64, 16]}\n"
    )
    run = root / "run"
    train = ["-q", "train", "--store", str(stores["train"]), "--out", str(run)]
    options = ["--config", str(config), "--epochs", "2", "--batch-size", "16", "--num-views", "3"]
    assert main([*train, *options, "--no-progress"]) == 0
    return stores["train"], stores["test"], run


def test_eval_classifies_a_store_of_separable_classes(separable, tmp_path, capsys):
    """Both kNN rows must classify the fresh test videos (24 readable, chance 25%)."""
    store, test_store, run = separable
    report = tmp_path / "report"
    code = main(
        [
            "-q",
            "eval",
            "--train",
            str(store),
            "--test",
            str(test_store),
            "--run",
            str(run),
            "--out",
            str(report),
            "--probes",
            "knn",
            "scale_knn",
            "--seeds",
            "0",
            "--baseline-cache",
            str(tmp_path / "baselines"),
            "--no-progress",
            "--set",
            "knn_k=5",
        ]
    )
    assert code == 0
    assert "SCALE_kNN" in capsys.readouterr().out
    results = json.loads((report / "results.json").read_text())
    assert results["config"]["knn_k"] == 5  # --set reached the run
    assert results["num_test_videos"] == 24
    for row in ("knn", "scale_knn"):
        assert results["probes"][row]["mean"]["top1"] >= 90.0, row
    assert [p.name.split("-")[0] for p in (tmp_path / "baselines").iterdir()] == ["knn"]


def test_embed_and_search_find_neighbours_of_the_same_class(separable, tmp_path, capsys):
    store, _, run = separable
    emb = tmp_path / "emb"
    embed = ["-q", "embed", "--store", str(store), "--run", str(run), "--out", str(emb)]
    assert main([*embed, "--no-progress"]) == 0
    capsys.readouterr()
    search = ["search", "--store", str(store), "--embeddings", str(emb)]
    assert main([*search, "--query", "videos/vid007", "-k", "3"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == ["query", "videos/vid007"]
    assert [line[0] for line in lines[1:]] == ["1", "2", "3"]  # -k 3: three neighbours
    neighbours = [int(line[2].removeprefix("videos/vid")) for line in lines[1:]]
    assert 7 not in neighbours and all(i % 4 == 7 % 4 for i in neighbours)  # vid007 is "throw"


# ------------------------------------------------------------------ one override path


def printed_config(capsys, argv: list[str]) -> str:
    """What `scalevid ARGV --print-config` prints (it must exit 0 and do no work)."""
    capsys.readouterr()
    assert main([*argv, "--print-config"]) == 0
    return capsys.readouterr().out


def one_line_error(capsys, argv: list[str]) -> str:
    """The error of a command that must fail as a user error: exit 2 and one line on stderr."""
    capsys.readouterr()
    assert main(["-q", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_set_reaches_nested_keys_of_train_and_eval(tmp_path, capsys, monkeypatch):
    import scalevid.train

    seen = {}
    monkeypatch.setattr(scalevid.train, "train", lambda c, resume: seen.update(c=c) or "run")
    argv = ["train", "--store", "s", "--out", "r", "--epochs", "3"]
    sets = ["--set", "model.hidden=64", "--set", "model.heads=4", "--set", "lr=1e-3"]
    assert main([*argv, *sets, "--set", "epochs=5"]) == 0
    config = seen["c"]
    assert (config.model.hidden, config.model.heads, config.lr) == (64, 4, 1e-3)
    assert config.epochs == 5  # --set wins over the flag
    assert config.model.depth == TrainConfig().model.depth  # the rest untouched

    out = printed_config(capsys, ["eval", "--set", "finetune.batch_size=32", "--set", "seeds=7"])
    printed = yaml.safe_load(out)
    assert printed["finetune"]["batch_size"] == 32 and printed["seeds"] == [7]
    default = EvalConfig()
    assert printed["finetune"]["lr"] == default.finetune.lr
    assert printed["attentive"] == dataclasses.asdict(default.attentive)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("model.hiden=3", ["'hiden'", "'model'"]),  # unknown key: named with where it is
        ("frobnicate=1", ["'frobnicate'"]),
        ("model.hidden=wide", ["model.hidden", "an integer", "'wide'"]),  # wrong type
        ("lr=fast", ["lr", "a number"]),
        ("precision=fp16", ["precision", "auto, fp32, bf16"]),  # not in the Literal
        ("model.set_head=[1, x]", ["model.set_head", "a list"]),
        ("epochs", ["KEY=VALUE"]),
    ],
)
def test_a_bad_set_is_a_one_line_error_naming_the_key(capsys, setting, named):
    error = one_line_error(capsys, ["train", "--store", "s", "--out", "r", "--set", setting])
    for word in named:
        assert word in error, (word, error)


def test_bad_sets_fail_for_every_stage_before_any_work(capsys, tmp_path):
    for argv in (
        ["extract", "--list", "l", "--out", "o", "--set", "num_clips=many"],
        ["eval", "--train", "a", "--test", "b", "--out", "o", "--set", "finetune.bogus=1"],
        ["demo", "--out", str(tmp_path / "d"), "--set", "dataset.train=1.5"],
        ["make-dataset", "--out", str(tmp_path / "m"), "--set", "codec=divx"],
    ):
        error = one_line_error(capsys, argv)
        assert argv[-1].partition("=")[0].split(".")[-1] in error, error
    assert list(tmp_path.iterdir()) == []


ROUND_TRIPS = [
    ["train", "--store", "s", "--out", "r", "--set", "model.hidden=64", "--set", "model.heads=4"],
    ["extract", "--list", "l", "--out", "o", "--no-compile", "--set", "flip=false"],
    ["eval", "--probes", "knn", "linear", "--set", "finetune.head=set", "--set", "low_shot=0.5"],
    ["demo", "--quick", "--epochs", "2", "--set", "ceiling.cs=[0.1, 1.0]"],
    ["make-dataset", "--quick", "--task", "count", "--set", "motions=[sweep, orbit]"],
]


@pytest.mark.parametrize("argv", ROUND_TRIPS, ids=lambda argv: argv[0])
def test_print_config_round_trips_through_config(tmp_path, capsys, argv):
    """The printed YAML, given back as --config (and nothing else), prints the same config."""
    out = printed_config(capsys, argv)
    path = tmp_path / "printed.yaml"
    path.write_text(out)
    again = printed_config(capsys, [argv[0], *(["--quick"] if "--quick" in argv else [])])
    assert again != out  # the settings above are not all defaults ...
    assert printed_config(capsys, [argv[0], "--config", str(path)]) == out  # ... and survive


def test_print_config_does_no_work(tmp_path, capsys, monkeypatch):
    import scalevid.extract

    monkeypatch.setattr(scalevid.extract, "extract", lambda c: pytest.fail("extract ran"))
    out = printed_config(capsys, ["extract", "--list", "l", "--out", str(tmp_path / "s")])
    assert yaml.safe_load(out)["out"] == str(tmp_path / "s")
    assert not (tmp_path / "s").exists()
    # a required path left out is printed as null: the file still needs it
    assert yaml.safe_load(printed_config(capsys, ["train"]))["store"] is None
    assert "--store required" in one_line_error(capsys, ["train", "--out", "r"])


def test_make_dataset_demo_is_the_design_the_demo_module_declares(capsys, monkeypatch):
    import scalevid.demo.pipeline
    from scalevid.config import config_yaml

    demo = scalevid.demo.pipeline.DEMO_DATASET
    assert printed_config(capsys, ["make-dataset", "--demo"]) == config_yaml(demo)
    # read from the demo module when the command runs, not copied: a new design follows
    changed = dataclasses.replace(demo, frames=demo.frames + 16, seed=9)
    monkeypatch.setattr(scalevid.demo.pipeline, "DEMO_DATASET", changed)
    printed = yaml.safe_load(printed_config(capsys, ["make-dataset", "--demo", "--test", "6"]))
    assert (printed["frames"], printed["seed"], printed["test"]) == (demo.frames + 16, 9, 6)
    assert printed["task"] == demo.task and printed["look"] == demo.look


@pytest.mark.parametrize(
    ("given", "said"),
    [([], True), (["--split", "train"], False), (["--split", "test"], False)],
)
def test_extract_says_when_it_samples_as_for_train_because_no_split_was_given(
    monkeypatch, capsys, given, said
):
    import scalevid.extract

    class Report:
        failed = 0

        def summary(self):
            return "ok"

    monkeypatch.setattr(scalevid.extract, "extract", lambda c: Report())
    capsys.readouterr()
    assert main(["extract", "--list", "l", "--out", "o", *given]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "--split" in line]
    assert len(lines) == int(said)
    if said:
        assert f"{ExtractConfig.num_clips} random clips per video" in lines[0]
        assert "--split val or --split test" in lines[0]


def test_import_prints_where_the_boxes_came_from(tmp_path, capsys):
    feats, listing = write_npy_folder(tmp_path, videos=8)
    np.save(feats / "vid001.timestamps.npy", np.arange(12.0).reshape(6, 2))
    capsys.readouterr()
    assert import_npy(feats, listing, tmp_path / "store") == 1  # vid005 is broken
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("boxes: 0 from <id>.boxes.npy, 1 from <id>.timestamps.npy, 6 uniform")


def help_text(argv: list[str], capsys) -> str:
    """`scalevid ARGV --help` with its line breaks undone."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_defaults_and_choices_read_from_the_dataclasses(capsys):
    train = help_text(["train"], capsys)
    defaults = config_dict(TrainConfig)
    for flag, key in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr")):
        # the flag's own entry: up to the next option, its default as the dataclass has it
        entry = train.split(f" {flag} {key.upper()} ")[1].split(" --")[0]
        assert entry.endswith(f"default: {defaults[key]})") or entry == f"default: {defaults[key]}"
    num_views = TrainConfig().pretext.num_views
    assert f"clips per set (two disjoint sets per video) (default: {num_views})" in train
    assert "--compile, --no-compile torch.compile the model (default: --no-compile)" in train

    extract = help_text(["extract"], capsys)
    assert f"train clips per video per pass (default: {ExtractConfig.num_clips})" in extract
    assert "{" + ",".join(typing.get_args(Format)) + "}" in extract
    assert f"(default: {ExtractConfig.compile})" in extract

    demo = help_text(["demo"], capsys)
    full, quick = DemoConfig(), DemoConfig.quick()
    assert f"(default: {full.epochs}; with --quick: {quick.epochs})" in demo
    assert f"default: {full.dataset.train}; with --quick: {quick.dataset.train}" in demo


def _subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by its command line ("store check"), nested ones included."""
    found: dict[str, argparse.ArgumentParser] = {}
    todo = [("", build_parser())]
    while todo:
        name, parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, sub in action.choices.items():
                    found[f"{name} {child}".strip()] = sub
                    todo.append((f"{name} {child}".strip(), sub))
    return found


def test_every_subcommand_says_what_it_does_and_each_option_its_meaning_and_default():
    parsers = _subcommand_parsers()
    assert {"embed", "search", "import", "store check", "store info", "store upgrade"} <= set(
        parsers
    )
    for name, parser in parsers.items():
        assert parser.description, name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = (name, action.option_strings or action.dest)
            meaning = (action.help or "").split("(default")[0].strip()
            assert meaning and not meaning.startswith("default:"), where
            unset = any(action.default is v for v in (None, False, argparse.SUPPRESS))
            if not unset and action.default != []:
                assert "default:" in action.help, where


def test_defaults_of_commands_without_a_config_are_read_from_their_functions(capsys):
    from scalevid.eval.embed import search
    from scalevid.store.importer import import_npy_folder

    k = inspect.signature(search).parameters["k"].default
    assert f"-k K neighbours to list (the query not counted) (default: {k})" in help_text(
        ["search"], capsys
    )
    name = inspect.signature(import_npy_folder).parameters["dataset_name"].default
    assert f"dataset name for the manifest (default: {name})" in help_text(["import"], capsys)
    assert "default: --progress" in help_text(["store", "check"], capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "train", "--store", "s", "--out", "r"],
        ["train", "--store", "s", "--out", "r", "-q"],
        ["store", "info", "s", "--quiet"],
        ["-q", "store", "check", "s"],
        ["embed", "--store", "s", "--run", "r", "--out", "o", "-q"],
    ],
)
def test_global_options_work_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose is False
    unquiet = [a for a in argv if a not in ("-q", "--quiet")]
    assert build_parser().parse_args(unquiet).quiet is False


def test_quiet_after_the_subcommand_silences_the_info_lines(monkeypatch, capsys):
    import scalevid.train

    monkeypatch.setattr(
        scalevid.train, "train", lambda c, resume: logging.getLogger("scalevid").info("hi")
    )
    assert main(["train", "--store", "s", "--out", "r"]) == 0
    assert "hi" in capsys.readouterr().err
    assert main(["train", "--store", "s", "--out", "r", "-q"]) == 0
    assert "hi" not in capsys.readouterr().err


def _subcommand_options() -> dict[str, dict[str, argparse.Action]]:
    """Every subcommand's options: {command: {option string: action}}."""
    found: dict[str, dict[str, argparse.Action]] = {}
    todo = [("", build_parser())]
    while todo:
        name, parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {n}".strip(), p) for n, p in action.choices.items()]
            for option in action.option_strings:
                found.setdefault(name, {})[option] = action
    return found


def test_one_spelling_per_switch_across_subcommands():
    """`--no-X` always comes with `--X` (one switch), and an option means one kind of thing
    (a switch, a value, a list) in every subcommand that has it."""
    kinds: dict[str, set[tuple[str, object]]] = {}
    for command, options in _subcommand_options().items():
        for option, action in options.items():
            if option.startswith("--no-"):
                assert "--" + option.removeprefix("--no-") in action.option_strings, (
                    command,
                    option,
                )
            kinds.setdefault(option, set()).add((type(action).__name__, action.nargs))
    assert {"--compile", "--progress", "--verify"} <= set(kinds)
    mixed = {option: kind for option, kind in kinds.items() if len(kind) > 1}
    assert mixed == {}


def test_only_user_errors_become_one_line_messages(capsys, monkeypatch):
    """A wrong setting is the user's to fix: one line, exit 2. An exception from inside a stage
    that no check raised is a bug: it keeps its traceback (here: main raises it)."""
    error = one_line_error(capsys, ["train", "--store", "s", "--out", "r", "--set", "epochs=0"])
    assert "epochs must be a positive integer" in error  # TrainConfig's own check
    import scalevid.train

    def broken(config, resume):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(scalevid.train, "train", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["-q", "train", "--store", "s", "--out", "r"])
    monkeypatch.setattr(scalevid.train, "train", lambda c, resume: [][1])
    with pytest.raises(IndexError):
        main(["-q", "train", "--store", "s", "--out", "r"])


def test_every_command_runs_with_subnormal_floats_flushed(tmp_path):
    """main() flushes subnormal floats to zero before a command starts (hardware.flush_denormals:
    on some CPUs they made the probes' fp32 training several times slower)."""
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal floats")
    feats, listing = write_npy_folder(tmp_path)
    assert subnormal_product() > 0
    assert import_npy(feats, listing, tmp_path / "store") == 1  # its one broken file recorded
    assert subnormal_product() == 0.0
