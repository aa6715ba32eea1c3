"""The `scalevid` command line: one subcommand per pipeline stage.

`main(argv)` is callable from tests and returns the exit code. Logging is configured here, once.

Flags that set a stage's config are rows of one table per subcommand (`Flag`: the flag, the
dotted config key it sets, its argparse options). The table adds the arguments and turns the
parsed values into overrides for `scalevid.config.load_config`: dataclass defaults < `--config`
YAML file < flags. A flag the user did not give is None and changes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from scalevid.config import read_config_file
from scalevid.eval.rows import PROBES

logger = logging.getLogger("scalevid")


OTHER_FEATURES_HELP = (
    "evaluate even when the stores (or the run's training store) come from different "
    "backbones or preprocessing; by default that is refused"
)

NO_VERIFY_HELP = (
    "do not verify the store's checksums on open (for very large stores that `scalevid store "
    "check` verifies on a schedule; the default verifies, see docs/reliability.md)"
)


class Flag(NamedTuple):
    """One command-line flag that sets one config key (dotted for nested configs)."""

    flag: str  # "--num-views"
    key: str  # "pretext.num_views"
    options: dict[str, Any] = {}  # argparse keyword arguments (type, choices, help, ...)


def _switch(value: bool, help: str | None = None) -> dict[str, Any]:
    """A flag without a value that sets its key to `value` (`--compile`, `--no-progress`)."""
    return {"action": "store_const", "const": value, "help": help}


def _add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Sequence[Flag]
) -> None:
    for flag, key, options in flags:
        if options.get("action") is None and "choices" not in options:
            # argparse would name the value after the dotted key (PRETEXT.NUM_VIEWS)
            options = {"metavar": flag.lstrip("-").replace("-", "_").upper(), **options}
        if options.get("required"):
            # required, but a --config file may give it: checked in `_overrides`
            options = {**options, "required": False, "help": f"{options['help']} (required)"}
        parser.add_argument(flag, dest=key, default=None, **options)


def _overrides(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The given flags' values by dotted config key; a required flag may instead be a key of
    the `--config` file (`args.config`), else it is a clear error."""
    values = {key: getattr(args, key) for _, key, _ in flags}
    given = {key: value for key, value in values.items() if value is not None}
    needed = [(flag, key) for flag, key, options in flags if options.get("required")]
    if any(key not in given for _, key in needed):
        from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
        missing = [(f, k) for f, k in needed if k not in given and from_file.get(k) in (None, "")]
        if missing:
            raise ValueError(
                f"{' and '.join(f for f, _ in missing)} required (on the command line, or as "
                f"{' and '.join(f'`{k}:`' for _, k in missing)} in a --config file)"
            )
    return given


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


# --------------------------------------------------------------------------- flag tables

TRAIN_FLAGS = (
    Flag("--store", "store", {"required": True, "help": "feature store folder (training split)"}),
    Flag("--out", "out", {"required": True, "help": "run folder to write"}),
    Flag("--epochs", "epochs", {"type": int}),
    Flag(
        "--batch-size",
        "batch_size",
        {"type": int, "help": "videos per step (global across processes)"},
    ),
    Flag("--lr", "lr", {"type": float}),
    Flag("--seed", "seed", {"type": int}),
    Flag("--device", "device", {"help": "auto, cpu, cuda, cuda:1 ..."}),
    Flag("--precision", "precision", {"choices": ["auto", "fp32", "bf16"]}),
    Flag(
        "--num-views",
        "pretext.num_views",
        {"type": int, "help": "clips per set (two disjoint sets per video)"},
    ),
    Flag("--mask-ratio", "pretext.mask_ratio", {"type": float}),
    Flag(
        "--mcm-weight",
        "pretext.mcm_weight",
        {"type": float, "help": "0 switches masked clip modelling off"},
    ),
    Flag(
        "--set-weight", "pretext.set_weight", {"type": float, "help": "0 switches the SET loss off"}
    ),
    Flag("--log-every", "log_every", {"type": int, "help": "steps between log lines"}),
    Flag(
        "--checkpoint-every",
        "checkpoint_every",
        {"type": int, "help": "steps between checkpoints (0: epoch)"},
    ),
    Flag("--tensorboard", "tensorboard", _switch(True, "also log to RUN/tensorboard")),
    Flag("--compile", "compile", _switch(True, "torch.compile the model")),
    Flag("--no-progress", "progress", _switch(False, "no progress bar")),
    Flag("--no-verify", "verify_store", _switch(False, NO_VERIFY_HELP)),
    Flag(
        "--dist-timeout",
        "dist_timeout",
        {
            "type": float,
            "help": "seconds a torchrun rank waits for the others before the job stops",
        },
    ),
)

EXTRACT_FLAGS = (
    Flag("--list", "list", {"required": True, "help": "video list or folder (see --format)"}),
    Flag("--out", "out", {"required": True, "help": "store folder to write"}),
    Flag("--root", "root", {"help": "folder that relative list paths are under"}),
    Flag(
        "--format",
        "format",
        {"choices": ["auto", "csv", "folder", "ucf101", "hmdb51", "ssv2", "kinetics", "lvu"]},
    ),
    Flag("--split", "split", {"choices": ["train", "val", "test"]}),
    Flag("--fold", "fold", {"type": int, "help": "UCF101/HMDB51 split number"}),
    Flag(
        "--sampling",
        "sampling",
        {"choices": ["auto", "train", "test"], "help": "override the split's"},
    ),
    Flag(
        "--preset",
        "preset",
        {"choices": ["default", "ssv2"], "help": "ssv2: stride 2, no flip, 2x3"},
    ),
    Flag(
        "--backbone",
        "backbone",
        {"help": "i3d, videomae-base, videomae-large, videomae-base-k400, torchscript, module"},
    ),
    Flag(
        "--weights", "weights", {"help": "local weights file/folder, hub id, or pkg.mod:function"}
    ),
    Flag("--num-clips", "num_clips", {"type": int, "help": "train clips per video per pass (16)"}),
    Flag("--passes", "passes", {"type": int, "help": "augmented passes per train video (1)"}),
    Flag("--frames", "frames", {"type": int, "help": "frames per clip (the backbone's)"}),
    Flag("--stride", "stride", {"type": int, "help": "frame stride within a clip (4; ssv2 2)"}),
    Flag(
        "--crop-size", "crop_size", {"type": int, "help": "crop side (the backbone's input size)"}
    ),
    Flag(
        "--temporal-views",
        "temporal_views",
        {"type": int, "help": "test views in time (5; ssv2 2)"},
    ),
    Flag(
        "--spatial-views",
        "spatial_views",
        {"type": int, "help": "test crops along the long side (3)"},
    ),
    Flag("--colour-jitter", "colour_jitter", _switch(True)),
    Flag("--batch-size", "batch_size", {"type": int, "help": "clips per backbone call (32)"}),
    Flag("--workers", "workers", {"type": int, "help": "decoding processes (2)"}),
    Flag("--device", "device"),
    Flag("--precision", "precision", {"choices": ["auto", "fp32", "fp16", "bf16"]}),
    Flag(
        "--compile",
        "compile",
        _switch(
            "on",
            "torch.compile the backbone once (needs a C++ compiler on CPU). Default: only "
            "for CPU jobs of 20,000+ clips in fp32, where it pays (docs/performance.md)",
        ),
    ),
    Flag("--no-compile", "compile", _switch("off", "never torch.compile the backbone")),
    Flag("--seed", "seed", {"type": int}),
    Flag("--shard-size", "shard_size", {"type": int, "help": "videos per shard (256)"}),
    Flag("--limit", "limit", {"type": int, "help": "only the first N videos"}),
    Flag("--no-progress", "progress", _switch(False)),
    Flag(
        "--dist-timeout",
        "dist_timeout",
        {
            "type": float,
            "help": "seconds a torchrun rank waits for the others before the job stops",
        },
    ),
)

EVAL_FLAGS = (
    Flag("--probes", "probes", {"nargs": "+", "choices": PROBES}),
    Flag("--seeds", "seeds", {"nargs": "+", "type": int}),
    Flag("--low-shot", "low_shot", {"type": float, "help": "fraction of train labels per class"}),
    Flag("--val-fraction", "val_fraction", {"type": float}),
    Flag("--device", "device"),
    Flag("--no-progress", "progress", _switch(False)),
)

MAKE_DATASET_FLAGS = (
    Flag("--task", "task", {"choices": ["order", "count"]}),
    *(
        Flag(f"--{name}", name, {"type": int, "help": f"videos in the {name} split"})
        for name in ("train", "val", "test")
    ),
    Flag("--frames", "frames", {"type": int, "help": "frames per video"}),
    Flag("--fps", "fps", {"type": int}),
    Flag("--height", "height", {"type": int}),
    Flag("--width", "width", {"type": int}),
    Flag("--seed", "seed", {"type": int}),
    Flag("--codec", "codec", {"choices": ["auto", "libx264", "mpeg4"]}),
)

DEMO_FLAGS = (
    Flag(
        "--data-seed",
        "dataset.seed",
        {
            "type": _non_negative_int,
            "metavar": "N",
            "help": "draw a fresh dataset of the same design (default 0)",
        },
    ),
)
DEMO_SIZE_FLAGS = (  # shown as one group in --help
    Flag("--train-videos", "dataset.train", {"type": _positive_int, "metavar": "N"}),
    Flag("--test-videos", "dataset.test", {"type": _positive_int, "metavar": "N"}),
    Flag(
        "--epochs", "epochs", {"type": _positive_int, "metavar": "N", "help": "SCALE pretraining"}
    ),
    Flag(
        "--batch-size",
        "batch_size",
        {"type": _positive_int, "metavar": "N", "help": "videos per step"},
    ),
    Flag("--seeds", "seeds", {"type": int, "nargs": "+", "metavar": "S", "help": "probe seeds"}),
    Flag(
        "--probes",
        "probes",
        {
            "nargs": "+",
            "choices": PROBES,
            "metavar": "PROBE",
            "help": f"probe rows, from {' '.join(PROBES)}",
        },
    ),
)


# --------------------------------------------------------------------------- subcommands


def _train(args: argparse.Namespace) -> int:
    from scalevid.train import load_config, train

    config = load_config(args.config, **_overrides(args, TRAIN_FLAGS))
    run = train(config, resume=args.resume)
    print(f"run folder: {run}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain SCALE on a feature store",
        description="Pretrain the SCALE predictor on a feature store. Defaults come from "
        "TrainConfig; --config (YAML) overrides them and flags override the file.",
    )
    p.add_argument("--config", help="YAML file with TrainConfig keys (nested: model, pretext)")
    _add_flags(p, TRAIN_FLAGS)
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
        progress=not args.no_progress,
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
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_import)


def _extract(args: argparse.Namespace) -> int:
    from scalevid.config import load_config
    from scalevid.extract import ExtractConfig, extract

    report = extract(load_config(ExtractConfig, args.config, **_overrides(args, EXTRACT_FLAGS)))
    print(report.summary())
    return 1 if report.failed else 0


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="decode videos, run a frozen backbone on their clips, write a feature store",
        description="Videos -> clips -> frozen backbone -> feature store. Train split: "
        "--num-clips random clips per video (random start, scale and crop, flip); val/test: "
        "T x S views. Re-running skips finished videos; unreadable videos are recorded in "
        "STORE/failures.jsonl and the exit code is 1 if any failed. Under torchrun each rank "
        "takes its share of the list. Defaults come from ExtractConfig; --config (YAML) "
        "overrides them and flags override the file.",
    )
    p.add_argument("--config", help="YAML file with ExtractConfig keys")
    _add_flags(p, EXTRACT_FLAGS)
    p.set_defaults(handler=_extract)


def _store_check(args: argparse.Namespace) -> int:
    from scalevid.store import check_store

    problems = check_store(args.store, progress=not args.no_progress)
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
    check.add_argument("--no-progress", action="store_true")
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
    from scalevid.eval.config import load_eval_config
    from scalevid.eval.protocol import evaluate
    from scalevid.eval.report import format_table

    config = load_eval_config(args.config, **_overrides(args, EVAL_FLAGS))
    repeated = sorted({p for p in config.probes if list(config.probes).count(p) > 1})
    if repeated:
        raise ValueError(f"--probes names {', '.join(repeated)} more than once; name each once")
    _check_inputs({"train store": args.train, "test store": args.test}, args.run, args)
    results = evaluate(
        train_store=args.train,
        test_store=args.test,
        run=args.run,
        config=config,
        out=args.out,
        baseline_cache=args.baseline_cache,
        verify_checksums=not args.no_verify,
    )
    print(format_table(results))
    print(f"results: {args.out}/results.json, {args.out}/results.md")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="probes on raw features and on SCALE: kNN, linear, MLP, transformer, fine-tuning",
        description="Evaluate with frozen-backbone probes. Hyperparameters are chosen on a "
        "class-balanced validation split of TRAIN (never on TEST), the chosen config is "
        "retrained on all of TRAIN and scored once on TEST, for every seed. Writes "
        "results.json, results.md and plots into OUT.",
    )
    p.add_argument("--train", required=True, help="train feature store (K clips per video)")
    p.add_argument("--test", required=True, help="test feature store (T x S views per video)")
    p.add_argument("--run", help="SCALE run folder; without it only the baseline rows run")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--config", help="YAML file with EvalConfig keys")
    _add_flags(p, EVAL_FLAGS)
    p.add_argument(
        "--baseline-cache",
        metavar="DIR",
        help="save the baseline rows here and reuse them when the stores and settings match "
        "(evaluating several SCALE runs on the same stores trains the baselines once)",
    )
    p.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_eval)


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
        progress=not args.no_progress,
        verify_checksums=not args.no_verify,
    )
    print(f"wrote {vectors} and {ids}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from scalevid.eval.embed import search

    if not (args.run or args.embeddings):
        raise ValueError("search needs --run or --embeddings (a `scalevid embed` folder)")
    if args.k < 1:
        raise ValueError(f"-k {args.k}: the number of videos to list must be at least 1")
    _check_inputs({"store": args.store}, args.run, args)
    hits = search(
        store=args.store,
        query=args.query,
        k=args.k,
        run=args.run,
        embeddings=args.embeddings,
        device=args.device or "auto",
        verify_checksums=not args.no_verify,
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
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_embed)
    p = sub.add_parser("search", help="the videos nearest to a query video")
    p.add_argument("--store", required=True)
    p.add_argument("--query", required=True, help="video id of the query (see video_ids.txt)")
    p.add_argument("--run", help="SCALE run folder")
    p.add_argument("--embeddings", help="a `scalevid embed` folder (faster than --run)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--device")
    p.add_argument("--no-verify", action="store_true", help=NO_VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_search)


def _make_dataset(args: argparse.Namespace) -> int:
    from scalevid.config import build_config
    from scalevid.demo.dataset import make_dataset
    from scalevid.demo.synthetic import DatasetConfig, quick_config

    overrides = _overrides(args, MAKE_DATASET_FLAGS)
    base = quick_config(overrides.pop("task", "order")) if args.quick else DatasetConfig
    config = build_config(base, ("flags", overrides))
    info = make_dataset(args.out, config, progress=not args.no_progress, workers=args.workers)
    print(
        f"{info.root}: {sum(info.counts.values())} videos ({info.written} written, "
        f"{info.skipped} already there) in {info.seconds:.1f} s; classes: {', '.join(info.classes)}"
    )
    print(f"lists: {', '.join(str(info.list_file(s)) for s in ('train', 'val', 'test'))}")
    return 0


def _add_make_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-dataset",
        help="generate labelled synthetic videos whose label needs the whole video",
        description="Write synthetic mp4s whose label depends on the whole video (the order of "
        "two motions, or how many times an event happens), with random backgrounds, colours, "
        "distractors and camera jitter; deterministic by seed; train/val/test lists in the "
        "`path label` format. Re-running completes or reuses the folder.",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="short videos for 8-frame clips")
    _add_flags(p, MAKE_DATASET_FLAGS)
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_make_dataset)


def _demo(args: argparse.Namespace) -> int:
    from scalevid.config import build_config
    from scalevid.demo.pipeline import DemoConfig, run_demo

    base = DemoConfig.quick() if args.quick else DemoConfig()
    config = build_config(base, ("flags", _overrides(args, DEMO_FLAGS + DEMO_SIZE_FLAGS)))
    seed = config.data_seed
    out = args.out or ("scalevid-demo" if not seed else f"scalevid-demo-seed{seed}")
    run_demo(
        out,
        config=config,
        weights=args.weights,
        progress=not args.no_progress,
        ceiling_only=args.ceiling_only,
    )
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a generated dataset: videos -> I3D -> SCALE -> probes",
        description="Generate labelled videos whose label needs the whole video, extract "
        "Kinetics-400 I3D clip features, pretrain SCALE, run the probes, and write a report "
        "(table, plots, timings) into OUT/report/report.md.",
    )
    p.add_argument(
        "--out",
        help="output folder (default: scalevid-demo, or scalevid-demo-seedN with --data-seed N)",
    )
    p.add_argument("--quick", action="store_true", help="a ~1 minute version (what CI runs)")
    _add_flags(p, DEMO_FLAGS)
    p.add_argument(
        "--ceiling-only",
        action="store_true",
        help="stop after measuring the ceiling on the train features (no SCALE)",
    )
    p.add_argument("--weights", help="local I3D weights (.ckpt or .safetensors)")
    _add_flags(
        p.add_argument_group("sizes (defaults: the 5-minute demo, or --quick's)"), DEMO_SIZE_FLAGS
    )
    p.add_argument("--no-progress", action="store_true")
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


def main(argv: Sequence[str] | None = None) -> int:
    from scalevid.backbones import BackboneError
    from scalevid.data.lists import DatasetError
    from scalevid.store import StoreError
    from scalevid.train.engine import NonFiniteLossError

    ScalevidInputError = (BackboneError, DatasetError, NonFiniteLossError)  # noqa: N806

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
    except (OSError, ValueError, StoreError, *ScalevidInputError) as err:
        logger.debug("details", exc_info=True)
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
