"""Device choice and capability detection: which device, and whether bf16 autocast pays off."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]


class DeviceError(ValueError):
    """A device that does not exist on this machine (or is not a device name)."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> cuda when available, else cpu; anything else is passed to torch.device.
    DeviceError (one line, naming --device) when this machine has no such device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"--device {name!r} is not a device name; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name!r} requested but CUDA is not available here; use --device cpu"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(
            f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    """True when the CPU has bf16 matrix instructions (x86 AVX512-BF16 or AMX, Arm BF16), where
    bf16 autocast is faster than fp32; elsewhere it is emulated and slower."""
    try:
        return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists bf16 matrix instructions: `avx512_bf16` or `amx_bf16`
    on an x86 "flags" line, `bf16` on an Arm "Features" line."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        names = set(value.split())
        if key.strip() == "flags" and names & {"avx512_bf16", "amx_bf16"}:
            return True
        if key.strip() == "Features" and "bf16" in names:
            return True
    return False


def flush_denormals() -> bool:
    """Treat subnormal floats (below 1.2e-38 in fp32) as zero in CPU arithmetic, on the calling
    thread and every thread it starts later (x86 FTZ and DAZ, ``torch.set_flush_denormal``).
    Returns whether the CPU supports it. Threads already running keep IEEE arithmetic: call it
    before torch's first parallel operation, which starts its intra-op threads.

    Why: on some CPUs an operation on a subnormal operand takes tens of times as long as on a
    normal one, and long probe trainings make many of them. On a 2-core Intel Xeon with AMX the
    default evaluation's fp32 MLP row ran 3.5-3.6x faster with this, with the same choices and
    scores (docs/performance.md, "Subnormal floats"). No value that small carries meaning in
    these trainings.

    The command line calls this before any work, and so do the evaluation's forked workers; a
    program that uses the library directly calls it itself, first.
    """
    return bool(torch.set_flush_denormal(True))


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device (None = plain fp32)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_has_bf16_matmul()
    else:
        supported = False
    if precision == "bf16" and not supported:
        logger.warning("bf16 requested but %s has no bf16 matrix units; using fp32", device)
        return None
    return torch.bfloat16 if supported else None
