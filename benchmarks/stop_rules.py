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

    python benchmarks/stop_rules.py REPORT/results.json [...] --rules 5:100:loss:median \
        5:100:loss 3:100:loss --check --json OUT.json

A rule is PATIENCE:MIN_STEPS:PROGRESS[:median], PROGRESS `loss` (a better point or a lower
validation loss is progress, the default protocol) or `best` (a better point only); `median`
adds the median stopping rule (``eval.engine.below_median``). That rule compares grid points
with each other, so the replay trains them in the evaluation's order: inputs narrowest first
(raw features last), the points that share a pass (``set_probes.stack_key``) validated together.
Selection steps are also counted per input (`input_pca`): a raw-feature step of the attentive
probe costs more than ten of its 64-component input.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scalevid.eval.engine import Curve, below_median
from scalevid.eval.selection import select_index

# The config fields in which the points of one training pass may differ (``stack_key``).
_PASS_FREE = ("lr", "predictor_lr_scale", "weight_decay", "epochs", "steps", "schedule_steps")


@dataclass(frozen=True)
class Rule:
    patience: int
    min_steps: int
    progress: str  # "loss" or "best"
    median: bool = False

    @classmethod
    def parse(cls, text: str) -> Rule:
        parts = text.split(":")
        try:
            if len(parts) not in (3, 4) or parts[3:] not in ([], ["median"]):
                raise ValueError
            rule = cls(int(parts[0]), int(parts[1]), parts[2], median=len(parts) == 4)
        except ValueError:
            raise ValueError(
                f"a rule is PATIENCE:MIN_STEPS:loss|best[:median], got {text!r}"
            ) from None
        if rule.patience < 1 or rule.min_steps < 0 or rule.progress not in ("loss", "best"):
            raise ValueError(f"a rule needs patience >= 1, min_steps >= 0, loss|best: {text!r}")
        return rule

    def __str__(self) -> str:
        return f"{self.patience}:{self.min_steps}:{self.progress}" + (
            ":median" if self.median else ""
        )


def training_passes(configs: list[dict[str, Any]]) -> list[list[int]]:
    """The grid points (indices into `configs`, a seed's recorded grid) in the passes and order
    the evaluation trains them: inputs narrowest first, the raw features (`input_pca` 0) last;
    within an input, the points of one stack key together, in grid order."""
    order = sorted(range(len(configs)), key=lambda i: _input_rank(configs[i]))
    passes: dict[tuple, list[int]] = {}
    for i in order:
        key = tuple(sorted((k, repr(v)) for k, v in configs[i].items() if k not in _PASS_FREE))
        passes.setdefault(key, []).append(i)
    return list(passes.values())


def _input_rank(config: dict[str, Any]) -> tuple[bool, int]:
    width = config.get("input_pca", 0)
    return (width == 0, width)


def stop_indices(
    curves: list[dict[str, list]], passes: list[list[int]], rule: Rule, schedule: int
) -> list[tuple[int, bool, bool]]:
    """Per grid point, (index of the validation the rule stops it after, whether that is known,
    whether the median rule stopped it), replayed with ``Curve`` pass by pass: a point whose
    recorded curve ends before the rule stops it ends there, known only where the curve ran to
    the end of its `schedule`. The median rule's finished curves are the points of earlier
    passes and those of this pass stopped at an earlier validation, pruned ones left out."""
    stops: list[tuple[int, bool, bool]] = [(0, False, False)] * len(curves)
    finished: list[Curve] = []
    for members in passes:
        replays = {g: Curve() for g in members}
        live = set(members)
        for step in sorted({s for g in members for s in curves[g]["steps"]}):
            ended = []
            for g in [g for g in members if g in live and step in curves[g]["steps"]]:
                curve, i = curves[g], curves[g]["steps"].index(step)
                replay = replays[g]
                replay.add(step, curve["metric"][i], curve["loss"][i])
                if step < rule.min_steps:
                    waited, pruned = 0, False
                else:
                    waited = (
                        replay.since_progress() if rule.progress == "loss" else replay.since_best()
                    )
                    pruned = (
                        waited < rule.patience
                        and rule.median
                        and below_median(replay, finished, step)
                    )
                if waited >= rule.patience or pruned:
                    stops[g] = (i, True, pruned)
                elif i == len(curve["steps"]) - 1:
                    stops[g] = (i, step >= schedule, False)
                else:
                    continue
                live.discard(g)
                if not pruned:
                    ended.append(replay)
            finished += ended
    return stops


def stop_index(curve: dict[str, list], rule: Rule, schedule: int) -> tuple[int, bool]:
    """One curve alone (a rule without the median part): (index of the validation the rule
    stops after, whether that is known)."""
    (stop,) = stop_indices([curve], [[0]], rule, schedule)
    return stop[0], stop[1]


def replay_seed(
    curves: list[dict[str, list]],
    rule: Rule,
    schedule: int,
    configs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One row and seed under `rule`: the chosen (grid point, validation index), its validation
    metric and step, the selection steps (each point's stop step, summed; in all and per
    input), the points the median rule stopped and unknown stops (`schedule`: the steps of every
    point's schedule; `configs`: the recorded grid's configs, for the training order)."""
    configs = configs or [{} for _ in curves]
    stops = stop_indices(curves, training_passes(configs), rule, schedule)
    points = [(g, j) for g, (stop, _, _) in enumerate(stops) for j in range(stop + 1)]
    best = select_index(
        [curves[g]["metric"][j] for g, j in points], [curves[g]["loss"][j] for g, j in points]
    )
    g, j = points[best]
    by_input: dict[str, int] = {}
    for k, (stop, _, _) in enumerate(stops):
        width = str(configs[k].get("input_pca", 0))
        by_input[width] = by_input.get(width, 0) + curves[k]["steps"][stop]
    return {
        "chosen": [g, j],
        "chosen_step": curves[g]["steps"][j],
        "val": curves[g]["metric"][j],
        "selection_steps": sum(by_input.values()),
        "steps_by_input": by_input,
        "pruned": sum(pruned for _, _, pruned in stops),
        "unknown": sum(not known for _, known, _ in stops),
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
                configs = [g["config"] for g in seed.get("grid", [])] or None
                per_rule = {
                    str(r): replay_seed(recorded["grid"], r, schedule, configs) for r in rules
                }
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
            "pruned": sum(e[rule]["pruned"] for e in entries),
            "steps_by_input": {
                width: sum(e[rule]["steps_by_input"].get(width, 0) for e in entries)
                for width in sorted(
                    {w for e in entries for w in e[rule]["steps_by_input"]}, key=int
                )
            },
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
            f"  unknown stops {t['unknown']}  pruned {t['pruned']}  steps by input "
            f"{t['steps_by_input']}"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
