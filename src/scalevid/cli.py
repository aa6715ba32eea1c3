"""The `scalevid` command line: one subcommand per pipeline stage.

`main(argv)` is callable from tests and returns the exit code. Logging is configured here, once.

Every subcommand with a stage config (extract, train, eval, make-dataset, demo) builds it the
same way, through `scalevid.config.build_config`: dataclass defaults < `--config` YAML file <
named flags < `--set KEY=VALUE` (any field, dotted for nested configs, checked against its
annotation); `--print-config` prints the result as YAML and stops. The named flags, a few per
subcommand for the settings typed daily, are rows of one table per subcommand (`Flag`: the flag
and the dotted key it sets); their types, choices and defaults are read from the dataclass, so
nothing here restates them. A flag the user did not give is None and changes nothing. Switches
are spelled `--name` / `--no-name` throughout.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from scalevid.config import (
    ConfigError,
    Layer,
    build_config,
    config_yaml,
    field_default,
    field_type,
    literal_choices,
    parse_settings,
    read_config_file,
)

logger = logging.getLogger("scalevid")


OTHER_FEATURES_HELP = (
    "evaluate even when the stores (or the run's training store) come from different "
    "backbones or preprocessing; by default that is refused"
)

VERIFY_HELP = (
    "verify the store's checksums on open (--no-verify: for very large stores that `scalevid "
    "store check` verifies on a schedule, see docs/reliability.md)"
)
TIMEOUT_HELP = "seconds a torchrun rank waits for the others before the job stops"

# The input checks of eval, embed and search (scalevid/eval/checks.py, embed.py) raise plain
# ValueErrors, so for those subcommands a ValueError is still taken for the user's mistake.
EVAL_INPUT_ERRORS = (ValueError,)


class Flag(NamedTuple):
    """A named flag for one config key (dotted for nested configs).

    Its type, choices and default come from the config dataclass; `help` says what it means.
    `options` replace generated argparse options (a stricter `type`, a `metavar`); `required`
    flags may instead be keys of the `--config` file or `--set`; `switch` gives the values of
    `--name` / `--no-name` for a field that is not a bool; `unset` says what a None default
    stands for.
    """

    flag: str  # "--num-views"
    key: str  # "pretext.num_views"
    help: str = ""
    options: dict[str, Any] = {}
    required: bool = False
    switch: tuple[Any, Any] | None = None
    unset: str | Callable[[], str] = ""


class _Switch(argparse.Action):
    """`--name` sets `dest` to values[0], `--no-name` to values[1]."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        values: tuple[Any, Any] = (True, False),
        **kwargs: Any,
    ) -> None:
        name = option_strings[0]
        super().__init__([name, "--no-" + name.removeprefix("--")], dest, nargs=0, **kwargs)
        self.values = values

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        off = bool(option_string and option_string.startswith("--no-"))
        setattr(namespace, self.dest, self.values[off])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _add_switch(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, default: bool, help: str
) -> None:
    """A `--name` / `--no-name` switch that is not a config field (`--progress` of import)."""
    dest = flag.removeprefix("--").replace("-", "_")
    shown = flag if default else "--no-" + flag.removeprefix("--")
    parser.add_argument(
        flag, action=_Switch, dest=dest, default=default, help=f"{help} (default: {shown})"
    )


def _shown(value: Any) -> str:
    """A default as the help text shows it."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)


def _flag_options(cls: type, flag: Flag) -> dict[str, Any]:
    """argparse options for `flag` read from the annotation of its field in `cls`."""
    annotation = field_type(cls, flag.key)
    if flag.switch is not None or annotation is bool or annotation == bool | None:
        return {"action": _Switch, "values": flag.switch or (True, False)}
    options: dict[str, Any] = {}
    element = annotation
    if typing.get_origin(annotation) in (tuple, list):
        element, options["nargs"] = typing.get_args(annotation)[0], "+"
    choices = literal_choices(element)
    if choices is not None:
        return {**options, "choices": choices, "type": type(choices[0])}
    plain = [a for a in typing.get_args(element) if a is not type(None)] or [element]
    if plain[0] in (int, float):
        options["type"] = plain[0]
    return {**options, "metavar": flag.flag.lstrip("-").replace("-", "_").upper()}


def _flag_help(flag: Flag, default: Any, other: tuple[str, Any] | None) -> str:
    """`flag.help` with the field's default (and, with `other`, its default under an option)."""
    if flag.required:
        return f"{flag.help} (required)"
    unset = flag.unset() if callable(flag.unset) else flag.unset
    shown = unset if default is None and unset else _shown(default)
    if flag.switch is not None or isinstance(default, bool):
        values = flag.switch or (True, False)
        if default in values:  # a switch: name the spelling that is the default
            name = flag.flag.removeprefix("--")
            shown = flag.flag if default == values[0] else f"--no-{name}"
    if other is not None:
        alternative = field_default(other[1], flag.key)
        if alternative != default:
            shown = f"{shown}; with {other[0]}: {_shown(alternative)}"
    return f"{flag.help} (default: {shown})" if flag.help else f"default: {shown}"


def _add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: Sequence[Flag],
    base: type | Any,
    *,
    other: tuple[str, Any] | None = None,
) -> None:
    """Add `flags` for config `base` (a dataclass config class, or an instance whose values are
    the defaults shown); `other` = (option, config) also shows the defaults under an option."""
    cls = base if isinstance(base, type) else type(base)
    for flag in flags:
        options = {**_flag_options(cls, flag), **flag.options}
        options["help"] = _flag_help(flag, field_default(base, flag.key), other)
        if "choices" in options and "metavar" in options:  # argparse would not list them
            options["help"] += f"; from {' '.join(map(str, options['choices']))}"
        parser.add_argument(flag.flag, dest=flag.key, default=None, **options)


def _add_config_args(parser: argparse.ArgumentParser, cls_name: str, example: str) -> None:
    """`--config`, `--set` and `--print-config`, the same for every stage config; `example` is
    a `KEY=VALUE` for the help."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML file of {cls_name} keys (nested configs as sections); flags override it",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"set any {cls_name} key, dotted for nested ones (e.g. --set {example}); the "
        "value is read as YAML; repeatable; overrides the file and the flags",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the merged config as YAML (a --config file) and exit",
    )


def _layers(args: argparse.Namespace, cls: type, flags: Sequence[Flag]) -> list[Layer]:
    """The layers over `cls`'s defaults: the `--config` file, the named flags, `--set`.

    A required flag may instead be a key of the file or of `--set`, else it is a ConfigError
    naming both ways to give it; `--print-config` shows it as null (a file that still needs it).
    """
    from_file = read_config_file(args.config) if args.config else {}
    given = {f.key: getattr(args, f.key) for f in flags if getattr(args, f.key) is not None}
    settings = parse_settings(cls, args.settings)
    missing = [
        f
        for f in flags
        if f.required
        and f.key not in given
        and f.key not in settings
        and from_file.get(f.key) in (None, "")
    ]
    if missing and not args.print_config:
        raise ConfigError(
            f"{' and '.join(f.flag for f in missing)} required (on the command line, or as "
            f"{' and '.join(f'`{f.key}:`' for f in missing)} in a --config file)"
        )
    layers: list[Layer] = [("--print-config", {f.key: None for f in missing})]
    if args.config:
        layers.append((str(args.config), from_file))
    return [*layers, ("flags", given), ("--set", settings)]


def _stage_config(args: argparse.Namespace, base: type | Any, flags: Sequence[Flag]) -> Any:
    """The stage config: `base` (a dataclass config class or instance) under `_layers`."""
    cls = base if isinstance(base, type) else type(base)
    return build_config(base, *_layers(args, cls, flags))


def _need(args: argparse.Namespace, command: str, names: Sequence[str]) -> None:
    """Paths a command needs for its work but not for `--print-config`: a ConfigError if not
    given."""
    missing = [f"--{name}" for name in names if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"{command} needs {' and '.join(missing)}")


def _printed(args: argparse.Namespace, config: Any) -> bool:
    """With `--print-config`: print `config` as YAML and say so (the command then stops)."""
    if args.print_config:
        print(config_yaml(config), end="")
    return bool(args.print_config)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _preset_default(name: str) -> str:
    """What a None extraction setting falls back to: each preset's value of `name`."""
    from scalevid.data.clips import SamplingConfig
    from scalevid.extract import ExtractConfig

    presets = literal_choices(field_type(ExtractConfig, "preset")) or ()
    values = ", ".join(f"{p} {getattr(SamplingConfig.preset(p), name)}" for p in presets)
    return f"the preset's: {values}"


# --------------------------------------------------------------------------- flag tables

TRAIN_FLAGS = (
    Flag("--store", "store", "feature store folder (training split)", required=True),
    Flag("--out", "out", "run folder to write", required=True),
    Flag("--epochs", "epochs"),
    Flag("--batch-size", "batch_size", "videos per step (global across processes)"),
    Flag("--lr", "lr"),
    Flag("--seed", "seed"),
    Flag("--device", "device", "auto, cpu, cuda, cuda:1 ..."),
    Flag("--precision", "precision"),
    Flag("--num-views", "pretext.num_views", "clips per set (two disjoint sets per video)"),
    Flag("--mask-ratio", "pretext.mask_ratio"),
    Flag("--mcm-weight", "pretext.mcm_weight", "0 switches masked clip modelling off"),
    Flag("--set-weight", "pretext.set_weight", "0 switches the SET loss off"),
    Flag("--log-every", "log_every", "steps between log lines"),
    Flag("--checkpoint-every", "checkpoint_every", "steps between checkpoints (0: epoch)"),
    Flag("--tensorboard", "tensorboard", "also log to RUN/tensorboard"),
    Flag("--compile", "compile", "torch.compile the model"),
    Flag("--progress", "progress", "progress bar"),
    Flag("--verify", "verify_store", VERIFY_HELP),
    Flag("--dist-timeout", "dist_timeout", TIMEOUT_HELP),
)
EXTRACT_FLAGS = (
    Flag("--list", "list", "video list or folder (see --format)", required=True),
    Flag("--out", "out", "store folder to write", required=True),
    Flag("--root", "root", "folder that relative list paths are under"),
    Flag("--format", "format", "the list's format"),
    Flag("--split", "split"),
    Flag("--fold", "fold", "UCF101/HMDB51 split number"),
    Flag("--sampling", "sampling", "override the split's (auto: train for train, else test)"),
    Flag("--preset", "preset", "ssv2: stride 2, no flip, 2x3 test views"),
    Flag(
        "--backbone",
        "backbone",
        "i3d, videomae-base, videomae-large, videomae-base-k400, torchscript, module",
    ),
    Flag("--weights", "weights", "local weights file/folder, hub id, or pkg.mod:function"),
    Flag("--num-clips", "num_clips", "train clips per video per pass"),
    Flag("--passes", "passes", "augmented passes per train video"),
    Flag("--frames", "frames", "frames per clip", unset="the backbone's"),
    Flag(
        "--stride", "stride", "frame stride within a clip", unset=partial(_preset_default, "stride")
    ),
    Flag("--crop-size", "crop_size", "crop side", unset="the backbone's input size"),
    Flag(
        "--temporal-views",
        "temporal_views",
        "test views in time",
        unset=partial(_preset_default, "temporal_views"),
    ),
    Flag("--spatial-views", "spatial_views", "test crops along the long side"),
    Flag("--colour-jitter", "colour_jitter", "random colour jitter on train clips"),
    Flag("--batch-size", "batch_size", "clips per backbone call"),
    Flag("--workers", "workers", "decoding processes"),
    Flag("--device", "device"),
    Flag("--precision", "precision"),
    Flag(
        "--compile",
        "compile",
        "torch.compile the backbone once (needs a C++ compiler on CPU); auto: only for large "
        "CPU jobs in fp32, where it pays (docs/performance.md)",
        switch=("on", "off"),
    ),
    Flag("--seed", "seed"),
    Flag("--shard-size", "shard_size", "videos per shard"),
    Flag("--limit", "limit", "only the first N videos", unset="all"),
    Flag("--progress", "progress", "progress bar"),
    Flag("--dist-timeout", "dist_timeout", TIMEOUT_HELP),
)

EVAL_FLAGS = (
    Flag("--probes", "probes"),
    Flag("--seeds", "seeds"),
    Flag("--low-shot", "low_shot", "fraction of train labels per class", unset="all labels"),
    Flag("--val-fraction", "val_fraction"),
    Flag("--device", "device"),
    Flag("--progress", "progress", "progress bar"),
)

MAKE_DATASET_FLAGS = (
    Flag("--task", "task"),
    *(Flag(f"--{name}", name, f"videos in the {name} split") for name in ("train", "val", "test")),
    Flag("--frames", "frames", "frames per video"),
    Flag("--fps", "fps"),
    Flag("--height", "height"),
    Flag("--width", "width"),
    Flag("--seed", "seed"),
    Flag("--codec", "codec"),
)

DEMO_FLAGS = (
    Flag(
        "--data-seed",
        "dataset.seed",
        "draw a fresh dataset of the same design",
        {"type": _non_negative_int, "metavar": "N"},
    ),
)
DEMO_SIZE_FLAGS = (  # shown as one group in --help
    Flag("--train-videos", "dataset.train", "", {"type": _positive_int, "metavar": "N"}),
    Flag("--test-videos", "dataset.test", "", {"type": _positive_int, "metavar": "N"}),
    Flag("--epochs", "epochs", "SCALE pretraining", {"type": _positive_int, "metavar": "N"}),
    Flag("--batch-size", "batch_size", "videos per step", {"type": _positive_int, "metavar": "N"}),
    Flag("--seeds", "seeds", "probe seeds", {"metavar": "S"}),
    Flag("--probes", "probes", "probe rows", {"metavar": "PROBE"}),
)


# --------------------------------------------------------------------------- subcommands


def _train(args: argparse.Namespace) -> int:
    from scalevid.train import TrainConfig, train

    config = _stage_config(args, TrainConfig, TRAIN_FLAGS)
    if _printed(args, config):
        return 0
    run = train(config, resume=args.resume)
    print(f"run folder: {run}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from scalevid.train import TrainConfig

    p = sub.add_parser(
        "train",
        help="pretrain SCALE on a feature store",
        description="Pretrain the SCALE predictor on a feature store. Defaults come from "
        "TrainConfig (nested: model, pretext); --config (YAML) overrides them, flags override "
        "the file and --set overrides everything.",
    )
    _add_config_args(p, "TrainConfig", "model.hidden=128")
    _add_flags(p, TRAIN_FLAGS, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    p.set_defaults(handler=_train)


def _import(args: argparse.Namespace) -> int:
    from scalevid.store.importer import import_npy_folder

    report = import_npy_folder(
        features_dir=args.features,
        list_file=args.list,
        out=args.out,
        root=args.root,
        dataset_name=args.dataset,
        backbone=args.backbone,
        clip_frames=args.clip_frames,
        clip_stride=args.clip_stride,
        progress=args.progress,
    )
    print(report.summary())
    return 1 if report.failed else 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="build a store from per-video .npy features and a `path label` list",
        description="Build a feature store from a folder of per-video .npy arrays of shape "
        "(clips, D) and a `path label` list. Boxes come from <id>.timestamps.npy when present, "
        "else uniform temporal positions over the full frame. Re-running resumes.",
    )
    p.add_argument("--features", required=True, help="folder of <video id>.npy arrays")
    p.add_argument("--list", required=True, help="`path label` list (space or comma separated)")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--root", help="folder that relative list paths are under")
    p.add_argument("--dataset", default="imported", help="dataset name for the manifest")
    p.add_argument("--backbone", default="imported", help="backbone name for the manifest")
    p.add_argument("--clip-frames", type=int)
    p.add_argument("--clip-stride", type=int)
    _add_switch(p, "--progress", True, "progress bar")
    p.set_defaults(handler=_import)


def _extract(args: argparse.Namespace) -> int:
    from scalevid.extract import ExtractConfig, extract

    config = _stage_config(args, ExtractConfig, EXTRACT_FLAGS)
    if _printed(args, config):
        return 0
    report = extract(config)
    print(report.summary())
    return 1 if report.failed else 0


def _add_extract(sub: argparse._SubParsersAction) -> None:
    from scalevid.extract import ExtractConfig

    p = sub.add_parser(
        "extract",
        help="decode videos, run a frozen backbone on their clips, write a feature store",
        description="Videos -> clips -> frozen backbone -> feature store. Train split: "
        "--num-clips random clips per video (random start, scale and crop, flip); val/test: "
        "T x S views. Re-running skips finished videos; unreadable videos are recorded in "
        "STORE/failures.jsonl and the exit code is 1 if any failed. Under torchrun each rank "
        "takes its share of the list. Defaults come from ExtractConfig; --config (YAML) "
        "overrides them, flags override the file and --set overrides everything.",
    )
    _add_config_args(p, "ExtractConfig", "flip=false")
    _add_flags(p, EXTRACT_FLAGS, ExtractConfig)
    p.set_defaults(handler=_extract)


def _store_check(args: argparse.Namespace) -> int:
    from scalevid.store import check_store

    problems = check_store(args.store, progress=args.progress)
    for problem in problems:
        print(f"{problem.path}: {problem.message}")
    print(f"{args.store}: {len(problems)} problem(s)" if problems else f"{args.store}: OK")
    return 1 if problems else 0


def _store_info(args: argparse.Namespace) -> int:
    from scalevid.store import FeatureStore, format_store_summary

    print(format_store_summary(FeatureStore.open(args.store, check_values=False)))
    return 0


def _store_upgrade(args: argparse.Namespace) -> int:
    from scalevid.store import upgrade_store

    manifest = upgrade_store(args.store)
    print(
        f"{args.store}: manifest.json lists {len(manifest.shards or {})} shard(s) holding "
        f"{manifest.num_videos} videos (format {manifest.format_version})"
    )
    return 0


def _add_store(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect and verify feature stores")
    store_sub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    check = store_sub.add_parser(
        "check", help="verify every shard (shapes, checksums, values) and list all problems"
    )
    check.add_argument("store")
    _add_switch(check, "--progress", True, "progress bar")
    check.set_defaults(handler=_store_check)
    info = store_sub.add_parser("info", help="summarise a store")
    info.add_argument("store")
    info.set_defaults(handler=_store_info)
    upgrade = store_sub.add_parser(
        "upgrade",
        help="record the shard list in the manifest of a store written by an older scalevid",
    )
    upgrade.add_argument("store")
    upgrade.set_defaults(handler=_store_upgrade)


def _eval(args: argparse.Namespace) -> int:
    from scalevid.eval.config import EvalConfig
    from scalevid.eval.protocol import evaluate
    from scalevid.eval.report import format_table

    config = _stage_config(args, EvalConfig, EVAL_FLAGS)
    repeated = sorted({p for p in config.probes if list(config.probes).count(p) > 1})
    if repeated:
        raise ConfigError(f"--probes names {', '.join(repeated)} more than once; name each once")
    if _printed(args, config):
        return 0
    _need(args, "eval", ("train", "test", "out"))
    _check_inputs({"train store": args.train, "test store": args.test}, args.run, args)
    results = evaluate(
        train_store=args.train,
        test_store=args.test,
        run=args.run,
        config=config,
        out=args.out,
        baseline_cache=args.baseline_cache,
        verify_checksums=args.verify,
    )
    print(format_table(results))
    print(f"results: {args.out}/results.json, {args.out}/results.md")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from scalevid.eval.config import EvalConfig

    p = sub.add_parser(
        "eval",
        help="probes on raw features and on SCALE: kNN, linear, MLP, transformer, fine-tuning",
        description="Evaluate with frozen-backbone probes. Hyperparameters are chosen on a "
        "class-balanced validation split of TRAIN (never on TEST), the chosen config is "
        "retrained on all of TRAIN and scored once on TEST, for every seed. Writes "
        "results.json, results.md and plots into OUT. Defaults come from EvalConfig; "
        "--config (YAML) overrides them, flags override the file and --set overrides "
        "everything (e.g. --set finetune.batch_size=32).",
    )
    p.add_argument("--train", help="train feature store (K clips per video) (required)")
    p.add_argument("--test", help="test feature store (T x S views per video) (required)")
    p.add_argument("--run", help="SCALE run folder; without it only the baseline rows run")
    p.add_argument("--out", help="report folder (required)")
    _add_config_args(p, "EvalConfig", "finetune.batch_size=32")
    _add_flags(p, EVAL_FLAGS, EvalConfig)
    p.add_argument(
        "--baseline-cache",
        metavar="DIR",
        help="save the baseline rows here and reuse them when the stores and settings match "
        "(evaluating several SCALE runs on the same stores trains the baselines once)",
    )
    _add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_eval, user_errors=EVAL_INPUT_ERRORS)


def _check_inputs(stores: dict[str, str], run: str | None, args: argparse.Namespace) -> None:
    """Before any work: features of one kind throughout (stores and the run's training store)."""
    from scalevid.eval.identity import check_same_features

    check_same_features(stores, run, allow=args.allow_other_features)


def _embed(args: argparse.Namespace) -> int:
    from scalevid.eval.embed import export_embeddings

    _check_inputs({"store": args.store}, args.run, args)
    vectors, ids = export_embeddings(
        store=args.store,
        run=args.run,
        out=args.out,
        device=args.device or "auto",
        progress=args.progress,
        verify_checksums=args.verify,
    )
    print(f"wrote {vectors} and {ids}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from scalevid.eval.embed import search

    if not (args.run or args.embeddings):
        raise ConfigError("search needs --run or --embeddings (a `scalevid embed` folder)")
    if args.k < 1:
        raise ConfigError(f"-k {args.k}: the number of videos to list must be at least 1")
    _check_inputs({"store": args.store}, args.run, args)
    hits = search(
        store=args.store,
        query=args.query,
        k=args.k,
        run=args.run,
        embeddings=args.embeddings,
        device=args.device or "auto",
        verify_checksums=args.verify,
    )
    for rank, (video_id, path, similarity) in enumerate(hits):
        print(f"{rank:3d}  {similarity:+.4f}  {video_id}  {path}")
    return 0


def _add_embed_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="export per-video SCALE embeddings (embeddings.npy + video_ids.txt)"
    )
    p.add_argument("--store", required=True)
    p.add_argument("--run", required=True, help="SCALE run folder")
    p.add_argument("--out", required=True, help="folder for embeddings.npy and video_ids.txt")
    p.add_argument("--device")
    _add_switch(p, "--progress", True, "progress bar")
    _add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_embed, user_errors=EVAL_INPUT_ERRORS)
    p = sub.add_parser("search", help="the videos nearest to a query video")
    p.add_argument("--store", required=True)
    p.add_argument("--query", required=True, help="video id of the query (see video_ids.txt)")
    p.add_argument("--run", help="SCALE run folder")
    p.add_argument("--embeddings", help="a `scalevid embed` folder (faster than --run)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--device")
    _add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_search, user_errors=EVAL_INPUT_ERRORS)


def _make_dataset(args: argparse.Namespace) -> int:
    from scalevid.demo.dataset import make_dataset
    from scalevid.demo.synthetic import DatasetConfig, quick_config

    layers = _layers(args, DatasetConfig, MAKE_DATASET_FLAGS)
    if args.quick:  # the quick design of the task the layers name (the last one wins)
        task = next((v["task"] for _, v in reversed(layers) if "task" in v), "order")
        config = build_config(quick_config(task), *layers)
    else:
        config = build_config(DatasetConfig, *layers)
    if _printed(args, config):
        return 0
    _need(args, "make-dataset", ("out",))
    info = make_dataset(args.out, config, progress=args.progress, workers=args.workers)
    print(
        f"{info.root}: {sum(info.counts.values())} videos ({info.written} written, "
        f"{info.skipped} already there) in {info.seconds:.1f} s; classes: {', '.join(info.classes)}"
    )
    print(f"lists: {', '.join(str(info.list_file(s)) for s in ('train', 'val', 'test'))}")
    return 0


def _add_make_dataset(sub: argparse._SubParsersAction) -> None:
    from scalevid.demo.synthetic import DatasetConfig, quick_config

    p = sub.add_parser(
        "make-dataset",
        help="generate labelled synthetic videos whose label needs the whole video",
        description="Write synthetic mp4s whose label depends on the whole video (the order of "
        "two motions, or how many times an event happens), with random backgrounds, colours, "
        "distractors and camera jitter; deterministic by seed; train/val/test lists in the "
        "`path label` format. Re-running completes or reuses the folder. Defaults come from "
        "DatasetConfig (or --quick's); --config (YAML) overrides them, flags override the file "
        "and --set overrides everything.",
    )
    p.add_argument("--out", help="dataset folder to write (required)")
    p.add_argument("--quick", action="store_true", help="short videos for 8-frame clips")
    _add_config_args(p, "DatasetConfig", "motions=[sweep,orbit]")
    _add_flags(p, MAKE_DATASET_FLAGS, DatasetConfig, other=("--quick", quick_config()))
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default: 1)")
    _add_switch(p, "--progress", True, "progress bar")
    p.set_defaults(handler=_make_dataset)


def _demo(args: argparse.Namespace) -> int:
    from scalevid.demo.pipeline import DemoConfig, run_demo

    base = DemoConfig.quick() if args.quick else DemoConfig()
    config = _stage_config(args, base, DEMO_FLAGS + DEMO_SIZE_FLAGS)
    if _printed(args, config):
        return 0
    seed = config.data_seed
    out = args.out or ("scalevid-demo" if not seed else f"scalevid-demo-seed{seed}")
    run_demo(
        out,
        config=config,
        weights=args.weights,
        progress=args.progress,
        ceiling_only=args.ceiling_only,
    )
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from scalevid.demo.pipeline import DemoConfig

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a generated dataset: videos -> I3D -> SCALE -> probes",
        description="Generate labelled videos whose label needs the whole video, extract "
        "Kinetics-400 I3D clip features, pretrain SCALE, run the probes, and write a report "
        "(table, plots, timings) into OUT/report/report.md. Defaults come from DemoConfig "
        "(or --quick's); --config (YAML) overrides them, flags override the file and --set "
        "overrides everything (e.g. --set dataset.noise_std=2).",
    )
    p.add_argument(
        "--out",
        help="output folder (default: scalevid-demo, or scalevid-demo-seedN with --data-seed N)",
    )
    p.add_argument("--quick", action="store_true", help="a ~1 minute version (what CI runs)")
    _add_config_args(p, "DemoConfig", "dataset.noise_std=2")
    quick = ("--quick", DemoConfig.quick())
    _add_flags(p, DEMO_FLAGS, DemoConfig(), other=quick)
    p.add_argument(
        "--ceiling-only",
        action="store_true",
        help="stop after measuring the ceiling on the train features (no SCALE)",
    )
    p.add_argument("--weights", help="local I3D weights (.ckpt or .safetensors)")
    sizes = p.add_argument_group("sizes (defaults: the 5-minute demo, or --quick's)")
    _add_flags(sizes, DEMO_SIZE_FLAGS, DemoConfig(), other=quick)
    _add_switch(p, "--progress", True, "progress bars")
    p.set_defaults(handler=_demo)


def _recipe(args: argparse.Namespace) -> int:
    from scalevid.folders import RESULTS_TABLE
    from scalevid.recipes import load_recipe, plan, run_recipe

    recipe = load_recipe(
        args.recipe,
        tiny=args.tiny,
        overrides=args.overrides,
        only=args.datasets.split(",") if args.datasets else None,
    )
    if args.dry_run:
        print(plan(recipe, Path(args.data_root), Path(args.out)))
        return 0
    run_recipe(recipe, data_root=args.data_root, out=args.out, device=args.device)
    print((Path(args.out) / recipe.name / RESULTS_TABLE).read_text())
    return 0


def _add_recipe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recipe",
        help="run a paper recipe (recipes/*.yaml): extract, pretrain, probes, combined table",
        description="Run a paper recipe: extraction once, then SCALE pretraining and the probes "
        "for every sweep point, and a combined table in the paper's shape (recipes/README.md).",
    )
    p.add_argument("recipe", help="a recipe YAML file (recipes/*.yaml)")
    p.add_argument("--data-root", required=True, help="folder holding the datasets")
    p.add_argument("--out", required=True, help="output folder (stores are shared inside it)")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (see recipes.TINY)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="S.KEY=VAL",
        help="override a recipe entry, e.g. train.epochs=10 (repeatable)",
    )
    p.add_argument("--datasets", help="comma-separated dataset keys to run (e.g. LVU tasks)")
    p.add_argument("--device", help="device for every stage (default: auto)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.set_defaults(handler=_recipe)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalevid",
        description="SCALE: long-range video representations from frozen backbones.",
    )
    from scalevid import __version__

    parser.add_argument("--version", action="version", version=f"scalevid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_demo,
        _add_make_dataset,
        _add_extract,
        _add_import,
        _add_store,
        _add_train,
        _add_eval,
        _add_embed_search,
        _add_recipe,
    ):
        add(sub)
    return parser


def _user_errors(args: argparse.Namespace) -> tuple[type[BaseException], ...]:
    """The exceptions that are the user's to fix (a setting, a path, a file, a store, a video,
    a device, a diverging run): `main` prints them as one line. Any other exception is a bug in
    scalevid and keeps its traceback. A subcommand may add its own (`user_errors` default)."""
    from scalevid.backbones import BackboneError
    from scalevid.data.decode import VideoError
    from scalevid.data.lists import DatasetError
    from scalevid.demo.synthetic import SyntheticDatasetError
    from scalevid.eval.identity import FeatureIdentityError
    from scalevid.hardware import DeviceError
    from scalevid.store import StoreError
    from scalevid.train.checkpoint import CheckpointError
    from scalevid.train.engine import NonFiniteLossError

    return (
        ConfigError,
        OSError,
        StoreError,
        BackboneError,
        DatasetError,
        VideoError,
        SyntheticDatasetError,
        DeviceError,
        CheckpointError,
        NonFiniteLossError,
        FeatureIdentityError,
        *getattr(args, "user_errors", ()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run `scalevid ARGV`; returns the exit code (2 for a user error, printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        logger.error("interrupted; re-run the same command (with --resume for train) to continue")
        return 130
    except _user_errors(args) as err:
        logger.debug("details", exc_info=True)
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
