"""Method choices measured on a feature-level stand-in whose labels need clip order.

    python benchmarks/method_checks.py init   --out /tmp/method   # release vs trunc-normal init
    python benchmarks/method_checks.py epochs --out /tmp/method   # SCALE_linear vs epochs

The stand-in store: each video holds two events of four types at two random times; the label is
the ordered pair (12 classes). A clip's feature is noise plus a video nuisance vector plus the
direction of an event whose time its box covers. Averaging clips sees which events occur, not
their order, so Linear and kNN are capped near half of the pairs; the order is in the boxes,
which only the SCALE rows read. Two sizes:

- `demo`: the demo's pretraining shape (240 train videos, 8 stored clips = 4 + 4 views,
  batch 64);
- `recipe`: a recipe's set shape (16 stored clips = 8 + 8 views) at a CPU-sized scale (256
  train videos, batch 32).

Both use the default predictor (hidden 256, 2 blocks, 8 heads) with narrower contrastive heads
(512 wide instead of 4096 / 2048) so that a run takes seconds to minutes on a shared CPU.

Each run prints one JSON line per (setting, init, seed): final-epoch mean pretext losses and
accuracies, and the test top-1 of Linear, SCALE_linear, kNN and SCALE_kNN (one probe seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from scalevid.eval.config import EvalConfig
from scalevid.eval.protocol import evaluate
from scalevid.store import Manifest, StoreWriter
from scalevid.train import load_config, train

EVENTS, DIM = 4, 32
PAIRS = [(a, b) for a in range(EVENTS) for b in range(EVENTS) if a != b]
SIZES = {
    "demo": {"train": 240, "test": 120, "clips": 8, "views": 4, "batch": 64},
    "recipe": {"train": 256, "test": 120, "clips": 16, "views": 8, "batch": 32},
}
# The default predictor (hidden 256, 2 blocks, 8 heads), with narrower contrastive heads than
# the default 4096 / 2048 so that a run takes seconds on a shared CPU.
HEADS = {
    "model.set_head": [512, 128],
    "model.pred_head": [512, 128],
    "model.target_head": [512, 512, 128],
}


def write_order_store(
    path: Path,
    *,
    videos: int,
    clips: int,
    mode: str,
    seed: int,
    dim: int = DIM,
    dataset: str = "order-standin",
) -> Path:
    """Train: `clips` random clips per video; test: `clips` evenly spaced views; `dim`-wide
    features. Kept when it already exists."""
    if (path / "manifest.json").exists():
        return path
    directions = 1.5 * np.random.default_rng(12345).normal(size=(EVENTS, dim))
    rng = np.random.default_rng(seed)
    sampling = (
        {"mode": "train", "passes": 1}
        if mode == "train"
        else {"mode": "test", "temporal_views": clips, "spatial_views": 1}
    )
    manifest = Manifest(
        dim=dim,
        clips_per_video=clips,
        backbone="synthetic",
        sampling=sampling,
        dataset=dataset,
        class_names=[f"{a}-{b}" for a, b in PAIRS],
    )
    length = 0.2  # clip duration as a fraction of the video
    with StoreWriter(path, manifest, shard_size=256) as writer:
        for i in range(videos):
            label = i % len(PAIRS)
            first, second = PAIRS[label]
            t_first = rng.uniform(0.05, 0.4)
            t_second = rng.uniform(0.6, 0.95)
            if mode == "train":
                t0 = rng.uniform(0, 1 - length, size=clips)
            else:
                t0 = np.linspace(0, 1 - length, clips)
            t1 = t0 + length
            feats = rng.normal(size=(clips, dim)) + 0.5 * rng.normal(size=dim)
            for t_event, kind in ((t_first, first), (t_second, second)):
                covers = (t0 <= t_event) & (t_event <= t1)
                feats[covers] += directions[kind]
            y0 = x0 = rng.uniform(0, 0.2, size=clips)
            boxes = np.stack([np.ones(clips), t0, y0, x0, t1, y0 + 0.8, x0 + 0.8], axis=1)
            writer.add(
                video_id=f"{mode}{i:05d}",
                path=f"{mode}/{i:05d}.mp4",
                features=feats.astype(np.float16),
                boxes=boxes.astype(np.float32),
                label=label,
            )
    return path


def one_run(out: Path, size: str, *, init: str, seed: int, epochs: int) -> dict:
    s = SIZES[size]
    stores = out / "stores" / size
    train_store = write_order_store(
        stores / "train", videos=s["train"], clips=s["clips"], mode="train", seed=1
    )
    test_store = write_order_store(
        stores / "test", videos=s["test"], clips=s["clips"], mode="test", seed=2
    )
    run = out / f"{size}-{init}-seed{seed}-e{epochs}"
    config = load_config(
        None,
        store=str(train_store),
        out=str(run),
        epochs=epochs,
        batch_size=s["batch"],
        seed=seed,
        device="cpu",
        progress=False,
        log_every=1,
        **HEADS,
        **{"model.init": init, "pretext.num_views": s["views"]},
    )
    tick = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - tick
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_epoch = [r for r in rows if r["epoch"] == rows[-1]["epoch"]]
    pretext = {
        k: float(np.mean([r[k] for r in last_epoch]))
        for k in ("mcm_loss", "set_loss", "mcm_acc", "set_acc", "mask_ratio")
    }
    eval_config = EvalConfig(
        probes=("knn", "scale_knn", "linear", "scale_linear"),
        seeds=(0,),
        head_lrs=(1e-3, 1e-2),
        head_weight_decays=(0.0,),
        head_epochs=20,
        clips_per_sample=2,
        linear_batchnorm=(False,),
        device="cpu",
        progress=False,
        plots=False,
    )
    results = evaluate(
        train_store=train_store,
        test_store=test_store,
        run=run,
        config=eval_config,
        out=run / "eval",
    )
    top1 = {n: round(p["mean"]["top1"], 1) for n, p in results["probes"].items()}
    return {
        "size": size,
        "init": init,
        "seed": seed,
        "epochs": epochs,
        "steps": rows[-1]["step"],
        "train_s": round(seconds, 1),
        **{k: round(v, 4) for k, v in pretext.items()},
        **top1,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("check", choices=["init", "epochs"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sizes", default="demo,recipe")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", default="25,50,100,200", help="for `epochs`")
    p.add_argument("--init-epochs", type=int, default=20, help="for `init`")
    p.add_argument("--inits", default="release,trunc_normal", help="for `init`")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a shared CPU: 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(x) for x in args.seeds.split(",")]
    for size in args.sizes.split(","):
        if args.check == "init":
            for seed in seeds:  # interleaved: the two inits run back to back on each seed
                for init in args.inits.split(","):
                    row = one_run(args.out, size, init=init, seed=seed, epochs=args.init_epochs)
                    print(json.dumps(row), flush=True)
        else:
            for epochs in (int(x) for x in args.epochs.split(",")):
                for seed in seeds:
                    row = one_run(args.out, size, init="release", seed=seed, epochs=epochs)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
