"""What verifying a store's checksums on open costs, per GB of features.

`FeatureStore.open` verifies the crc32 of every shard file by default (train, eval, embed and
search refuse a damaged store; docs/reliability.md). This writes a store of about --gb GB
(float16 features, shards of --shard-size videos) and times, interleaved --repeats times:

  structure  open(check_values=False, verify_checksums=False): headers, sizes, boxes, labels
  values     open(verify_checksums=False): + the NaN/Inf scan of all features (the old default)
  verified   open(): + the crc32 of every file (the new default), hashed by
             min(8, cpu_count - 1) threads (at least 1) alongside the NaN scan
  verified-1 the same with one hashing thread (what the thread pool saves)

The verification cache is cleared before every timed open, so each `verified` open hashes the
whole store. The files stay in the page cache (the store is written just before), so this is
the CPU cost; on a cold cache an open also reads every byte from disk once, at the disk's
speed. Prints one JSON object with seconds and seconds per GB (median over repeats).

    python benchmarks/store_verify.py --gb 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import describe  # a sibling script
from scalevid.store import FeatureStore, Manifest, StoreWriter
from scalevid.store import check as check_module

K, D = 16, 768


def write_store(root: Path, gb: float, shard_size: int) -> tuple[int, int]:
    """(videos, bytes of features) of a store of about `gb` GB of features."""
    videos = max(1, int(gb * 2**30 / (K * D * 2)))
    manifest = Manifest(
        dim=D, clips_per_video=K, backbone="bench", sampling={"mode": "train"}, dataset="bench"
    )
    rng = np.random.default_rng(0)
    block = rng.standard_normal((64, K, D)).astype(np.float16)
    boxes = np.tile(np.array([1, 0, 0, 0, 1, 1, 1], np.float32), (K, 1))
    with StoreWriter(root, manifest, shard_size=shard_size) as writer:
        for i in range(videos):
            writer.add(video_id=f"v{i}", path="p", features=block[i % 64], boxes=boxes)
    size = sum(p.stat().st_size for p in root.glob("shards/*/features.npy"))
    return videos, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="features to write, in GiB")
    parser.add_argument("--shard-size", type=int, default=1024, help="videos per shard")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to write the store (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "store"
        videos, size = write_store(root, args.gb, args.shard_size)
        modes = {
            "structure": dict(check_values=False, verify_checksums=False),
            "values": dict(check_values=True, verify_checksums=False),
            "verified": dict(check_values=True, verify_checksums=True),
        }
        modes["verified-1"] = modes["verified"]
        threads = check_module._HASH_THREADS
        times: dict[str, list[float]] = {m: [] for m in modes}
        FeatureStore.open(root, check_values=False, verify_checksums=False)  # warm-up
        for _ in range(args.repeats):
            for mode, kwargs in modes.items():  # interleaved: A B C D A B C D ...
                check_module._VERIFIED.clear()
                check_module._HASH_THREADS = 1 if mode == "verified-1" else threads
                start = time.perf_counter()
                FeatureStore.open(root, **kwargs)
                times[mode].append(time.perf_counter() - start)
        check_module._HASH_THREADS = threads
    gib = size / 2**30
    median = {m: statistics.median(t) for m, t in times.items()}
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": describe("cpu").line(),
        "cpus": os.cpu_count(),
        "hash_threads": threads,
        "videos": videos,
        "features_gib": round(gib, 3),
        "shard_size": args.shard_size,
        "repeats": args.repeats,
        "seconds": {m: round(s, 3) for m, s in median.items()},
        "seconds_per_gib": {m: round(s / gib, 3) for m, s in median.items()},
        "crc32_seconds_per_gib": round((median["verified"] - median["values"]) / gib, 3),
        "all_seconds": {m: [round(x, 3) for x in t] for m, t in times.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
