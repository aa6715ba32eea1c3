"""Wall time of the evaluation protocol (the Transformer row by default): old code against new.

The set probes dominate `scalevid eval`. Old = the code of `--old-ref` (default: the last commit
before the batched set probes), checked out into a temporary git worktree: every grid point
(lr x epochs) trained as its own run, then the chosen one retrained on the train split. New = this
checkout: all grid points of a training set in one batched pass (`eval.set_probes.fit_set_probes`:
`torch.func.vmap` over stacked weights, each batch read once for all of them, a finished budget
leaving the stack), then the chosen one retrained.

Rows (each `evaluate(...)` with probes=("transformer",) in its own subprocess, so neither side
warms the other's caches; the two sides alternate, `--repeats` times, and medians are reported):
  old         the old code, its defaults (SET-only head, hold-out selection, epoch budgets);
  new-same    the new code set to the old protocol as closely as it allows: SET-only head,
              hold-out selection (min_val_videos=0), no step floor, a schedule as long as the
              old code's longest budget (the step is chosen on validation, with early
              stopping, where the old code trained every budget to its end);
  new-default the new code's defaults (the paper's per-clip head; k-fold cross-validation when
              the validation split is under 100 videos; at least 100 steps per budget): a
              different, more careful protocol, shown for its cost, not as a speed-up.

Shapes: `--shape store1k` is ~1,000 videos of 64-d features (8 clips, 8 classes; 200 test videos
of 8 views); `--shape demo` mimics the demo's probes (240 train videos x 8 clips of 1024-d I3D
features, 6 classes, 120 test videos x 4 views, the predictor of a default SCALE run: hidden 256,
2 layers). Features are synthetic (class centre + per-video offset + noise), which does not
change the cost.

    python benchmarks/eval_throughput.py --shape store1k --repeats 3 --json OUT.json
    python benchmarks/eval_throughput.py --shape store1k --probes knn linear mlp transformer \
        --old-ref REF --rows old new-default      # a whole evaluation, every baseline row
    python benchmarks/eval_throughput.py --shape demo --device cuda --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import describe  # a sibling script
from scalevid.store import Manifest, StoreWriter

ROOT = Path(__file__).resolve().parents[1]
OLD_REF = "6512a86"  # the last commit whose set probes trained one grid point per run

SHAPES = {
    "store1k": {
        "train": 1000,
        "test": 200,
        "clips": 8,
        "test_views": 8,
        "dim": 64,
        "classes": 8,
        "hidden": 256,
        "depth": 2,
        "heads": 8,
        "lrs": [1e-4, 1e-3],
        "epochs": [10, 30],
    },
    "demo": {
        "train": 240,
        "test": 120,
        "clips": 8,
        "test_views": 4,
        "dim": 1024,
        "classes": 6,
        "hidden": 256,
        "depth": 2,
        "heads": 8,
        "lrs": [3e-4, 1e-3],
        "epochs": [20],
    },
}

# Runs inside the subprocess, against whichever scalevid is first on PYTHONPATH.
RUNNER = """
import json, sys, time, torch
try:
    from scalevid.eval.config import EvalConfig
    from scalevid.eval.protocol import evaluate
    from scalevid.eval.set_probes import FinetuneConfig
except ImportError:  # an old ref: the layout before the package was split by pipeline stage
    from scalevid.evaluate import EvalConfig, evaluate
    from scalevid.finetune import FinetuneConfig
args = json.loads(sys.argv[1])
torch.set_num_threads(args.pop("threads"))
finetune = FinetuneConfig(**args.pop("finetune"))
config = EvalConfig(finetune=finetune, **args.pop("config"))
start = time.perf_counter()
results = evaluate(config=config, **args)
seconds = time.perf_counter() - start
keys = ("lr", "weight_decay", "batchnorm", "epochs", "steps", "head")
probes = {name: {"top1": [s["test"]["top1"] for s in entry["seeds"]],
                 "chosen": [{k: s["chosen"].get(k) for k in keys if k in s["chosen"]}
                            for s in entry["seeds"]]}
          for name, entry in results["probes"].items()}
print(json.dumps({"seconds": seconds, "probes": probes}))
"""


def write_store(
    path: Path, *, videos: int, clips: int, dim: int, classes: int, mode: str, seed: int
) -> Path:
    """A class-structured synthetic store: clip = class centre + video offset + noise."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(classes, dim))
    manifest = Manifest(
        dim=dim,
        clips_per_video=clips,
        backbone="synthetic",
        sampling={"mode": mode, "passes": 1},
        dataset="bench",
        class_names=[f"c{i}" for i in range(classes)],
    )
    with StoreWriter(path, manifest, shard_size=256) as writer:
        for i in range(videos):
            label = i % classes
            feats = (
                0.5 * centres[label] + rng.normal(size=dim) + 2.0 * rng.normal(size=(clips, dim))
            )
            t0 = rng.uniform(0, 0.9, size=clips)
            boxes = np.stack(
                [
                    np.ones(clips),
                    t0,
                    np.zeros(clips),
                    np.zeros(clips),
                    t0 + 0.1,
                    np.ones(clips),
                    np.ones(clips),
                ],
                axis=1,
            )
            writer.add(
                video_id=f"v{i:05d}",
                path=f"v{i:05d}.mp4",
                features=feats.astype(np.float16),
                boxes=boxes.astype(np.float32),
                label=label,
            )
    return path


def write_stores(shape_name: str, folder: Path) -> tuple[Path, Path]:
    """The shape's train and test stores in `folder`, written by the scalevid being imported."""
    shape = SHAPES[shape_name]
    common = {"clips": 0, "dim": shape["dim"], "classes": shape["classes"]}
    train = write_store(
        folder / "train",
        **{**common, "clips": shape["clips"]},
        videos=shape["train"],
        mode="train",
        seed=1,
    )
    test = write_store(
        folder / "test",
        **{**common, "clips": shape["test_views"]},
        videos=shape["test"],
        mode="test",
        seed=2,
    )
    return train, test


def write_stores_with(src: Path, shape_name: str, folder: Path) -> tuple[Path, Path]:
    """`write_stores` run by the scalevid in `src` (its own store format), in a subprocess."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path(__file__).parent}"}
    code = (
        f"import eval_throughput as b; from pathlib import Path; "
        f"b.write_stores({shape_name!r}, Path({str(folder)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"writing the stores failed ({src}):\n{done.stderr[-3000:]}")
    return folder / "train", folder / "test"


def old_worktree(ref: str, where: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), ref],
        check=True,
        capture_output=True,
    )
    return where / "src"


def run_one(src: Path, payload: dict) -> dict:
    # src first; the rest of PYTHONPATH stays (device_check.sh puts offline wheels there)
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(payload)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"evaluation failed ({src}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="store1k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=torch_threads())
    p.add_argument("--old-ref", default=OLD_REF)
    p.add_argument("--rows", nargs="+", default=["old", "new-same", "new-default"])
    p.add_argument("--epochs", type=int, nargs="+", help="override the shape's epoch grid")
    p.add_argument(
        "--probes",
        nargs="+",
        default=["transformer"],
        help="probe rows to evaluate (baselines only: the stores come with no SCALE run)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    # `precision: auto` picks bf16 only where the device has it natively: nothing is emulated.
    machine = describe(args.device)
    print(f"device: {machine.line()}")
    shape = dict(SHAPES[args.shape])
    if args.epochs:
        shape["epochs"] = args.epochs
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sources = {"new": ROOT / "src"}
        if "old" in args.rows:
            sources["old"] = old_worktree(args.old_ref, tmp / "old")
        # Each side reads stores its own code wrote (the store format changed in between).
        stores = {
            side: write_stores_with(src, args.shape, tmp / f"stores-{side}")
            for side, src in sources.items()
        }
        common = {
            "probes": args.probes,
            "seeds": args.seeds,
            "finetune_lrs": shape["lrs"],
            "transformer_hidden": shape["hidden"],
            "transformer_depth": shape["depth"],
            "transformer_heads": shape["heads"],
            "device": args.device,
            "progress": False,
            "plots": False,
        }
        # The old code's epoch budgets; the new code chooses the step on validation within a
        # schedule as long as the longest of them.
        longest = {"finetune_max_epochs": max(shape["epochs"])}
        extra = {
            "old": {"finetune_epochs": shape["epochs"]},
            "new-same": {
                **longest,
                "min_val_videos": 0,
                "finetune_min_steps": 1,
                "finetune_heads": ["set"],
                "probes": [p for p in args.probes if p != "attentive"],
            },
            "new-default": longest,
        }
        timings: dict[str, list[dict]] = {row: [] for row in args.rows}
        try:
            for repeat in range(args.repeats):
                for row in args.rows:  # alternate the sides within every repeat
                    side = "old" if row == "old" else "new"
                    train, test = stores[side]
                    payload = {
                        "train_store": str(train),
                        "test_store": str(test),
                        "out": str(tmp / f"{row}-{repeat}"),
                        "threads": args.threads,
                        "config": {**common, **extra[row]},
                        "finetune": {},
                    }
                    result = run_one(sources[side], payload)
                    timings[row].append(result)
                    print(f"{row:12s} repeat {repeat}: {result['seconds']:7.1f} s", flush=True)
                    for name, probe in result["probes"].items():
                        print(f"    {name}: top-1 {probe['top1']}  chosen {probe['chosen']}")
        finally:
            if "old" in sources:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")],
                    capture_output=True,
                )
    medians = {row: statistics.median(r["seconds"] for r in runs) for row, runs in timings.items()}
    print(f"\n{args.shape} on {args.device} ({args.threads} threads), medians of {args.repeats}:")
    for row, seconds in medians.items():
        ratio = f"  old/this {medians['old'] / seconds:.2f}x" if "old" in medians else ""
        print(f"  {row:12s} {seconds:7.1f} s{ratio}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "shape": args.shape,
                    "shape_settings": shape,
                    "probes": args.probes,
                    "device": args.device,
                    "threads": args.threads,
                    "repeats": args.repeats,
                    "old_ref": args.old_ref,
                    "platform": platform.platform(),
                    "machine": machine.to_dict(),
                    "median_seconds": medians,
                    "runs": timings,
                },
                indent=2,
            )
        )
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    raise SystemExit(main())
