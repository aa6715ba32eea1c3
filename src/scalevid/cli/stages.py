"""The subcommands with a stage config: extract, train, eval, make-dataset and demo; each a flag
table of the settings typed daily (`scalevid.cli.options.Flag`) and a handler."""

from __future__ import annotations

import argparse
import logging
from functools import partial
from typing import TYPE_CHECKING

from scalevid.cli.options import (
    EVAL_INPUT_ERRORS,
    OTHER_FEATURES_HELP,
    TIMEOUT_HELP,
    VERIFY_HELP,
    Flag,
    add_config_args,
    add_flags,
    add_switch,
    check_inputs,
    need,
    printed,
    signature_default,
    stage_config,
    stage_layers,
)
from scalevid.config import ConfigError, build_config, field_type, literal_choices

if TYPE_CHECKING:
    from scalevid.demo.synthetic import DatasetConfig

logger = logging.getLogger(__name__)


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


TRAIN_FLAGS = (
    Flag("--store", "store", "feature store folder (training split)", required=True),
    Flag("--out", "out", "run folder to write", required=True),
    Flag("--epochs", "epochs", "passes over the store"),
    Flag("--batch-size", "batch_size", "videos per step (global across processes)"),
    Flag("--lr", "lr", "peak learning rate (warm-up, then cosine decay)"),
    Flag("--seed", "seed", "seed of the initial weights, the video order, clip sets and masks"),
    Flag("--device", "device", "auto, cpu, cuda, cuda:1 ..."),
    Flag("--precision", "precision", "auto: bf16 where the device has bf16 units, else fp32"),
    Flag("--num-views", "pretext.num_views", "clips per set (two disjoint sets per video)"),
    Flag("--mask-ratio", "pretext.mask_ratio", "share of each set's clips masked for MCM"),
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
    Flag(
        "--split",
        "split",
        "the list's split: decides the sampling (train: --num-clips random clips with random "
        "crops and flips; val, test: T x S fixed views) and, for benchmark formats, which part "
        "of the list is read; when not given, train, and the log says so",
    ),
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
    Flag("--device", "device", "auto, cpu, cuda, cuda:1 ..."),
    Flag(
        "--precision",
        "precision",
        "auto: fp16 on CUDA, bf16 on CPUs with bf16 units (i3d), else fp32; fp32: exact features",
    ),
    Flag(
        "--compile",
        "compile",
        "torch.compile the backbone once (needs a C++ compiler on CPU); auto: only for large "
        "CPU jobs in fp32, where it pays (docs/performance.md)",
        switch=("on", "off"),
    ),
    Flag("--seed", "seed", "seed of the train clips' random positions, crops and flips"),
    Flag("--shard-size", "shard_size", "videos per shard"),
    Flag("--limit", "limit", "only the first N videos", unset="all"),
    Flag("--progress", "progress", "progress bar"),
    Flag("--dist-timeout", "dist_timeout", TIMEOUT_HELP),
)


EVAL_FLAGS = (
    Flag("--probes", "probes", "probe rows to run (docs/evaluation.md)"),
    Flag("--seeds", "seeds", "one run of every probe per seed; tables show mean ± std"),
    Flag("--low-shot", "low_shot", "fraction of train labels per class", unset="all labels"),
    Flag("--val-fraction", "val_fraction", "share of TRAIN held out to choose hyperparameters"),
    Flag("--device", "device", "auto, cpu, cuda, cuda:1 ..."),
    Flag("--progress", "progress", "progress bar"),
)


MAKE_DATASET_FLAGS = (
    Flag("--task", "task", "what the label is (see `scalevid.demo.synthetic`)"),
    *(Flag(f"--{name}", name, f"videos in the {name} split") for name in ("train", "val", "test")),
    Flag("--frames", "frames", "frames per video"),
    Flag("--fps", "fps", "frames per second"),
    Flag("--height", "height", "frame height in pixels (even)"),
    Flag("--width", "width", "frame width in pixels (even)"),
    Flag("--seed", "seed", "dataset seed: the same seed gives the same files"),
    Flag("--codec", "codec", "auto: libx264 when PyAV has it, else mpeg4"),
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
    Flag(
        "--train-videos",
        "dataset.train",
        "videos in the train split",
        {"type": _positive_int, "metavar": "N"},
    ),
    Flag(
        "--test-videos",
        "dataset.test",
        "videos in the test split",
        {"type": _positive_int, "metavar": "N"},
    ),
    Flag("--epochs", "epochs", "SCALE pretraining", {"type": _positive_int, "metavar": "N"}),
    Flag("--batch-size", "batch_size", "videos per step", {"type": _positive_int, "metavar": "N"}),
    Flag("--seeds", "seeds", "probe seeds", {"metavar": "S"}),
    Flag("--probes", "probes", "probe rows", {"metavar": "PROBE"}),
)


def _extract(args: argparse.Namespace) -> int:
    from scalevid.extract import ExtractConfig, extract

    layers = stage_layers(args, ExtractConfig, EXTRACT_FLAGS)
    config = build_config(ExtractConfig, *layers)
    if printed(args, config):
        return 0
    if not any(key in values for _, values in layers for key in ("split", "sampling")):
        logger.info(
            "--split not given: sampling the list as for train, %d random clips per video "
            "and pass (random start, scale, crop and flip), %d pass(es); a validation or test "
            "list needs --split val or --split test (T x S fixed views)",
            config.num_clips,
            config.passes,
        )
    report = extract(config)
    print(report.summary())
    return 1 if report.failed else 0


def add_extract(sub: argparse._SubParsersAction) -> None:
    """The `extract` subcommand: ExtractConfig from its layers, then videos -> store."""
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
    add_config_args(p, "ExtractConfig", "flip=false")
    add_flags(p, EXTRACT_FLAGS, ExtractConfig)
    p.set_defaults(handler=_extract)


def _train(args: argparse.Namespace) -> int:
    from scalevid.train import TrainConfig, train

    config = stage_config(args, TrainConfig, TRAIN_FLAGS)
    if printed(args, config):
        return 0
    run = train(config, resume=args.resume)
    print(f"run folder: {run}")
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    """The `train` subcommand: TrainConfig from its layers, then pretraining."""
    from scalevid.train import TrainConfig

    p = sub.add_parser(
        "train",
        help="pretrain SCALE on a feature store",
        description="Pretrain the SCALE predictor on a feature store. Defaults come from "
        "TrainConfig (nested: model, pretext); --config (YAML) overrides them, flags override "
        "the file and --set overrides everything.",
    )
    add_config_args(p, "TrainConfig", "model.hidden=128")
    add_flags(p, TRAIN_FLAGS, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    p.set_defaults(handler=_train)


def _eval(args: argparse.Namespace) -> int:
    from scalevid.eval.config import EvalConfig
    from scalevid.eval.protocol import evaluate
    from scalevid.eval.report import format_table

    config = stage_config(args, EvalConfig, EVAL_FLAGS)
    repeated = sorted({p for p in config.probes if list(config.probes).count(p) > 1})
    if repeated:
        raise ConfigError(f"--probes names {', '.join(repeated)} more than once; name each once")
    if printed(args, config):
        return 0
    need(args, "eval", ("train", "test", "out"))
    check_inputs({"train store": args.train, "test store": args.test}, args.run, args)
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


def add_eval(sub: argparse._SubParsersAction) -> None:
    """The `eval` subcommand: EvalConfig from its layers, then the probes and the report."""
    from scalevid.eval.config import EvalConfig

    p = sub.add_parser(
        "eval",
        help="probes on raw features and on SCALE: kNN, linear, MLP, transformer, attentive",
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
    add_config_args(p, "EvalConfig", "finetune.batch_size=32")
    add_flags(p, EVAL_FLAGS, EvalConfig)
    p.add_argument(
        "--baseline-cache",
        metavar="DIR",
        help="save the baseline rows here and reuse them when the stores and settings match "
        "(evaluating several SCALE runs on the same stores trains the baselines once)",
    )
    add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_eval, user_errors=EVAL_INPUT_ERRORS)


def _demo_design() -> DatasetConfig:
    """The demo's dataset design, as the demo module declares it (read, not copied, so that
    `make-dataset --demo` follows it)."""
    from scalevid.demo.pipeline import DEMO_DATASET

    return DEMO_DATASET


def _make_dataset(args: argparse.Namespace) -> int:
    from scalevid.demo.dataset import make_dataset
    from scalevid.demo.synthetic import DatasetConfig, quick_config

    layers = stage_layers(args, DatasetConfig, MAKE_DATASET_FLAGS)
    if args.quick:  # the quick design of the task the layers name (the last one wins)
        task = next((v["task"] for _, v in reversed(layers) if "task" in v), "order")
        design, config = "--quick's", build_config(quick_config(task), *layers)
    elif args.demo:
        design, config = "the demo's (--demo)", build_config(_demo_design(), *layers)
    else:
        design, config = "DatasetConfig's defaults", build_config(DatasetConfig, *layers)
    if printed(args, config):
        return 0
    need(args, "make-dataset", ("out",))
    logger.info(
        "design: %s under any --config/flags/--set: task %s, %d classes, %d frames of %d x %d "
        "(--demo: the demo's design, --quick: short videos)",
        design,
        config.task,
        config.num_classes,
        config.frames,
        config.width,
        config.height,
    )
    info = make_dataset(args.out, config, progress=args.progress, workers=args.workers)
    print(
        f"{info.root}: {sum(info.counts.values())} videos ({info.written} written, "
        f"{info.skipped} already there) in {info.seconds:.1f} s; classes: {', '.join(info.classes)}"
    )
    print(f"lists: {', '.join(str(info.list_file(s)) for s in ('train', 'val', 'test'))}")
    return 0


def add_make_dataset(sub: argparse._SubParsersAction) -> None:
    """The `make-dataset` subcommand: DatasetConfig (or --quick's, or --demo's), then the
    videos."""
    from scalevid.demo.dataset import make_dataset
    from scalevid.demo.synthetic import DatasetConfig, quick_config

    p = sub.add_parser(
        "make-dataset",
        help="generate labelled synthetic videos whose label needs the whole video",
        description="Write synthetic mp4s whose label depends on the whole video (the order of "
        "two motions, how many times an event happens, or the order of all motions), with "
        "random backgrounds, colours, distractors and camera jitter; deterministic by seed; "
        "train/val/test lists in the `path label` format. Re-running completes or reuses the "
        "folder. Defaults come from DatasetConfig (or --quick's, or --demo's: the design "
        "`scalevid demo` runs); --config (YAML) overrides them, flags override the file and "
        "--set overrides everything.",
    )
    p.add_argument("--out", help="dataset folder to write (required)")
    design = p.add_mutually_exclusive_group()
    design.add_argument("--quick", action="store_true", help="short videos for 8-frame clips")
    design.add_argument(
        "--demo",
        action="store_true",
        help="the demo's design (scalevid.demo.pipeline.DEMO_DATASET: the task, sizes and "
        "motions `scalevid demo` generates)",
    )
    add_config_args(p, "DatasetConfig", "motions=[sweep,orbit]")
    others = [("--quick", quick_config()), ("--demo", _demo_design())]
    add_flags(p, MAKE_DATASET_FLAGS, DatasetConfig, others=others)
    p.add_argument(
        "--workers",
        type=int,
        default=signature_default(make_dataset, "workers"),
        help="rendering processes",
    )
    add_switch(p, "--progress", True, "progress bar")
    p.set_defaults(handler=_make_dataset)


def _demo(args: argparse.Namespace) -> int:
    from scalevid.demo.pipeline import DemoConfig, run_demo

    base = DemoConfig.quick() if args.quick else DemoConfig()
    config = stage_config(args, base, DEMO_FLAGS + DEMO_SIZE_FLAGS)
    if printed(args, config):
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


def add_demo(sub: argparse._SubParsersAction) -> None:
    """The `demo` subcommand: DemoConfig (or --quick's), then the whole pipeline."""
    from scalevid.demo.pipeline import DemoConfig

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a generated dataset: videos -> I3D -> SCALE -> probes",
        description="Generate labelled videos whose label needs the whole video, extract "
        "Kinetics-400 I3D clip features, pretrain SCALE, run the probes, and write a report "
        "(table, plots, timings) into OUT/report/report.md. Each step is recorded with its "
        "settings in OUT/steps/ and reused when they match: re-running resumes an interrupted "
        "demo, and re-renders a finished one's report in seconds. Defaults come from DemoConfig "
        "(or --quick's); --config (YAML) overrides them, flags override the file and --set "
        "overrides everything (e.g. --set dataset.noise_std=2).",
    )
    p.add_argument(
        "--out",
        help="output folder (default: scalevid-demo, or scalevid-demo-seedN with --data-seed N)",
    )
    p.add_argument("--quick", action="store_true", help="a ~1 minute version (what CI runs)")
    add_config_args(p, "DemoConfig", "dataset.noise_std=2")
    quick = [("--quick", DemoConfig.quick())]
    add_flags(p, DEMO_FLAGS, DemoConfig(), others=quick)
    p.add_argument(
        "--ceiling-only",
        action="store_true",
        help="stop after measuring the ceiling on the train features (no SCALE)",
    )
    p.add_argument("--weights", help="local I3D weights (.ckpt or .safetensors)")
    sizes = p.add_argument_group("sizes (defaults: the 5-minute demo, or --quick's)")
    add_flags(sizes, DEMO_SIZE_FLAGS, DemoConfig(), others=quick)
    add_switch(p, "--progress", True, "draw each step's line while it runs (on a terminal)")
    p.set_defaults(handler=_demo)
