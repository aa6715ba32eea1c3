"""Replay the set and attentive probes' recorded validation curves under other early-stopping
rules, to see what a rule would save and what it would change, without training anything.

Every set / attentive row of a results.json keeps, per seed, each grid point's validation
curve up to the step it stopped at (``curves.grid``). A rule (patience, minimum steps, and
whether a lower validation loss counts as progress) is replayed with the trainer's own
bookkeeping (``eval.engine.Curve``) and chooser (``eval.selection.select_index``). The replay is
exact for a rule that stops a curve no later than the recorded run did: until then the run is
the same. A curve the rule would run past its recorded end is counted as `unknown`, and its
recorded end stands in for the stop.

The refit (its steps depend on the chosen step) and test scores are not replayed. The first
rule given should be the one the runs used: its replay must give their recorded choices, which
the script checks (`--check`).

    python benchmarks/stop_rules.py REPORT/results.json [...] --rules 5:100:loss 3:100:loss \
        5:50:loss --check --json OUT.json

A rule is PATIENCE:MIN_STEPS:PROGRESS, PROGRESS `loss` (a better point or a lower validation
loss is progress, the default protocol) or `best` (a better point only).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scalevid.eval.engine import Curve
from scalevid.eval.selection import select_index


@dataclass(frozen=True)
class Rule:
    patience: int
    min_steps: int
    progress: str  # "loss" or "best"

    @classmethod
    def parse(cls, text: str) -> Rule:
        try:
            patience, min_steps, progress = text.split(":")
            rule = cls(int(patience), int(min_steps), progress)
        except ValueError:
            raise ValueError(f"a rule is PATIENCE:MIN_STEPS:loss|best, got {text!r}") from None
        if rule.patience < 1 or rule.min_steps < 0 or rule.progress not in ("loss", "best"):
            raise ValueError(f"a rule needs patience >= 1, min_steps >= 0, loss|best: {text!r}")
        return rule

    def __str__(self) -> str:
        return f"{self.patience}:{self.min_steps}:{self.progress}"


def stop_index(curve: dict[str, list], rule: Rule, schedule: int) -> tuple[int, bool]:
    """(index of the validation the rule stops after, whether that is known): replayed with
    ``Curve``; a rule that would not stop within the recorded curve gives its last index, known
    only where the curve ran to the end of its `schedule`."""
    replay = Curve()
    for i, (step, metric, loss) in enumerate(
        zip(curve["steps"], curve["metric"], curve["loss"], strict=True)
    ):
        replay.add(step, metric, loss)
        waited = replay.since_progress() if rule.progress == "loss" else replay.since_best()
        if waited >= rule.patience and step >= rule.min_steps:
            return i, True
    return len(curve["steps"]) - 1, curve["steps"][-1] >= schedule


def replay_seed(curves: list[dict[str, list]], rule: Rule, schedule: int) -> dict[str, Any]:
    """One row and seed under `rule`: the chosen (grid point, validation index), its validation
    metric and step, the selection steps (each point's stop step, summed) and unknown stops
    (`schedule`: the steps of every point's schedule)."""
    stops = [stop_index(c, rule, schedule) for c in curves]
    points = [(g, j) for g, (stop, _) in enumerate(stops) for j in range(stop + 1)]
    best = select_index(
        [curves[g]["metric"][j] for g, j in points], [curves[g]["loss"][j] for g, j in points]
    )
    g, j = points[best]
    return {
        "chosen": [g, j],
        "chosen_step": curves[g]["steps"][j],
        "val": curves[g]["metric"][j],
        "selection_steps": sum(curves[k]["steps"][stop] for k, (stop, _) in enumerate(stops)),
        "unknown": sum(not known for _, known in stops),
    }


def replay(paths: list[Path], rules: list[Rule], *, check: bool) -> dict[str, Any]:
    """Every set / attentive row and seed of the results files under every rule, with totals;
    `check`: the first rule's replay must give each run's recorded choice."""
    entries = []
    for path in paths:
        results = json.loads(path.read_text())
        for row, entry in results["probes"].items():
            for seed in entry["seeds"]:
                recorded = seed.get("curves")
                if not recorded:
                    continue
                schedule = seed["chosen"]["schedule_steps"]
                per_rule = {str(r): replay_seed(recorded["grid"], r, schedule) for r in rules}
                first = per_rule[str(rules[0])]
                chosen_step = seed["chosen"]["steps"]
                if check and (
                    first["chosen"][0] != recorded["chosen"] or first["chosen_step"] != chosen_step
                ):
                    raise SystemExit(
                        f"{path} {row} seed {seed['seed']}: rule {rules[0]} chose point "
                        f"{first['chosen'][0]} step {first['chosen_step']}, the run chose "
                        f"{recorded['chosen']} step {chosen_step}: it is not the runs' rule"
                    )
                entries.append({"file": str(path), "row": row, "seed": seed["seed"], **per_rule})
    base = str(rules[0])
    totals = {}
    for rule in map(str, rules):
        steps = sum(e[rule]["selection_steps"] for e in entries)
        totals[rule] = {
            "selection_steps": steps,
            "of_first": steps / max(1, sum(e[base]["selection_steps"] for e in entries)),
            "changed": sum(e[rule]["chosen"] != e[base]["chosen"] for e in entries),
            "val_lost": sum(e[base]["val"] - e[rule]["val"] for e in entries)
            / max(1, len(entries)),
            "unknown": sum(e[rule]["unknown"] for e in entries),
        }
    return {
        "rules": [asdict(r) for r in rules],
        "runs": len(entries),
        "totals": totals,
        "entries": entries,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, nargs="+", help="results.json files")
    p.add_argument("--rules", nargs="+", default=["5:100:loss", "3:100:loss", "5:50:loss"])
    p.add_argument(
        "--check", action="store_true", help="the first rule must give the runs' choices"
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    out = replay(args.results, [Rule.parse(r) for r in args.rules], check=args.check)
    print(f"{out['runs']} row-seed runs from {len(args.results)} file(s)")
    for rule, t in out["totals"].items():
        print(
            f"  {rule:>12}  selection steps {t['selection_steps']:6d} ({t['of_first']:.2f} of the "
            f"first)  choice changed {t['changed']:3d}  mean val top-1 lost {t['val_lost']:.2f}"
            f"  unknown stops {t['unknown']}"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
