"""The machine a benchmark runs on: its name and flags, the precisions it runs natively, and its
own matmul peak.

bf16 is native on CPUs with bf16 matrix instructions (x86 `avx512_bf16` or `amx_bf16`, Arm
`bf16`; `scalevid.hardware.cpuinfo_has_bf16` decides, as it does for `precision: auto`) and on
CUDA cards that support it; fp16 only on CUDA. Elsewhere torch emulates them, many times slower
than fp32, so a benchmark measures an emulated precision only when asked (`--emulated`) and
says in one line what it left out.

    python benchmarks/machine.py          # this machine's line and its matmul peaks
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from scalevid.hardware import cpuinfo_has_bf16, resolve_device

# The CPU flags that decide a benchmark's speed: vector width, int8 / bf16 dot products, tiles.
SHOWN_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
    "bf16",
    "i8mm",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Machine:
    """Where a benchmark ran. `native`: the precisions its device runs in hardware."""

    device: str  # "cpu" or "cuda"
    name: str  # the CPU's model name, or the CUDA card's
    cpu: str  # the host CPU's model name (the same as `name` on CPU)
    flags: tuple[str, ...]  # the host CPU's SHOWN_FLAGS
    kind: str  # see `cpu_kind`; "CUDA" on a card
    native: tuple[str, ...]
    cores: int
    threads: int  # torch's intra-op threads
    torch: str

    def line(self) -> str:
        """One line for a benchmark's header."""
        flags = " ".join(self.flags) or "none of " + " ".join(SHOWN_FLAGS[:4])
        host = f"; host CPU {self.cpu}" if self.device == "cuda" else ""
        return (
            f"{self.name} [{self.kind}], {self.cores} cores, {self.threads} torch threads, "
            f"flags: {flags}{host}; native: {', '.join(self.native)}; torch {self.torch}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_flags(cpuinfo: str) -> set[str]:
    """Every flag of a /proc/cpuinfo text: x86 "flags" lines and Arm "Features" lines."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_kind(cpuinfo: str) -> str:
    """Which of the kinds docs/performance.md is written for a CPU is: "bf16 units (AMX)",
    "bf16 units", "AVX512 without bf16" or "fp32 only"."""
    flags = cpu_flags(cpuinfo)
    if cpuinfo_has_bf16(cpuinfo):
        return "bf16 units (AMX)" if "amx_bf16" in flags else "bf16 units"
    return "AVX512 without bf16" if "avx512f" in flags else "fp32 only"


def native_precisions(device: str, cpuinfo: str, *, cuda_bf16: bool = False) -> tuple[str, ...]:
    """The precisions `device` ("cpu" or "cuda") runs in hardware: fp32 always; on a CPU bf16
    where `cpuinfo` lists bf16 matrix instructions; on CUDA fp16, and bf16 where `cuda_bf16`."""
    if device == "cuda":
        return ("fp32", "bf16", "fp16") if cuda_bf16 else ("fp32", "fp16")
    return ("fp32", "bf16") if cpuinfo_has_bf16(cpuinfo) else ("fp32",)


def choose_precisions(
    wanted: list[str], machine: Machine, *, emulated: bool = False
) -> tuple[list[str], list[str]]:
    """(the precisions of `wanted` to measure on `machine`, one line for each left out): a
    precision the device would emulate is left out unless `emulated`."""
    keep, skipped = [], []
    for precision in wanted:
        if precision in machine.native or emulated:
            keep.append(precision)
        else:
            skipped.append(
                f"{precision}: not measured, {machine.name} has no {precision} matrix units "
                f"(torch would emulate it, slowly); --emulated measures it anyway"
            )
    return keep, skipped


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def describe(device: torch.device | str = "cpu") -> Machine:
    """This machine, as seen from `device` ("auto" allowed; `hardware.DeviceError` when this
    machine has no such device)."""
    device = resolve_device(str(device))
    cpuinfo = read_cpuinfo()
    flags = cpu_flags(cpuinfo)
    cuda = device.type == "cuda"
    cpu = cpu_name(cpuinfo)
    return Machine(
        device=device.type,
        name=torch.cuda.get_device_name(device) if cuda else cpu,
        cpu=cpu,
        flags=tuple(f for f in SHOWN_FLAGS if f in flags),
        kind="CUDA" if cuda else cpu_kind(cpuinfo),
        native=native_precisions(
            device.type, cpuinfo, cuda_bf16=cuda and torch.cuda.is_bf16_supported()
        ),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, *, runs: int = 8) -> float:
    """Best FLOP/s of plain matmuls on the device in `dtype`: square 4096 and the training
    step's own largest shape (8192 x 2048 @ 2048 x 2048), best of `runs` runs each."""
    best = 0.0
    for m, k, n in ((4096, 4096, 4096), (8192, 2048, 2048)):
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(runs):
            sync(device)
            t = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--runs", type=int, default=3, help="matmul runs per shape")
    p.add_argument("--emulated", action="store_true", help="also time emulated precisions")
    args = p.parse_args(argv)
    machine = describe(args.device)
    print(machine.line())
    precisions, skipped = choose_precisions(list(DTYPES), machine, emulated=args.emulated)
    for line in skipped:
        print(line)
    for precision in precisions:
        peak = matmul_peak(torch.device(args.device), DTYPES[precision], runs=args.runs)
        print(f"matmul peak {precision}: {peak / 1e12:.3f} TFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
