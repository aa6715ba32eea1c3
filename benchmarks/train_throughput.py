"""Training throughput and peak memory of SCALE pretraining at the paper's Table 1 setting.

D = 768 features, 16 stored clips per video split 8 + 8, hidden 256, 2 layers, default heads.
For each batch size and implementation it times the trainer's real step (`Trainer.train_step`:
clip-set sampling, masking, forward, losses, backward, AdamW) on random features resident on the
device, and reports videos/s, peak memory and achieved FLOP/s against the device's measured
matmul peak.

Implementations:
  plain  fp32; prediction head on every clip token and all (2B*8)^2 MCM logits held whole (the
         reference release's computation, `release_step` below, in place of `pretext_step`);
         torch's own dropout; AdamW without the fused kernel.
  fast   scalevid's default: output sparsity (prediction head and logits only at masked clips,
         a fixed number of query rows so the step has no host sync), MCM logits scored in chunks
         and recomputed in the backward pass, padding masks skipped when no set needs them, the
         cheaper CPU dropout mask, bf16 autocast where the device has bf16 matrix units, fused
         AdamW.
  fast+compile  as fast, with torch.compile (only with --compile).

On CPU each (batch size, implementation) runs in its own subprocess so that its peak resident
memory (ru_maxrss, which includes the ~0.3-0.5 GB of the torch runtime) is its own; on CUDA the
peak is torch.cuda.max_memory_allocated.

The matmul peak (`machine.matmul_peak`) is timed in fp32, and in bf16 only where the device runs
bf16 natively (`machine.native_precisions`; elsewhere one line says it was left out and
`--emulated` times it anyway: an emulated bf16 peak takes minutes on a CPU).

    python benchmarks/train_throughput.py --device cpu --batch-sizes 8 19 57 512 2048 --json OUT.json
    python benchmarks/train_throughput.py --one 512 fast    # one row, JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from machine import DTYPES, choose_precisions, describe, matmul_peak, sync  # a sibling script
from scalevid.distributed import Gather
from scalevid.hardware import autocast_dtype
from scalevid.model import ModelConfig, ScaleModel
from scalevid.pretext import PretextConfig, draw_clip_sets
from scalevid.train import TrainConfig, engine
from scalevid.train.data import TrainData
from scalevid.train.engine import Trainer
from scalevid.train.schedule import adamw

D, K, V = 768, 16, 8


def step_flops(batch: int, model: ModelConfig, pretext: PretextConfig, *, sparse: bool) -> float:
    """Matmul FLOPs of one training step. A layer costs forward + input gradient + weight
    gradient (3x its forward); a layer whose input needs no gradient (the input projection, the
    first box-MLP layer and the first target-head layer all read stored data) costs 2x."""
    h, e = model.hidden, model.embed_dim
    clips = 2 * batch * V  # clips in both sets
    tokens = 2 * batch * (V + 1)  # plus a SET token per set
    masked = pretext.mask_ratio * clips
    first = clips * D * h + clips * 7 * 2 * h + clips * D * model.target_head[0]  # 2x layers
    rest = clips * 2 * h * h  # second box-MLP layer
    per_block = tokens * (3 * h * h + h * h + 2 * h * int(h * model.mlp_ratio))
    per_block += 2 * batch * 2 * (V + 1) ** 2 * h  # QK^T and AV
    rest += model.depth * per_block

    def head(n: float, dims: tuple[int, ...], d_in: int) -> float:
        total, prev = 0.0, d_in
        for d in dims:
            total += n * prev * d
            prev = d
        return total

    rest += head(2 * batch, model.set_head, h)
    rest += head(masked if sparse else clips, model.pred_head, h)
    rest += head(clips, model.target_head[1:], model.target_head[0])
    rest += (masked if sparse else clips) * clips * e  # MCM logits
    rest += 2 * batch * batch * e  # SET logits, both directions
    return 2 * (2 * first + 3 * rest)


def release_step(
    model: ScaleModel,
    features: torch.Tensor,
    boxes: torch.Tensor,
    num_clips: torch.Tensor,
    config: PretextConfig,
    generator: torch.Generator,
    **_: object,
) -> dict[str, torch.Tensor]:
    """One batch's losses computed as the reference release does, for the plain
    implementation: the prediction head at every clip, every logit held whole, the masked rows
    found with `nonzero`. Same clip sets and masks as `pretext_step`; one process, fp32."""
    sets = draw_clip_sets(features, boxes, num_clips, config, generator, Gather())
    out = model(sets.features, sets.boxes, valid=sets.valid, masked=sets.masked)
    t = config.temperature
    set_emb = F.normalize(model.set_head(out.set).float(), dim=-1)  # (2B, E)
    b = set_emb.shape[0] // 2
    set_logits = set_emb[:b] @ set_emb[b:].t() / t  # (B, B)
    labels = torch.arange(b, device=set_emb.device)  # (B,)
    set_loss = (F.cross_entropy(set_logits, labels) + F.cross_entropy(set_logits.t(), labels)) / 2
    pred = F.normalize(model.pred_head(out.clips).flatten(0, 1).float(), dim=-1)  # (2B*V, E)
    target = F.normalize(model.target_head(sets.features.flatten(0, 1)).float(), dim=-1)
    logits = pred @ target.t() / t  # (2B*V, 2B*V)
    logits = logits.masked_fill(~sets.valid.flatten()[None, :], float("-inf"))
    rows = sets.masked.flatten().nonzero().squeeze(1)  # (M,)
    mcm_loss = F.cross_entropy(logits[rows], rows)
    loss = config.mcm_weight * mcm_loss + config.set_weight * set_loss
    return {"loss": loss, "mcm_loss": mcm_loss.detach(), "set_loss": set_loss.detach()}


def run_one(
    device: torch.device, batch: int, impl: str, min_seconds: float, *, profile: bool = False
) -> dict | str:
    torch.manual_seed(0)
    sparse = impl != "plain"
    model_cfg = ModelConfig(input_dim=D)
    pretext = PretextConfig(num_views=V)
    config = TrainConfig(
        model=model_cfg,
        pretext=pretext,
        batch_size=batch,
        epochs=1000,
        precision="auto" if sparse else "fp32",
        compile=impl.endswith("compile"),
        progress=False,
    )
    videos = max(4 * batch, 256)
    data = TrainData(
        store=None,
        features=torch.randn(videos, K, D, device=device).half(),
        boxes=torch.rand(videos, K, 7, device=device),
        num_clips=torch.full((videos,), K, device=device),
    )
    model = ScaleModel(model_cfg).to(device)
    if not sparse:  # the reference computation uses torch's own dropout
        for block in model.blocks:
            block.drop = torch.nn.Dropout(model_cfg.dropout)
            block.mlp[2] = torch.nn.Dropout(model_cfg.dropout)
    if sparse:
        optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, fused=False)
    step_losses = engine.pretext_step if sparse else release_step
    with (
        tempfile.TemporaryDirectory() as run,
        mock.patch.object(engine, "pretext_step", step_losses),
    ):
        trainer = Trainer(
            config=config,
            full_config={},
            model=model,
            optimizer=optimizer,
            data=data,
            gather=Gather(),
            device=device,
            autocast=autocast_dtype(config.precision, device),
            run=Path(run),
        )
        order = trainer.epoch_order(0)

        def step(i: int) -> None:
            lo = (i % (videos // batch)) * batch
            trainer.train_step(i, order[lo : lo + batch])

        warmup = 3 if config.compile else 2
        for i in range(warmup):
            step(i)
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as profiler

            activities = [ProfilerActivity.CPU] + (
                [ProfilerActivity.CUDA] if device.type == "cuda" else []
            )
            with profiler(activities=activities) as prof:
                step(warmup)
                sync(device)
            return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps, start = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - start < min_seconds:
            step(warmup + steps)
            steps += 1
        sync(device)
        seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    flops = step_flops(batch, model_cfg, pretext, sparse=sparse)
    return {
        "device": device.type,
        "device_name": describe(device).line(),
        "batch_size": batch,
        "implementation": impl,
        "precision": "bf16" if trainer.autocast is not None else "fp32",
        "samples_per_s": steps * batch / seconds,
        "step_ms": 1000 * seconds / steps,
        "steps_timed": steps,
        "peak_mem_bytes": int(peak),
        "step_flops": flops,
        "achieved_flops_per_s": flops * steps / seconds,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 19, 57, 512, 2048])
    p.add_argument("--implementations", nargs="+", default=["plain", "fast"])
    p.add_argument("--compile", action="store_true", help="also time fast+compile")
    p.add_argument("--min-seconds", type=float, default=5.0, help="timing per configuration")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of every configuration, interleaved; rows report the median",
    )
    p.add_argument(
        "--peak-runs",
        type=int,
        default=8,
        help="runs per shape of the matmul peak (0: no peak, no fraction of it)",
    )
    p.add_argument(
        "--emulated",
        action="store_true",
        help="also time the matmul peak of a precision this device would emulate (slow)",
    )
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument(
        "--profile",
        nargs=2,
        metavar=("BATCH", "IMPL"),
        help="print the torch profiler's op table for one step instead",
    )
    p.add_argument("--one", nargs=2, metavar=("BATCH", "IMPL"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if args.profile:
        print(run_one(device, int(args.profile[0]), args.profile[1], 0.0, profile=True))
        return 0
    if args.one:  # child process: one configuration, JSON on stdout
        row = run_one(device, int(args.one[0]), args.one[1], args.min_seconds)
        print(json.dumps(row))
        return 0
    impls = list(args.implementations) + (["fast+compile"] if args.compile else [])
    machine = describe(device)
    print(f"device: {machine.line()}")
    # The fast step runs bf16 only where it is native (`precision: auto`); its peak is timed
    # there too, and elsewhere only when asked: an emulated bf16 matmul takes minutes.
    precisions, skipped = choose_precisions(["fp32", "bf16"], machine, emulated=args.emulated)
    for line in skipped:
        print(line)
    peaks = {}
    if args.peak_runs:
        peaks = {p: matmul_peak(device, DTYPES[p], runs=args.peak_runs) for p in precisions}
        print(
            "measured matmul peak: "
            + ", ".join(f"{p} {peak / 1e12:.3f} TFLOP/s" for p, peak in peaks.items())
        )
    runs: dict[tuple[int, str], list[dict]] = {}
    for repeat in range(args.repeats):  # interleaved, so drifts of a shared machine hit all rows
        for batch in args.batch_sizes:
            for impl in impls:
                if device.type == "cpu":
                    cmd = [sys.executable, __file__, "--device", "cpu", "--one", str(batch), impl]
                    cmd += ["--min-seconds", str(args.min_seconds)]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    row = json.loads(out.strip().splitlines()[-1])
                else:
                    row = run_one(device, batch, impl, args.min_seconds)
                runs.setdefault((batch, impl), []).append(row)
                print(
                    f"{'' if args.repeats == 1 else f'run {repeat + 1}: '}batch {batch:5d} "
                    f"{impl:13s} {row['precision']:4s} {row['samples_per_s']:10.1f} videos/s  "
                    f"{row['step_ms']:9.1f} ms/step  peak {row['peak_mem_bytes'] / 2**30:6.2f} GiB",
                    flush=True,
                )
    rows = []
    for repeats in runs.values():
        ranked = sorted(repeats, key=lambda r: r["samples_per_s"])
        row = dict(ranked[len(ranked) // 2])  # the median run (upper median for even counts)
        row["samples_per_s_runs"] = [r["samples_per_s"] for r in repeats]
        row["peak_flops_per_s"] = peaks.get(row["precision"])
        if row["peak_flops_per_s"]:
            row["flops_fraction"] = row["achieved_flops_per_s"] / row["peak_flops_per_s"]
        rows.append(row)
    if args.repeats > 1:
        print(f"median of {args.repeats} runs:")
    for row in rows:
        fraction = row.get("flops_fraction")
        print(
            f"batch {row['batch_size']:5d} {row['implementation']:13s} {row['precision']:4s} "
            f"{row['samples_per_s']:10.1f} videos/s  {row['step_ms']:9.1f} ms/step  "
            f"peak {row['peak_mem_bytes'] / 2**30:6.2f} GiB  "
            f"{row['achieved_flops_per_s'] / 1e12:6.3f} TFLOP/s"
            + (f" ({100 * fraction:.1f}% of peak)" if fraction else ""),
            flush=True,
        )
    base = {r["batch_size"]: r["samples_per_s"] for r in rows if r["implementation"] == "plain"}
    for r in rows:
        if r["batch_size"] in base:
            r["speedup_vs_plain"] = r["samples_per_s"] / base[r["batch_size"]]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
