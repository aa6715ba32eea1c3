"""Cost and reach of the default evaluation on order-of-events stores, and the set probes'
acceptance on validation (never on test).

Stores: each video holds two of four events at random times, one in its first and one in its
second half; the label is the ordered pair (12 classes). A clip's D = 1024 feature is noise
plus a per-video nuisance vector plus the direction of every event its box covers in time. The
mean clip sees which events occur but not their order; the order is in the boxes, which the set
and attentive probes (and the SCALE rows) read. Train videos hold 16 random clips, test videos
8 evenly spaced views. Sizes: `order1k` (800 train, 200 test), `order600` (480 train, 120
test) and `order360` (300 train, 60 test: run_all.py's short mode), each with a SCALE run
pretrained for `--run-epochs` epochs on its train store.

    python benchmarks/eval_cost.py time --store order600 --refs HEAD da53f5f --timeout 1200 \
        --json benchmarks/results/eval_cost_order600.json
    python benchmarks/eval_cost.py accept --demo /tmp/demo0 /tmp/demo1 --store order600 \
        --json benchmarks/results/probe_acceptance.json

`time`: the default `scalevid eval` (every row, `--seeds`: 3 by default) of the store, one
subprocess per git ref (HEAD = this checkout; another ref is checked out into a temporary
worktree) and per `--precisions` entry (`EvalConfig.precision`: `auto` is bf16 autocast only
where the device has bf16 units, so nothing is emulated), alternating `--repeats` times; a run
past `--timeout` seconds is stopped and recorded as such.
`accept`: per store, an outer seeded split of the *train* store into train' (80%) and a held-out
validation part; every set and attentive row is chosen on train' as `scalevid eval` would
(its default settings, or the demo's own for a demo folder) and scored on the held-out part, next
to the ceiling (the demo's gate, `scalevid.demo.ceiling`: its oracle on validation splits of the
same train store; a demo folder's own measurement, or measured on an `--store`'s train store).
`--rows` picks the rows (SCALE rows read the demo folder's run) and `--set KEY=VALUE` changes an
EvalConfig field of the demo's settings (for `time` and for `accept --store`, of the
defaults), e.g.

    python benchmarks/eval_cost.py accept --demo scalevid-demo-seed1 --rows scale_attentive \
        --set 'attentive_lrs=[0.003]'
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import method_checks  # sibling scripts: benchmarks/ is on sys.path when this one runs
from machine import describe
from scalevid.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
DIM = 1024
STORES = {"order1k": (800, 200), "order600": (480, 120), "order360": (300, 60)}
TRAIN_CLIPS, TEST_VIEWS = 16, 8
# The default predictor (hidden 256, 2 blocks, 8 heads) with narrower contrastive heads, so the
# run pretrains in minutes on a CPU; the evaluation reads only the predictor.
RUN_HEADS = {
    "model.set_head": [512, 128],
    "model.pred_head": [512, 128],
    "model.target_head": [512, 512, 128],
}


def write_order_store(path: Path, *, videos: int, mode: str, seed: int) -> Path:
    """An order-of-events store (see the module docstring): `method_checks`' stand-in at
    D = 1024, 16 random train clips or 8 test views per video."""
    clips = TRAIN_CLIPS if mode == "train" else TEST_VIEWS
    return method_checks.write_order_store(
        path, videos=videos, clips=clips, mode=mode, seed=seed, dim=DIM, dataset="order-of-events"
    )


def prepare(folder: Path, name: str, *, run_epochs: int, device: str = "cpu") -> dict[str, Path]:
    """The store pair and its SCALE run under folder/name (each made once)."""
    from scalevid.train import load_config, train

    num_train, num_test = STORES[name]
    base = folder / name
    train_store = write_order_store(base / "train", videos=num_train, mode="train", seed=1)
    test_store = write_order_store(base / "test", videos=num_test, mode="test", seed=2)
    run = base / f"run-e{run_epochs}"
    if not (run / "model.safetensors").exists():
        config = load_config(
            None,
            store=str(train_store),
            out=str(run),
            epochs=run_epochs,
            batch_size=64,
            device=device,
            progress=False,
            **RUN_HEADS,
        )
        tick = time.perf_counter()
        train(config)
        print(f"{name}: SCALE run pretrained in {time.perf_counter() - tick:.0f} s", flush=True)
    return {"train_store": train_store, "test_store": test_store, "run": run}


# Runs inside the subprocess, against whichever scalevid is first on PYTHONPATH.
RUNNER = """
import json, sys, time, torch
from scalevid.config import build_config
from scalevid.eval.config import EvalConfig
from scalevid.eval.protocol import evaluate
args = json.loads(sys.argv[1])
torch.set_num_threads(args.pop("threads"))
config = build_config(EvalConfig, ("eval_cost.py", args.pop("config")))
start = time.perf_counter()
results = evaluate(config=config, **args)
seconds = time.perf_counter() - start
probes = {name: {"top1": [s["test"]["top1"] for s in entry["seeds"]],
                 "val": [s["val"] for s in entry["seeds"]],
                 "seconds": [s.get("seconds") for s in entry["seeds"]]}
          for name, entry in results["probes"].items()}
print(json.dumps({"seconds": seconds, "probes": probes}))
"""


def source_of(ref: str, tmp: Path) -> Path:
    """The src/ folder of a git ref: this checkout for HEAD, else a temporary worktree."""
    if ref == "HEAD":
        return ROOT / "src"
    where = tmp / f"ref-{ref}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), ref],
        check=True,
        capture_output=True,
    )
    return where / "src"


def time_one(src: Path, payload: dict, timeout: float) -> dict:
    # src first; the rest of PYTHONPATH stays (device_check.sh puts offline wheels there)
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    tick = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, json.dumps(payload)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - tick, "timed_out": True}
    if done.returncode:
        raise RuntimeError(f"evaluation failed ({src}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "timed_out": False}


def cmd_time(args: argparse.Namespace) -> dict:
    paths = prepare(args.folder, args.store, run_epochs=args.run_epochs, device=args.device)
    runs: dict[str, list[dict]] = {ref: [] for ref in args.refs}
    overrides = _settings(args.set)
    # None: the ref's own default precision (an old ref may not know the setting)
    precisions = args.precisions or [None]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sources = {ref: source_of(ref, tmp) for ref in args.refs}
        try:
            for repeat in range(args.repeats):
                for ref, precision in itertools.product(args.refs, precisions):
                    config = {"device": args.device, "progress": False, "seeds": args.seeds}
                    config.update(overrides)
                    if args.probes:
                        config["probes"] = args.probes
                    if precision:
                        config["precision"] = precision
                    payload = {
                        **{k: str(v) for k, v in paths.items()},
                        "out": str(tmp / f"{ref}-{precision}-{repeat}"),
                        "threads": args.threads,
                        "config": config,
                    }
                    result = time_one(sources[ref], payload, args.timeout)
                    runs[ref].append({"precision": precision or "default", **result})
                    state = " (stopped: past the timeout)" if result["timed_out"] else ""
                    print(
                        f"{ref:10s} {precision or '':5s} repeat {repeat}: "
                        f"{result['seconds']:7.1f} s{state}",
                        flush=True,
                    )
                    for name, probe in result.get("probes", {}).items():
                        top1 = ", ".join(f"{t:.1f}" for t in probe["top1"])
                        print(f"    {name:16s} test top-1 {top1}  seconds {probe['seconds']}")
        finally:
            for ref in args.refs:
                if ref != "HEAD":
                    subprocess.run(
                        [
                            "git",
                            "-C",
                            str(ROOT),
                            "worktree",
                            "remove",
                            "--force",
                            str(tmp / f"ref-{ref}"),
                        ],
                        capture_output=True,
                    )
    return {
        "store": args.store,
        "refs": args.refs,
        "timeout": args.timeout,
        "overrides": overrides,  # --set, over each ref's defaults
        "probes": args.probes,  # None: every row
        "seeds": args.seeds,
        "runs": runs,
    }


def _held_out_scores(
    store: FeatureStore, config, *, rows: tuple[str, ...], seeds: tuple[int, ...], model=None
) -> dict[str, list[dict]]:
    """Per row and seed: the top-1 on a held-out 20% of the train store of the row chosen on
    the other 80%, the chosen config and the seconds."""
    import torch

    from scalevid.eval.families import Context, run_row
    from scalevid.eval.representations import representations
    from scalevid.eval.splits import make_split, topk_accuracy

    labels = store.labels
    reps = representations(store, model, tokens=model is not None, progress=False)
    out: dict[str, list[dict]] = {r: [] for r in rows}
    for seed in seeds:
        outer = make_split(
            labels, labelled=np.flatnonzero(labels >= 0), val_fraction=0.2, low_shot=None, seed=seed
        )
        inner = make_split(
            labels,
            labelled=outer.fit,
            val_fraction=config.val_fraction,
            low_shot=None,
            seed=seed,
            min_val_videos=config.min_val_videos,
            cv_folds=config.cv_folds,
        )
        ctx = Context(
            config=config,
            task="classification",
            num_classes=len(store.manifest.class_names) or int(labels.max()) + 1,
            train_labels=labels,
            train=reps,
            test=reps.subset(outer.val),
            model=model,
            device=torch.device("cpu"),
        )
        for row in rows:
            tick = time.perf_counter()
            run = run_row(row, ctx, inner, seed)
            top1 = topk_accuracy(run.test_scores, labels[outer.val], ks=(1,))[1]
            chosen = {
                k: run.chosen.get(k) for k in ("input_pca", "head", "lr", "weight_decay", "steps")
            }
            seconds = time.perf_counter() - tick
            out[row].append(
                {"seed": seed, "held_out_top1": top1, "chosen": chosen, "seconds": seconds}
            )
            print(
                f"    {row:16s} seed {seed}: held-out top-1 {top1:5.1f}  {chosen}  {seconds:.0f} s",
                flush=True,
            )
    return out


def cmd_accept(args: argparse.Namespace) -> dict:
    from scalevid.demo.ceiling import measure_ceiling
    from scalevid.demo.pipeline import DemoConfig
    from scalevid.eval.rows import ROWS
    from scalevid.model import ScaleModel

    report: dict[str, dict] = {}
    rows = tuple(args.rows)
    overrides = _settings(args.set)
    needs_run = any(ROWS[r].scale for r in rows)
    # every demo folder is scored with the demo's own settings (and the overrides)
    demo_config = eval_config(DemoConfig().eval_settings(), overrides)
    for folder in args.demo:
        model = ScaleModel.from_pretrained(folder / "run").eval() if needs_run else None
        ceiling = json.loads((folder / "report" / "ceiling.json").read_text())
        print(
            f"{folder}: ceiling oracle {ceiling['oracle']:.1f}, order-blind {ceiling['baseline']:.1f}"
        )
        store = FeatureStore.open(folder / "stores" / "train")
        scores = _held_out_scores(
            store, demo_config, rows=rows, seeds=tuple(args.seeds), model=model
        )
        report[str(folder)] = {"ceiling": ceiling, "rows": scores, "overrides": overrides}
    if args.store:
        paths = prepare(args.folder, args.store, run_epochs=args.run_epochs)
        print(f"{args.store}: default EvalConfig" + (f" with {overrides}" if overrides else ""))
        config = eval_config({}, overrides)
        store = FeatureStore.open(paths["train_store"])
        # the demo's gate on the same train store: what a read of the order can reach
        ceiling = measure_ceiling(store).to_dict()
        print(f"    ceiling oracle {ceiling['oracle']:.1f}, order-blind {ceiling['baseline']:.1f}")
        report[args.store] = {
            "ceiling": ceiling,
            "rows": _held_out_scores(store, config, rows=rows, seeds=tuple(args.seeds)),
            "overrides": overrides,
        }
    return report


def eval_config(base: dict[str, Any], overrides: dict[str, Any]):
    """An EvalConfig for `accept`: `base` settings, then `overrides` (`--set`; dotted keys such
    as `finetune.batch_size` reach the nested configs), on the CPU without progress bars."""
    from scalevid.config import build_config
    from scalevid.eval.config import EvalConfig

    return build_config(
        EvalConfig,
        ("settings", {**base, "device": "cpu", "progress": False}),
        ("--set", overrides),
    )


def _settings(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as EvalConfig fields, read and checked as `scalevid eval --set`
    reads them (`scalevid.config.parse_settings`); lists as tuples, as the config holds them."""
    from scalevid.config import ConfigError, parse_settings
    from scalevid.eval.config import EvalConfig

    try:
        parsed = parse_settings(EvalConfig, items)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    return {k: tuple(v) if isinstance(v, list) else v for k, v in parsed.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["time", "accept"])
    p.add_argument("--store", choices=sorted(STORES))
    p.add_argument(
        "--folder", type=Path, default=Path(tempfile.gettempdir()) / "scalevid-eval-cost"
    )
    p.add_argument("--run-epochs", type=int, default=20)
    p.add_argument("--refs", nargs="+", default=["HEAD"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="for `time`: the evaluation's device")
    p.add_argument("--probes", nargs="+", help="for `time`: these rows only (default: every row)")
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=["auto", "fp32", "bf16"],
        help="for `time`: evaluate at each (EvalConfig.precision); default: the ref's default",
    )
    p.add_argument("--demo", type=Path, nargs="*", default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--rows",
        nargs="+",
        default=["transformer", "attentive"],
        help="for `accept`: the set / attentive rows to score (a SCALE row reads DEMO/run)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an EvalConfig field (as `scalevid eval --set`): for `time` and `accept --store`, "
        "over the defaults; for `accept` on demo folders, over the demo's settings",
    )
    args = p.parse_args(argv)
    if args.what == "time" and not args.store:
        p.error("time needs --store")
    import torch

    torch.set_num_threads(args.threads)
    result = cmd_time(args) if args.what == "time" else cmd_accept(args)
    machine = describe(args.device if args.what == "time" else "cpu")
    print(f"device: {machine.line()}")
    result["cpu"] = machine.line()
    result["machine"] = machine.to_dict()
    result["platform"] = platform.platform()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
