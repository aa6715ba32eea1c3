"""Wall time of the demo's probes (all labels), re-run on a finished `scalevid demo` folder.

Runs `evaluate` with exactly the demo's evaluation config on the demo's stores and SCALE run,
`--repeats` times, and checks that results.json (less its paths and file list) and
predictions.npz equal the ones the demo wrote. Where they differ (a change of float rounding
can move a probe's training), it prints, per probe and seed, whether the chosen config is the
same and the test top-1 against the demo's, and the mean test top-1 over the seeds. Each run also
prints the seconds each probe row took over its seeds. To compare two checkouts, run it under each with
the other's `src` first on PYTHONPATH, alternating:

    python benchmarks/eval_demo_probes.py scalevid-demo --repeats 2
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/eval_demo_probes.py scalevid-demo
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scalevid.config import build_config
from scalevid.demo.pipeline import DemoConfig
from scalevid.eval import protocol
from scalevid.eval.config import EvalConfig
from scalevid.eval.protocol import evaluate

# Differ between any two runs without the numbers differing.
_PLACES = ("files", "train_store", "test_store", "run")


def _comparable(path: Path) -> str:
    results = json.loads(path.read_text())
    for key in _PLACES:
        results.pop(key, None)
    return json.dumps(results, sort_keys=True)


def _same_predictions(a: Path, b: Path) -> bool:
    pa, pb = np.load(a), np.load(b)
    return pa.files == pb.files and all(np.array_equal(pa[k], pb[k]) for k in pa.files)


def _chosen(entry: dict) -> dict:
    """A seed's chosen config less its seed (set probes: their grid's fields)."""
    return {k: v for k, v in entry["chosen"].items() if k != "seed"}


def _compare(new: Path, old: Path) -> None:
    """Per probe and seed: the same chosen config?, test top-1 old -> new; the seed means."""
    a, b = json.loads(old.read_text())["probes"], json.loads(new.read_text())["probes"]
    for name, entry in a.items():
        pairs = list(zip(entry["seeds"], b[name]["seeds"], strict=True))
        same = ["=" if _chosen(x) == _chosen(y) else "changed" for x, y in pairs]
        top1 = [(x["test"]["top1"], y["test"]["top1"]) for x, y in pairs]
        means = [statistics.mean(t[i] for t in top1) for i in (0, 1)]
        cells = ", ".join(f"{o:.1f}->{n:.1f} ({c})" for (o, n), c in zip(top1, same, strict=True))
        print(f"  {name}: {cells}; mean {means[0]:.2f} -> {means[1]:.2f}")


def _time_rows(seconds: dict[str, float]) -> None:
    """Add each probe row's training and scoring seconds (over its seeds) to `seconds`, by
    wrapping the protocol's two runners (where the imported scalevid has them)."""
    for runner in ("_run_head_probe", "_run_set_probe"):
        inner = getattr(protocol, runner, None)
        if inner is None:
            continue

        def timed(name: str, *args: Any, _inner: Callable[..., Any] = inner, **kw: Any) -> Any:
            start = time.perf_counter()
            result = _inner(name, *args, **kw)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            return result

        setattr(protocol, runner, timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo", type=Path, help="a finished `scalevid demo` output folder")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    config = build_config(
        EvalConfig, ("demo", DemoConfig().eval_settings()), ("benchmark", {"progress": False})
    )
    report = args.demo / "report"
    seconds, same = [], []
    rows: dict[str, float] = {}
    _time_rows(rows)
    for _ in range(args.repeats):
        rows.clear()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            evaluate(
                train_store=args.demo / "stores" / "train",
                test_store=args.demo / "stores" / "test",
                run=args.demo / "run",
                out=tmp,
                config=config,
            )
            seconds.append(time.perf_counter() - start)
            print("per probe row (s):", {name: round(t, 1) for name, t in rows.items()})
            out = Path(tmp)
            same.append(
                _comparable(out / "results.json") == _comparable(report / "results.json")
                and _same_predictions(out / "predictions.npz", report / "predictions.npz")
            )
            if not same[-1]:
                print("differs from the demo's (test top-1 demo -> this run, chosen config):")
                _compare(out / "results.json", report / "results.json")
                pa, pb = np.load(out / "predictions.npz"), np.load(report / "predictions.npz")
                moved = sum(int((pa[k] != pb[k]).sum()) for k in pa.files if k in pb.files)
                total = sum(pa[k].size for k in pa.files)
                print(f"  predictions.npz: {moved} of {total} entries differ")
    runs = ", ".join(f"{s:.1f}" for s in seconds)
    print(f"probes: {runs} s (median {statistics.median(seconds):.1f} s)")
    print(f"results and predictions equal the demo's: {all(same)}")


if __name__ == "__main__":
    main()
