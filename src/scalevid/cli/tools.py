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
    signature_default,
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
        boxes_dir=args.boxes_dir,
        progress=args.progress,
    )
    print(report.summary())
    return 1 if report.failed else 0


def add_import(sub: argparse._SubParsersAction) -> None:
    """The `import` subcommand: a store from per-video .npy files."""
    from scalevid.store.importer import (
        BOXES_SUFFIX,
        DURATION_SUFFIX,
        TIMESTAMPS_SUFFIX,
        import_npy_folder,
    )

    p = sub.add_parser(
        "import",
        help="build a store from per-video .npy features and a `path label` list",
        description="Build a feature store from a folder of per-video .npy arrays of shape "
        f"(clips, D) and a `path label` list. A video's clip boxes come from <id>{BOXES_SUFFIX} "
        "(clips, 7) = [flip, t0, y0, x0, t1, y1, x1] (flip +1 or -1, the rest normalised to "
        f"[0, 1]), else from <id>{TIMESTAMPS_SUFFIX} (clips, 2) = [start, end] seconds (divided "
        f'by {{"duration": seconds}} from <id>{DURATION_SUFFIX}, else by the last end), else '
        "they are uniform in time over the full frame; the last line printed counts each kind. "
        "Re-running resumes. See docs/feature-store.md.",
    )
    p.add_argument("--features", required=True, help="folder of <video id>.npy arrays")
    p.add_argument("--list", required=True, help="`path label` list (space or comma separated)")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--root", help="folder that relative list paths are under")
    p.add_argument(
        "--boxes-dir",
        metavar="DIR",
        help=f"folder of the <id>{BOXES_SUFFIX} / <id>{TIMESTAMPS_SUFFIX} files, laid out as "
        "--features (default: the --features folder)",
    )
    p.add_argument(
        "--dataset",
        default=signature_default(import_npy_folder, "dataset_name"),
        help="dataset name for the manifest",
    )
    p.add_argument(
        "--backbone",
        default=signature_default(import_npy_folder, "backbone"),
        help="backbone name for the manifest",
    )
    p.add_argument(
        "--clip-frames",
        type=int,
        help="frames per clip, recorded in the manifest (default: unknown)",
    )
    p.add_argument(
        "--clip-stride",
        type=int,
        help="frame stride within a clip, recorded in the manifest (default: unknown)",
    )
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


STORE_HELP = "feature store folder (the one holding manifest.json)"


def add_store(sub: argparse._SubParsersAction) -> None:
    """The `store` subcommand and its actions: check, info, upgrade."""
    p = sub.add_parser(
        "store",
        help="inspect and verify feature stores",
        description="Inspect and verify a feature store: `check` reads every byte, `info` "
        "summarises it, `upgrade` updates the manifest of an older store. See "
        "docs/feature-store.md and docs/reliability.md.",
    )
    store_sub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    check = store_sub.add_parser(
        "check",
        help="verify every shard (shapes, checksums, values) and list all problems",
        description="Verify every shard of STORE: file sizes and checksums, array shapes, "
        "finite features, valid boxes and labels. Prints every problem found (not only the "
        "first) and exits 1 if there is any, else prints OK.",
    )
    check.add_argument("store", help=STORE_HELP)
    add_switch(check, "--progress", True, "progress bar")
    check.set_defaults(handler=_store_check)
    info = store_sub.add_parser(
        "info",
        help="summarise a store",
        description="Summarise STORE: videos and shards, clips per video, feature size, "
        "backbone and preprocessing, sampling, classes, size on disk. Reads the manifest and "
        "the shard headers only (no checksums).",
    )
    info.add_argument("store", help=STORE_HELP)
    info.set_defaults(handler=_store_info)
    upgrade = store_sub.add_parser(
        "upgrade",
        help="record the shard list in the manifest of a store written by an older scalevid",
        description="Record the shard list in manifest.json of a store written by an older "
        "scalevid, so that it opens without listing its folders; the shards are not changed.",
    )
    upgrade.add_argument("store", help=STORE_HELP)
    upgrade.set_defaults(handler=_store_upgrade)


def _embed(args: argparse.Namespace) -> int:
    from scalevid.eval.embed import export_embeddings

    check_inputs({"store": args.store}, args.run, args)
    vectors, ids = export_embeddings(
        store=args.store,
        run=args.run,
        out=args.out,
        device=args.device,
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
        device=args.device,
        verify_checksums=args.verify,
    )
    print(f"query  {args.query}")
    for rank, (video_id, path, similarity) in enumerate(hits, start=1):
        print(f"{rank:3d}  {similarity:+.4f}  {video_id}  {path}")
    return 0


def add_embed_search(sub: argparse._SubParsersAction) -> None:
    """The `embed` and `search` subcommands."""
    from scalevid.eval.embed import EMBEDDINGS, VIDEO_IDS, export_embeddings, search

    p = sub.add_parser(
        "embed",
        help=f"export per-video SCALE embeddings ({EMBEDDINGS} + {VIDEO_IDS})",
        description=f"Write OUT/{EMBEDDINGS}, float32 (N, D + H): per video of STORE, the "
        "mean of its clip features (D columns, the backbone's feature size) then the run's "
        "SET output (H columns, the run's model.hidden, 256 by default), the vector the "
        f"SCALE_kNN probe uses; and OUT/{VIDEO_IDS}, the video ids in the same order. Compare "
        "embeddings by cosine (`scalevid search --embeddings OUT`).",
    )
    p.add_argument("--store", required=True, help="feature store of the videos to embed")
    p.add_argument("--run", required=True, help="SCALE run folder")
    p.add_argument("--out", required=True, help=f"folder for {EMBEDDINGS} and {VIDEO_IDS}")
    p.add_argument(
        "--device",
        default=signature_default(export_embeddings, "device"),
        help="auto, cpu, cuda, cuda:1 ...",
    )
    add_switch(p, "--progress", True, "progress bar")
    add_switch(p, "--verify", True, VERIFY_HELP)
    p.add_argument("--allow-other-features", action="store_true", help=OTHER_FEATURES_HELP)
    p.set_defaults(handler=_embed, user_errors=EVAL_INPUT_ERRORS)
    p = sub.add_parser(
        "search",
        help="the videos nearest to a query video",
        description="List the -k videos of STORE nearest to video QUERY by cosine similarity of "
        "their SCALE embeddings (see `scalevid embed`), best first; the query itself is not "
        "counted. Embeddings come from --embeddings (a `scalevid embed` folder of the same "
        "store) or are computed from --run.",
    )
    p.add_argument("--store", required=True, help="feature store holding the query and the rest")
    p.add_argument("--query", required=True, help=f"video id of the query (see {VIDEO_IDS})")
    p.add_argument("--run", help="SCALE run folder")
    p.add_argument("--embeddings", help="a `scalevid embed` folder (faster than --run)")
    p.add_argument(
        "-k",
        type=int,
        default=signature_default(search, "k"),
        help="neighbours to list (the query not counted)",
    )
    p.add_argument(
        "--device", default=signature_default(search, "device"), help="auto, cpu, cuda, cuda:1 ..."
    )
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
