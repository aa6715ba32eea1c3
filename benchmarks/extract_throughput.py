"""Extraction throughput: I3D's default fast path against a plain fp32 port, and the pipeline.

Part 1, backbone alone, at each --sizes (16 frames by default), on the same random uint8 clips:
  plain  the reference port: fp32, channels-first, stock `nn.BatchNorm3d` after every
         convolution (no folding) -- what a straightforward PyTorch port of I3D does
  fast   scalevid's default (`create_backbone("i3d")`): BatchNorm folded into the convolutions,
         channels_last_3d, and bf16 on CPUs with bf16 units / fp16 on CUDA (`compute_dtype`)
  compiled  fast + `Backbone.compile_network(--batch-size)` (`scalevid extract --compile`):
         `torch.compile`, static shapes, inductor `freezing` on CPU; its one-time compile
         seconds are measured (cold: inductor's on-disk cache goes to a fresh
         temporary folder unless $TORCHINDUCTOR_CACHE_DIR is set) and so is the
         break-even: the clips after which compiling has paid for itself against fast, i.e.
         compile seconds / (fast s per clip - compiled s per clip), by wall and by CPU time
         (`compile_cpu_s` is this process's only: inductor builds its C++ kernels in worker
         processes, not counted, so the CPU-time break-even is a lower bound).
         --no-compiled leaves the row out.
All time `forward_clips` (normalisation included) in batches of --batch-size, interleaved
--repeats times (plain, fast, compiled, plain, ...); the rows are medians and the ratios are
over plain. The minimum per-clip cosine of each path's features against plain on those clips is
printed too, and `flops_per_clip`: the convolutions' and matmuls' FLOPs of one clip
(`torch.utils.flop_counter`, 2 per multiply-add), for a fraction of the matmul peak.

Part 2, at each --pipeline-sizes: the whole `scalevid extract` (DataLoader decode workers +
backbone + store writes, `scalevid.extract.extract`) on scalevid's synthetic videos (written once
into --data), against the same fast backbone alone on clips already in memory, interleaved
--repeats times; `pipeline_over_backbone` is the median of the per-repeat ratios. Decoding alone
(the workers, no backbone) is timed once, and its CPU seconds per clip are reported, because on a
CPU backbone the decoders and the backbone share the cores.

    python benchmarks/extract_throughput.py --device cpu --sizes 64 224 --pipeline-sizes 64 \\
        --json benchmarks/results/extract_throughput_cpu.json

--random-weights times a randomly initialised I3D instead of the Kinetics-400 weights (same
speed; the cosine line then says nothing about the real features): for a machine without them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from machine import describe  # a sibling script
from scalevid.backbones import InputSpec, create_backbone
from scalevid.backbones.i3d import I3D, InceptionI3d, Unit3D, fetch_i3d_weights, load_i3d_state_dict
from scalevid.data.list_formats import load_video_list
from scalevid.demo.dataset import make_dataset
from scalevid.demo.synthetic import DatasetConfig
from scalevid.extract import ClipDataset, ExtractConfig, extract, sampling_config


class PlainI3D(I3D):
    """The reference: fp32, channels-first, stock BatchNorm3d; never bf16."""

    bf16_on_cpu = False
    memory_format = torch.contiguous_format


def plain_i3d(weights: Path, *, frames: int, size: int, device: torch.device) -> PlainI3D:
    """Kinetics-400 I3D as a plain port: every `Unit3D` keeps a stock `nn.BatchNorm3d`."""
    state, weights_id = load_i3d_state_dict(weights)
    model = InceptionI3d()
    model.load_state_dict(state)
    for unit in model.modules():
        if isinstance(unit, Unit3D) and unit.bn is not None:
            ours = unit.bn
            stock = nn.BatchNorm3d(ours.bias.numel(), eps=ours.eps)  # weight 1: Sonnet has none
            with torch.no_grad():
                stock.bias.copy_(ours.bias)
                stock.running_mean.copy_(ours.running_mean)
                stock.running_var.copy_(ours.running_var)
            unit.bn = stock
    spec = InputSpec(frames=frames, size=size, value_range=(-1.0, 1.0))
    backbone = PlainI3D(model, input_spec=spec, weights_id=weights_id)
    backbone.precision = "fp32"
    return backbone.to(device)


def random_weights_file(directory: Path) -> Path:
    """A safetensors file of a randomly initialised `InceptionI3d` (speed measurements only)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = directory / "i3d-random.safetensors"
    save_file(InceptionI3d().state_dict(), str(path))
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_backbone(backbone: I3D, clips: torch.Tensor, min_seconds: float) -> tuple[float, float]:
    """(clips/s, process CPU s per clip) of `forward_clips` on `clips`, after one warm-up call,
    over >= min_seconds and >= 2 calls. On a shared CPU the CPU seconds vary less than wall."""
    backbone.forward_clips(clips)
    _sync(clips.device)
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        backbone.forward_clips(clips)
        calls += 1
        _sync(clips.device)
    n = calls * len(clips)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def compiled_i3d(args: argparse.Namespace, size: int, device: torch.device) -> tuple[I3D, dict]:
    """The default I3D compiled for batches of --batch-size, and what compiling cost."""
    backbone = create_backbone(
        "i3d", weights=Path(args.weights), device=device, frames=args.frames, size=size
    )
    cpu = time.process_time()
    seconds = backbone.compile_network(args.batch_size)
    cost = {"compile_s": seconds, "compile_cpu_s": time.process_time() - cpu}
    print(f"{size}px: compiled in {seconds:.1f} s ({cost['compile_cpu_s']:.1f} CPU s)", flush=True)
    return backbone, cost


def break_even(
    compile_s: float, fast_s_per_clip: float, compiled_s_per_clip: float
) -> float | None:
    """Clips after which compiling has paid for itself (None: compiled is not faster)."""
    saving = fast_s_per_clip - compiled_s_per_clip
    return compile_s / saving if saving > 0 else None


def compare_backbones(args: argparse.Namespace, size: int, device: torch.device) -> dict:
    weights = Path(args.weights)
    paths = {
        "plain": plain_i3d(weights, frames=args.frames, size=size, device=device),
        "fast": create_backbone(
            "i3d", weights=weights, device=device, frames=args.frames, size=size
        ),
    }
    cost: dict = {}
    if args.compiled:
        paths["compiled"], cost = compiled_i3d(args, size, device)
    gen = torch.Generator().manual_seed(size)
    clips = torch.randint(
        0, 256, (args.batch_size, args.frames, size, size, 3), generator=gen, dtype=torch.uint8
    ).to(device)
    reference = paths["plain"].forward_clips(clips)
    with FlopCounterMode(display=False) as counter:  # convolutions and matmuls, 2 per MAC
        paths["plain"].forward_clips(clips[:1])
    cosine = {
        name: float(
            nn.functional.cosine_similarity(reference, backbone.forward_clips(clips), dim=1).min()
        )
        for name, backbone in paths.items()
        if name != "plain"
    }
    runs: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for repeat in range(args.repeats):
        for name, backbone in paths.items():
            rate, cpu_per_clip = time_backbone(backbone, clips, args.min_seconds)
            runs[name].append(rate)
            cpu[name].append(cpu_per_clip)
            print(
                f"{size}px repeat {repeat}: {name} {rate:.2f} clips/s, "
                f"{cpu_per_clip:.3f} CPU s/clip",
                flush=True,
            )
    rate = {name: statistics.median(v) for name, v in runs.items()}
    cpu_clip = {name: statistics.median(v) for name, v in cpu.items()}
    result = {
        "clip": f"{args.frames}x{size}x{size}",
        "fast_dtype": str(paths["fast"].dtype).removeprefix("torch."),
        "flops_per_clip": counter.get_total_flops(),
        "clips_per_s": rate,
        "cpu_s_per_clip": cpu_clip,
        "runs": runs,
        "cpu_runs": cpu,
    }
    for name in paths:
        if name != "plain":
            result[f"{name}_over_plain"] = rate[name] / rate["plain"]
            result[f"{name}_over_plain_by_cpu_time"] = cpu_clip["plain"] / cpu_clip[name]
            result[f"min_cosine_{name}_vs_plain"] = cosine[name]
    if cost:
        wall = break_even(cost["compile_s"], 1 / rate["fast"], 1 / rate["compiled"])
        by_cpu = break_even(cost["compile_cpu_s"], cpu_clip["fast"], cpu_clip["compiled"])
        result.update(cost, break_even_clips=wall, break_even_clips_by_cpu_time=by_cpu)
    return result


def compare_pipeline(args: argparse.Namespace, size: int, device: torch.device) -> dict:
    data = make_dataset(args.data, DatasetConfig(train=args.videos, val=0, test=0), progress=False)
    listing = data.list_file("train")
    config = ExtractConfig(
        list=str(listing),
        root=str(args.data),
        out="",
        backbone="i3d",
        weights=args.weights,
        num_clips=args.num_clips,
        batch_size=args.batch_size,
        workers=args.workers,
        device=str(device),
        progress=False,
        frames=args.frames,
        crop_size=size,
    )
    backbone = create_backbone(
        "i3d", weights=args.weights, device=device, frames=args.frames, size=size
    )
    sampling = sampling_config(config, backbone)
    items = list(load_video_list(listing, root=args.data).items)

    # Decoding alone: wall clips/s with the workers, and the workers' CPU seconds per clip.
    loader = DataLoader(
        ClipDataset(items, mode="train", sampling=sampling, seed=0),
        batch_size=None,
        num_workers=args.workers,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, clips = time.perf_counter(), 0
    for sample in loader:
        clips += len(sample.get("boxes", []))
    decode_rate = clips / (time.perf_counter() - start)
    del loader  # the workers exit, so their CPU time is counted
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    decode_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / clips

    batch = torch.randint(
        0, 256, (args.batch_size, args.frames, size, size, 3), dtype=torch.uint8
    ).to(device)
    runs: dict[str, list[float]] = {"pipeline": [], "backbone": []}
    out = Path(tempfile.mkdtemp(prefix="scalevid-bench-store-"))
    try:
        for repeat in range(args.repeats):
            config.out = str(out / f"store{repeat}")
            report = extract(config)
            runs["pipeline"].append(report.clips / report.seconds)
            runs["backbone"].append(time_backbone(backbone, batch, args.min_seconds)[0])
            print(
                f"{size}px repeat {repeat}: pipeline {runs['pipeline'][-1]:.2f}, "
                f"backbone {runs['backbone'][-1]:.2f} clips/s",
                flush=True,
            )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ratios = [p / b for p, b in zip(runs["pipeline"], runs["backbone"], strict=True)]
    return {
        "clip": f"{args.frames}x{size}x{size}",
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "workers": args.workers,
        "videos": len(items),
        "clips_per_video": args.num_clips,
        "decode_alone_clips_per_s": decode_rate,
        "decode_cpu_s_per_clip": decode_cpu,
        "clips_per_s": {k: statistics.median(v) for k, v in runs.items()},
        "pipeline_over_backbone": statistics.median(ratios),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--weights", help="I3D weights file (default: the cached Kinetics-400 ones)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="*", default=[64, 224])
    p.add_argument("--pipeline-sizes", type=int, nargs="*", default=[64])
    p.add_argument("--batch-size", type=int, default=8, help="clips per backbone call")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per configuration")
    p.add_argument("--min-seconds", type=float, default=4.0, help="per backbone timing")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--num-clips", type=int, default=8, help="train clips per video")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "scalevid-bench-videos"
    )
    p.add_argument("--random-weights", action="store_true", help="see above")
    p.add_argument("--no-compiled", dest="compiled", action="store_false", help="no compiled row")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    machine = describe(device)
    print(f"device: {machine.line()}")
    # The fast path reduces precision only where the device runs it natively (`compute_dtype`):
    # nothing here is emulated; the line says when fp32 stands in.
    reduced = "fp16" if device.type == "cuda" else "bf16"
    if reduced not in machine.native:
        print(f"{reduced}: not measured, {machine.name} has none; the fast path runs fp32 here")
    # A cold compile: nothing from an earlier run's inductor cache.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="scalevid-inductor-"))
    if args.random_weights:
        args.weights = str(random_weights_file(Path(tempfile.mkdtemp(prefix="scalevid-i3d-"))))
    elif args.weights is None:
        args.weights = str(fetch_i3d_weights())
    result = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({len(os.sched_getaffinity(0))} cores)",
        "machine": machine.to_dict(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "weights": "random" if args.random_weights else args.weights,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "backbone": [compare_backbones(args, size, device) for size in args.sizes],
        "pipeline": [compare_pipeline(args, size, device) for size in args.pipeline_sizes],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
