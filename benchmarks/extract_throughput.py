"""Extraction throughput: clips/s for decoding alone, the backbone alone, and the whole pipeline.

Videos come from scalevid's synthetic generator (written once into --data). For each part:
  decode    DataLoader workers sampling and reading train clips, no backbone
  backbone  the backbone on random uint8 clips already in memory, batch --batch-size
  pipeline  `scalevid.extract.extract` end to end (decode workers + backbone + store writes)
The pipeline/backbone ratio says how much the backbone waits on the decoder; on a machine whose
decoding workers share the cores with a CPU backbone, the pipeline cannot reach the
backbone-alone rate, and the script says so.

    python benchmarks/extract_throughput.py --device cpu --backbone i3d --frames 8 --size 112
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scalevid.backbones import create_backbone
from scalevid.datasets import load_video_list
from scalevid.extract import ClipDataset, ExtractConfig, extract, sampling_config
from scalevid.synthetic import DatasetConfig, make_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--backbone", default="i3d")
    p.add_argument("--weights")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--num-clips", type=int, default=8, help="train clips per video")
    p.add_argument("--batch-size", type=int, default=16, help="clips per backbone call")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "scalevid-bench-videos"
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)

    data = make_dataset(args.data, DatasetConfig(train=args.videos, val=0, test=0), progress=False)
    listing = data.list_file("train")
    items = list(load_video_list(listing, root=args.data).items)
    shape = {"frames": args.frames, "size": args.size} if args.backbone == "i3d" else {}
    backbone = create_backbone(args.backbone, weights=args.weights, device=device, **shape)
    config = ExtractConfig(
        list=str(listing), root=str(args.data), out="", backbone=args.backbone,
        weights=args.weights, num_clips=args.num_clips, batch_size=args.batch_size,
        workers=args.workers, device=args.device, progress=False,
        frames=shape.get("frames"), crop_size=shape.get("size"),
    )  # fmt: skip
    sampling = sampling_config(config, backbone)
    rows = {}

    # decode alone
    dataset = ClipDataset(items, mode="train", sampling=sampling, seed=0)
    loader = DataLoader(dataset, batch_size=None, num_workers=args.workers)
    start, clips = time.perf_counter(), 0
    for sample in loader:
        clips += len(sample.get("boxes", []))
    rows["decode"] = clips / (time.perf_counter() - start)

    # backbone alone
    spec = backbone.input_spec
    batch = torch.randint(0, 256, (args.batch_size, spec.frames, spec.size, spec.size, 3),
                          dtype=torch.uint8).to(device)  # fmt: skip
    backbone.forward_clips(batch)
    n = max(2, (len(items) * args.num_clips) // args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        backbone.forward_clips(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rows["backbone"] = n * args.batch_size / (time.perf_counter() - start)

    # the whole pipeline
    out = Path(tempfile.mkdtemp(prefix="scalevid-bench-store-"))
    try:
        config.out = str(out / "store")
        report = extract(config)
        rows["pipeline"] = report.clips / report.seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)

    ratio = rows["pipeline"] / rows["backbone"]
    result = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({os.cpu_count()} cores)",
        "backbone": args.backbone,
        "clip": f"{spec.frames}x{spec.size}x{spec.size}",
        "workers": args.workers,
        "batch_size": args.batch_size,
        "clips_per_s": rows,
        "pipeline_over_backbone": ratio,
    }
    print(json.dumps(result, indent=2))
    if device.type == "cpu" and rows["decode"] < 10 * rows["backbone"]:
        print(
            "note: decoding workers share the CPU cores with the backbone here, so the pipeline "
            "cannot run at the backbone-alone rate on this machine."
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
