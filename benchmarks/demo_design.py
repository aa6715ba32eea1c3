"""The demo's design iterations: generate a candidate dataset, extract the train store, measure
the ceiling (order-blind baseline and order-aware oracle on a validation split of train).

Only these two numbers decide the design (docs/demo.md keeps the log); nothing here runs
SCALE or reads a test split. Each candidate is a set of changes to the demo's defaults
(`scalevid.demo.pipeline.DemoConfig`), named so that the log's commands can be rerun:

    python benchmarks/demo_design.py CANDIDATE [--out DIR] [--train-videos N]

The videos and the store of a candidate are cached in DIR/CANDIDATE (default
demo-design/CANDIDATE).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from scalevid.demo.pipeline import DemoConfig, run_demo

# name -> (DatasetConfig changes, DemoConfig changes), on top of the demo's defaults.
CANDIDATES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # The design as it stands in scalevid.demo.pipeline (the defaults).
    "default": ({}, {}),
    # A: the permutation task with the old demo's nuisances (small actor, 1-3 distractors,
    # camera shake) and its motions; 64 x 64, 192 frames, 16 clips.
    "a-old-nuisances": (
        {
            "motions": ("sweep", "bounce", "orbit"),
            "actor_size": (0.07, 0.10),
            "distractors": (1, 3),
            "camera_jitter": 3.0,
        },
        {},
    ),
    # C: a bigger actor, at most one distractor, no camera shake, and grow-and-shrink instead of
    # the orbit (which mixes sweep and bounce).
    "c-pulse": (
        {
            "motions": ("sweep", "bounce", "pulse"),
            "actor_size": (0.12, 0.16),
            "distractors": (0, 1),
            "camera_jitter": 0.0,
        },
        {},
    ),
    # E: C's look with two motions (2 classes, chance 50%): the oracle needs only which motion
    # comes first; 128 frames hold the two events. The current default (measured on 96 videos).
    "e-two-motions": (
        {
            "motions": ("sweep", "pulse"),
            "frames": 128,
            "actor_size": (0.12, 0.16),
            "distractors": (0, 1),
            "camera_jitter": 0.0,
        },
        {},
    ),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("candidate", choices=sorted(CANDIDATES))
    p.add_argument("--out", type=Path, default=Path("demo-design"))
    p.add_argument("--train-videos", type=int, help="default: the demo's")
    p.add_argument("--data-seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data_changes, demo_changes = CANDIDATES[args.candidate]
    base = DemoConfig()
    dataset = dataclasses.replace(base.dataset, **data_changes, seed=args.data_seed)
    if args.train_videos:
        dataset = dataclasses.replace(dataset, train=args.train_videos)
    config = dataclasses.replace(base, dataset=dataset, **demo_changes)
    path = run_demo(args.out / args.candidate, config=config, progress=False, ceiling_only=True)
    result = json.loads(path.read_text())
    print(json.dumps({"candidate": args.candidate, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
