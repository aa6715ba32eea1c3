"""The subcommands without a stage config: import, store (check, info, upgrade), embed, search
and recipe (a recipe file is its own config, with its own `--set`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalevid.cli.options import (
    EVAL_INPUT_ERRORS,
    OTHER_FEATURES_HELP,
    VERIFY_HELP,
    add_switch,
    check_inputs,
)
from scalevid.config import ConfigError


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


def add_import(sub: argparse._SubParsersAction) -> None:
    """The `import` subcommand: a store from per-video .npy files."""
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
    add_switch(p, "--progress", True, "progress bar")
    p.set_defaults(handler=_import)


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


def add_store(sub: argparse._SubParsersAction) -> None:
    """The `store` subcommand and its actions: check, info, upgrade."""
    p = sub.add_parser("store", help="inspect and verify feature stores")
    store_sub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    check = store_sub.add_parser(
        "check", help="verify every shard (shapes, checksums, values) and list all problems"
    )
    check.add_argument("store")
    add_switch(check, "--progress", True, "progress bar")
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


def _embed(args: argparse.Namespace) -> int:
    from scalevid.eval.embed import export_embeddings

    check_inputs({"store": args.store}, args.run, args)
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
    check_inputs({"store": args.store}, args.run, args)
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


def add_embed_search(sub: argparse._SubParsersAction) -> None:
    """The `embed` and `search` subcommands."""
    p = sub.add_parser(
        "embed", help="export per-video SCALE embeddings (embeddings.npy + video_ids.txt)"
    )
    p.add_argument("--store", required=True)
    p.add_argument("--run", required=True, help="SCALE run folder")
    p.add_argument("--out", required=True, help="folder for embeddings.npy and video_ids.txt")
    p.add_argument("--device")
    add_switch(p, "--progress", True, "progress bar")
    add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_embed, user_errors=EVAL_INPUT_ERRORS)
    p = sub.add_parser("search", help="the videos nearest to a query video")
    p.add_argument("--store", required=True)
    p.add_argument("--query", required=True, help="video id of the query (see video_ids.txt)")
    p.add_argument("--run", help="SCALE run folder")
    p.add_argument("--embeddings", help="a `scalevid embed` folder (faster than --run)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--device")
    add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_search, user_errors=EVAL_INPUT_ERRORS)


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


def add_recipe(sub: argparse._SubParsersAction) -> None:
    """The `recipe` subcommand (a recipe file is its own config, with its own --set)."""
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
    p.set_defaults(handler=_recipe, user_errors=EVAL_INPUT_ERRORS)  # it runs eval
