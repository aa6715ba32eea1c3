"""The design study's chosen candidate is the demo's default, and the log's selection rule."""

import dataclasses
import json
from pathlib import Path

import demo_design
from scalevid.demo.pipeline import DemoConfig

CHOSEN = "s9-order3-shared-edges-k16-n480-attentive2"
LOG = Path(demo_design.__file__).parent / "results" / "demo_study.jsonl"


def test_the_chosen_candidate_is_the_demos_default():
    chosen = demo_design.candidate_config(CHOSEN)
    default = DemoConfig()
    # the study scores on val (its own count there); the demo on its test split
    assert dataclasses.replace(chosen.dataset, test=300) == default.dataset
    assert dataclasses.replace(chosen, dataset=default.dataset) == default
    # and the first design is still what the earlier candidates changed
    first = demo_design.candidate_config("default")
    assert first.dataset.task == "permutation" and first.train_clips == 8


def test_the_logged_selection_follows_the_rule():
    runs = [json.loads(line) for line in LOG.read_text().splitlines()]
    scored = [r for r in runs if r.get("scored_on") == "val"]
    assert {r["candidate"] for r in scored} >= {CHOSEN}
    for run in scored:
        assert run["selection"] == demo_design.selection(run)
    chosen = next(r for r in scored if r["candidate"] == CHOSEN)
    assert chosen["ceiling_passes"] and chosen["selection"]["helped"]
    assert sum(chosen["timings"].values()) <= 600  # the budget, rule 3
    # the confirmation seeds of an earlier frozen design stopped at the ceiling rule
    stopped = [r for r in runs if r.get("scored_on") == "test" and not r["ceiling_passes"]]
    assert {r["data_seed"] for r in stopped} == {1, 2}
