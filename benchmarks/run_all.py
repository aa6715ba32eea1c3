"""Every benchmark's short mode in one command, and one table of what it measured.

    python benchmarks/run_all.py --json benchmarks/results/run_all_NAME.json
    python benchmarks/run_all.py --device cuda --json "$OUT/run_all_cuda.json"

First this machine's matmul peak in each precision its device runs natively (`machine.py`; a
precision it would emulate is left out, and one line says so). Then each part: one benchmark
script in its own process, with the arguments of its short mode (`PARTS` below), its JSON read
back:

  train    train_throughput.py: the Table 1 training step at batch 512 (and 2048 on CUDA),
           plain (the reference release's fp32 step) against fast (the default; bf16 where
           the device has it)
  extract  extract_throughput.py: the I3D backbone on 16 x 64 x 64 clips (and 224 on CUDA),
           plain (an fp32 port) against the default path; random weights (the same speed, no
           download)
  eval     eval_cost.py time: `scalevid eval` with its default settings, one row of each probe
           family (kNN, linear, Transformer, attentive) and one seed, of a generated
           order-of-events store (300 + 60 videos, D = 1024), fp32 (plain) against
           `precision: auto` (the default) where that is bf16; where it is fp32 the two are the
           same and it runs once
  verify   store_verify.py: opening a 0.25 GiB store with its checksums verified, crc32 on one
           thread (plain) against the default thread pool

The table: each measure, its speed over the plain row of its part measured in this run (> 1 is
faster), and for the matmul-bound parts (training, extraction) the fraction of this machine's
own matmul peak in the row's precision. It is printed as markdown, headed by the machine's
name and flags; --json writes the same (and every part's raw result), so two machines' runs
can be compared. Each part's output goes to a log in --logs. docs/performance.md records each
run's time and the load average beside it (both are in the JSON too).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from machine import DTYPES, Machine, choose_precisions, describe, matmul_peak  # a sibling script
from scalevid.hardware import DeviceError, resolve_device

HERE = Path(__file__).resolve().parent
EVAL_STORE = "order360"  # 300 train videos: enough for a hold-out validation split
EVAL_PROBES = ("knn", "linear", "transformer", "attentive")  # a row of each probe family
PART_TIMEOUT_S = 600  # a part past this is stopped, so a slow machine still finishes the rest


@dataclass
class Row:
    """One measure of the table. `vs_plain`: speed over its part's plain row (> 1 is faster);
    `of_peak`: achieved matmul FLOP/s over the machine's own peak in `precision`."""

    part: str
    measure: str
    precision: str
    value: float
    unit: str
    vs_plain: float | None = None
    of_peak: float | None = None


@dataclass(frozen=True)
class Context:
    """What a part's arguments depend on."""

    device: str
    machine: Machine
    work: Path  # a scratch folder for this run
    threads: int


def train_argv(ctx: Context) -> list[str]:
    batches = ["512", "2048"] if ctx.device == "cuda" else ["512"]
    return ["--device", ctx.device, "--batch-sizes", *batches, "--min-seconds", "3"] + [
        "--peak-runs",
        "0",  # run_all times the peak once, for every part
    ]


def train_rows(result: list[dict], peaks: dict[str, float]) -> list[Row]:
    plain = {r["batch_size"]: r["samples_per_s"] for r in result if r["implementation"] == "plain"}
    rows = []
    for r in result:
        peak = peaks.get(r["precision"])
        rows.append(
            Row(
                part="train",
                measure=f"training step, batch {r['batch_size']}: {r['implementation']}",
                precision=r["precision"],
                value=r["samples_per_s"],
                unit="videos/s",
                vs_plain=_ratio(r["samples_per_s"], plain.get(r["batch_size"])),
                of_peak=r["achieved_flops_per_s"] / peak if peak else None,
            )
        )
    return rows


def extract_argv(ctx: Context) -> list[str]:
    cuda = ctx.device == "cuda"
    return [
        "--device",
        ctx.device,
        "--random-weights",
        "--sizes",
        *(["64", "224"] if cuda else ["64"]),
        "--pipeline-sizes",  # none: decoding synthetic videos is not a backbone's speed
        "--batch-size",
        "32" if cuda else "8",
        "--repeats",
        "3",
        "--min-seconds",
        "2",
        "--no-compiled",
    ]


def extract_rows(result: dict, peaks: dict[str, float]) -> list[Row]:
    rows = []
    for entry in result["backbone"]:
        rates = entry["clips_per_s"]
        dtypes = {"plain": "fp32", "fast": _short_dtype(entry["fast_dtype"])}
        for path, name in (("plain", "plain"), ("fast", "default")):
            peak = peaks.get(dtypes[path])
            flops = entry.get("flops_per_clip")
            rows.append(
                Row(
                    part="extract",
                    measure=f"extraction, I3D {entry['clip'].replace('x', ' x ')}: {name}",
                    precision=dtypes[path],
                    value=rates[path],
                    unit="clips/s",
                    vs_plain=_ratio(rates[path], rates["plain"]),
                    of_peak=flops * rates[path] / peak if flops and peak else None,
                )
            )
    return rows


def eval_argv(ctx: Context) -> list[str]:
    # fp32 is the plain row; `auto` (the default) differs from it only where bf16 is native.
    precisions = ["fp32", "auto"] if "bf16" in ctx.machine.native else ["auto"]
    return [
        "time",
        "--store",
        EVAL_STORE,
        "--folder",
        str(ctx.work / "eval"),
        "--run-epochs",
        "5",
        "--seeds",
        "0",
        "--probes",
        *EVAL_PROBES,
        "--device",
        ctx.device,
        "--threads",
        str(ctx.threads),
        "--timeout",
        "300",
        "--precisions",
        *precisions,
    ]


def eval_rows(result: dict, peaks: dict[str, float]) -> list[Row]:
    runs = {r["precision"]: r for r in result["runs"]["HEAD"]}
    native_bf16 = "fp32" in runs  # eval_argv asks for fp32 apart only where bf16 is native
    plain = runs.get("fp32", runs.get("auto"))
    rows = []
    for precision, run in runs.items():
        name = "plain" if precision == "fp32" else "default"
        if not native_bf16:
            name = "default = plain (no bf16 here)"
        rows.append(
            Row(
                part="eval",
                measure=f"evaluation, {EVAL_STORE} store ({', '.join(EVAL_PROBES)}; 1 seed): {name}",
                precision="bf16" if precision == "auto" and native_bf16 else "fp32",
                value=run["seconds"],
                unit="s" + (" (stopped)" if run.get("timed_out") else ""),
                vs_plain=_ratio(plain["seconds"], run["seconds"]),  # seconds: plain / this
            )
        )
    return rows


def verify_argv(ctx: Context) -> list[str]:
    return ["--gb", "0.25", "--repeats", "3", "--dir", str(ctx.work)]


def verify_rows(result: dict, peaks: dict[str, float]) -> list[Row]:
    per_gib = result["seconds_per_gib"]
    rows = []
    for mode, name in (("verified-1", "crc32 on 1 thread"), ("verified", "default")):
        threads = 1 if mode == "verified-1" else result["hash_threads"]
        rows.append(
            Row(
                part="verify",
                measure=f"store open + checksums, {result['features_gib']} GiB: {name}"
                + ("" if threads == 1 else f" ({threads} threads)"),
                precision="",
                value=1 / per_gib[mode],
                unit="GiB/s",
                vs_plain=_ratio(per_gib["verified-1"], per_gib[mode]),
            )
        )
    return rows


@dataclass(frozen=True)
class Part:
    name: str
    script: str
    argv: Callable[[Context], list[str]]
    rows: Callable[[object, dict[str, float]], list[Row]]


PARTS = {
    part.name: part
    for part in (
        Part("train", "train_throughput.py", train_argv, train_rows),
        Part("extract", "extract_throughput.py", extract_argv, extract_rows),
        Part("eval", "eval_cost.py", eval_argv, eval_rows),
        Part("verify", "store_verify.py", verify_argv, verify_rows),
    )
}


def _ratio(numerator: float, denominator: float | None) -> float | None:
    return numerator / denominator if denominator else None


def _short_dtype(name: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)


def run_part(part: Part, ctx: Context, logs: Path) -> dict:
    """Runs one part's short mode; its JSON result, or the error, and the seconds it took."""
    out = ctx.work / f"{part.name}.json"
    command = [sys.executable, str(HERE / part.script), *part.argv(ctx), "--json", str(out)]
    log = logs / f"{part.name}.log"
    start = time.perf_counter()
    with log.open("w") as sink:
        # Its own session, so that a part stopped at the timeout takes its children with it.
        child = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=PART_TIMEOUT_S)
            error = f"exit {code}" if code else None
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            error = f"stopped after {PART_TIMEOUT_S} s"
    report = {
        "command": command[1:],
        "seconds": time.perf_counter() - start,
        "log": str(log),
        "error": error,
    }
    if error is None:
        report["result"] = json.loads(out.read_text())
    return report


def table(
    machine: Machine, peaks: dict[str, float], rows: list[Row], failed: dict[str, str]
) -> str:
    """The markdown table of `rows`, headed by the machine and its matmul peaks; `failed`: the
    parts that measured nothing, and why."""
    peak_text = ", ".join(f"{p} {v / 1e12:.3f} TFLOP/s" for p, v in peaks.items())
    lines = [
        f"Machine: {machine.line()}",
        f"Matmul peak (best of the square 4096 and 8192 x 2048 x 2048 products): {peak_text}",
        "",
        "| measure | precision | value | vs plain | % of matmul peak |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "" if r.vs_plain is None else f"{r.vs_plain:.2f}"
        peak = "" if r.of_peak is None else f"{100 * r.of_peak:.0f}"
        value = f"{r.value:.3g}" if r.value < 100 else f"{r.value:.0f}"
        lines.append(f"| {r.measure} | {r.precision} | {value} {r.unit} | {ratio} | {peak} |")
    lines += [f"\nNot measured: {name} ({why})" for name, why in failed.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--emulated", action="store_true", help="also time emulated matmul peaks")
    p.add_argument("--peak-runs", type=int, default=3, help="runs per shape of the matmul peak")
    p.add_argument("--logs", type=Path, help="each part's output (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="write the machine, the rows and the raw results")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except DeviceError as error:
        print(f"run_all: {error}", file=sys.stderr)
        return 2
    machine = describe(device)
    load_before = os.getloadavg()
    start = time.perf_counter()
    print(f"run_all on {machine.line()}; load average {load_before[0]:.2f}", flush=True)
    wanted = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    precisions, skipped = choose_precisions(wanted, machine, emulated=args.emulated)
    for line in skipped:
        print(line)
    peaks = {p: matmul_peak(device, DTYPES[p], runs=args.peak_runs) for p in precisions}
    print(", ".join(f"matmul peak {p}: {v / 1e12:.3f} TFLOP/s" for p, v in peaks.items()))

    logs = args.logs or Path(tempfile.mkdtemp(prefix="scalevid-run-all-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"each part's output: {logs}/PART.log")
    with tempfile.TemporaryDirectory(prefix="scalevid-run-all-") as work:
        ctx = Context(args.device, machine, Path(work), torch.get_num_threads())
        reports, rows = {}, []
        for i, name in enumerate(args.parts):
            print(f"[{i + 1}/{len(args.parts)}] {name}: {PARTS[name].script} ...", flush=True)
            report = run_part(PARTS[name], ctx, logs)
            reports[name] = report
            if report["error"]:
                tail = Path(report["log"]).read_text().splitlines()[-15:]
                print("\n".join(["    " + line for line in tail]))
                print(f"    {name} failed ({report['error']}) after {report['seconds']:.0f} s")
                continue
            rows += PARTS[name].rows(report["result"], peaks)
            print(f"    done in {report['seconds']:.0f} s", flush=True)
        seconds = time.perf_counter() - start
        load_after = os.getloadavg()
        failed = {n: r["error"] for n, r in reports.items() if r["error"]}
        text = table(machine, peaks, rows, failed)
        print(f"\n{text}\n")
        print(
            f"{seconds:.0f} s in all; load average {load_before[0]:.2f} before, "
            f"{load_after[0]:.2f} after (1 minute)"
        )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            summary = {
                "machine": machine.to_dict(),
                "device": str(device),
                "matmul_peak_flops_per_s": peaks,
                "rows": [asdict(r) for r in rows],
                "seconds": seconds,
                "load_average": {"before": load_before, "after": load_after},
                "parts": reports,
                "table": text,
            }
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
            print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
