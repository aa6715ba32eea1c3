"""Attention of short clip sets on a CPU: torch's fused kernel against the explicit products of
`scalevid.model.attention`, which the model takes for sets of at most SHORT_SET_TOKENS tokens in
half precision (bf16 autocast) on a CPU; in fp32 the model keeps the fused kernel.

Shapes: (B, 8 heads, n, 32), B = 576 // n sets (the Transformer probe's batch: 64 videos of
8 clips and the SET token at n = 9), forward + backward (training, dropout 0.1 and 0) and forward
alone (prediction), medians of `--repeats` timings of `--calls` calls each.

    python benchmarks/attention_cpu.py --json benchmarks/results/attention_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from machine import describe
from scalevid.model import SHORT_SET_TOKENS, Dropout, attention

HEADS, HEAD_DIM, TOKENS = 8, 32, 576
LENGTHS = (9, 17, 33, 65, 128)


def _fused(q, k, v, mask, drop: Dropout) -> torch.Tensor:
    p = drop.p if drop.training else 0.0
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def _median_ms(call: Callable[[], object], *, calls: int, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def measure(n: int, dtype: torch.dtype, *, calls: int, repeats: int) -> dict[str, float]:
    """Milliseconds per call of each path at set length n in a half-precision dtype (n <=
    SHORT_SET_TOKENS, so that `attention` takes its explicit path)."""
    b = max(1, TOKENS // n)
    q, k, v = (torch.randn(b, HEADS, n, HEAD_DIM, dtype=dtype, requires_grad=True) for _ in "qkv")
    grad = torch.randn(b, HEADS, n, HEAD_DIM, dtype=dtype)
    mask = torch.ones(b, 1, 1, n, dtype=torch.bool)
    out: dict[str, float] = {}
    for name, path in (("fused", _fused), ("explicit", attention)):
        for p in (0.1, 0.0):
            drop = Dropout(p).train()
            out[f"{name} train p={p}"] = _median_ms(
                lambda d=drop, f=path: f(q, k, v, mask, d).backward(grad),
                calls=calls,
                repeats=repeats,
            )
        with torch.no_grad():
            drop = Dropout(0.1).eval()
            out[f"{name} forward"] = _median_ms(
                lambda d=drop, f=path: f(q, k, v, mask, d), calls=calls, repeats=repeats
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a worker's)")
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if max(args.lengths) > SHORT_SET_TOKENS:
        p.error(f"lengths must be <= {SHORT_SET_TOKENS}, where the explicit path is taken")
    torch.set_num_threads(args.threads)
    machine = describe("cpu")
    print(machine.line())
    rows = []
    for n in args.lengths:
        ms = measure(n, torch.bfloat16, calls=args.calls, repeats=args.repeats)
        rows.append({"dtype": "bfloat16", "n": n, "ms": ms})
        print(f"bfloat16 n={n:<4}", "  ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    if args.json:
        result = {"threads": args.threads, "machine": machine.line(), "rows": rows}
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
