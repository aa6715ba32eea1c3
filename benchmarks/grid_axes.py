"""Does a grid axis matter? Read finished evaluations' grids and, for one config field (an
axis of the head, set or attentive grids, e.g. `weight_decay`), count the groups of grid points
that differ in that field alone and got the same validation score at every value of it, and
what keeping only some of its values would have lost: per row and seed, the best validation
score over the whole grid against the best over the points at the kept values.

    python benchmarks/grid_axes.py REPORT/results.json [...] --axis weight_decay \
        --keep 0.0 0.01 --rows linear scale_linear mlp --json OUT.json

Nothing is trained; the scores are those results.json recorded (`grid[*].val`, chosen on
validation, never test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def axis_groups(grid: list[dict[str, Any]], axis: str) -> list[dict[float, float]]:
    """The grid's points grouped by every config field but `axis`: per group, axis value ->
    validation score."""
    groups: dict[str, dict[float, float]] = {}
    for point in grid:
        config = point["config"]
        rest = json.dumps({k: v for k, v in config.items() if k != axis}, sort_keys=True)
        groups.setdefault(rest, {})[config[axis]] = point["val"]
    return list(groups.values())


def seed_summary(
    grid: list[dict[str, Any]], axis: str, keep: list[float] | None, tol: float = 1e-9
) -> dict[str, Any]:
    """One row and seed: groups, groups whose score is the same at every axis value, the
    largest spread within a group, and (with `keep`) the best score lost by keeping only those
    axis values."""
    groups = [g for g in axis_groups(grid, axis) if len(g) > 1]
    spreads = [max(g.values()) - min(g.values()) for g in groups]
    out: dict[str, Any] = {
        "groups": len(groups),
        "same": sum(s <= tol for s in spreads),
        "largest_spread": max(spreads, default=0.0),
    }
    if keep is not None:
        best = max(p["val"] for p in grid)
        kept = [p["val"] for p in grid if any(abs(p["config"][axis] - k) <= tol for k in keep)]
        out["lost"] = best - max(kept) if kept else None
    return out


def summarise(
    paths: list[Path], axis: str, rows: list[str] | None, keep: list[float] | None
) -> dict[str, Any]:
    """Every matching row and seed of the results files, with totals per row."""
    entries = []
    for path in paths:
        results = json.loads(path.read_text())
        for row, entry in results["probes"].items():
            if rows and row not in rows:
                continue
            for seed in entry["seeds"]:
                grid = seed.get("grid") or []
                if not grid or axis not in grid[0]["config"]:
                    continue
                summary = seed_summary(grid, axis, keep)
                entries.append({"file": str(path), "row": row, "seed": seed["seed"], **summary})
    totals: dict[str, dict[str, Any]] = {}
    for e in entries:
        t = totals.setdefault(e["row"], {"seeds": 0, "groups": 0, "same": 0, "largest_spread": 0.0})
        t["seeds"] += 1
        t["groups"] += e["groups"]
        t["same"] += e["same"]
        t["largest_spread"] = max(t["largest_spread"], e["largest_spread"])
        if keep is not None:
            t["lost_max"] = max(t.get("lost_max", 0.0), e["lost"] or 0.0)
            t["lost_seeds"] = t.get("lost_seeds", 0) + bool(e["lost"])
    return {"axis": axis, "keep": keep, "rows": rows, "totals": totals, "entries": entries}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--axis", required=True, help="a grid config field, e.g. weight_decay")
    p.add_argument("--keep", nargs="+", type=float, help="axis values to keep (what is lost)")
    p.add_argument("--rows", nargs="+", help="rows to read (default: every row with the axis)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    report = summarise(args.results, args.axis, args.rows, args.keep)
    for row, t in report["totals"].items():
        lost = f", best lost by --keep: at most {t['lost_max']:.2f}" if args.keep else ""
        print(
            f"{row:16s} {t['seeds']} seeds: {t['same']} of {t['groups']} groups score the same "
            f"at every {args.axis}, largest spread {t['largest_spread']:.2f}{lost}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
