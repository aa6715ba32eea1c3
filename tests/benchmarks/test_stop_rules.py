"""stop_rules.py: recorded validation curves replayed under other early-stopping rules, checked
on a hand-built results.json whose stops and choices are worked out by hand."""

import json

import pytest

import stop_rules

# Two grid points of one row and seed, validated every 10 steps, schedule 60 steps. The run used
# patience 4 (a lower validation loss counts as progress), no step floor: point 0 stopped at
# step 60 (4 validations after its last progress at step 20); point 1 ran to the end of its
# schedule, and its step 50 (top-1 70) was chosen.
POINT0 = {"steps": [10, 20, 30, 40, 50, 60], "metric": [50, 60, 60, 60, 60, 60],
          "loss": [1.0, 0.9, 0.95, 0.96, 0.97, 0.98]}  # fmt: skip
POINT1 = {"steps": [10, 20, 30, 40, 50, 60], "metric": [40, 40, 40, 40, 70, 70],
          "loss": [1.2, 1.3, 1.0, 0.9, 0.8, 0.85]}  # fmt: skip


def _results(tmp_path, schedule=60, grid=None):
    seed = {
        "seed": 0,
        "chosen": {"steps": 50, "schedule_steps": schedule},
        "curves": {"chosen": 1, "grid": [POINT0, POINT1]},
    }
    if grid is not None:
        seed["grid"] = grid
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps({"probes": {"transformer": {"seeds": [seed]}, "knn": {"seeds": [{}]}}})
    )
    return path


def test_the_runs_rule_gives_their_choice_and_a_shorter_patience_changes_it(tmp_path):
    rules = [stop_rules.Rule.parse("4:0:loss"), stop_rules.Rule.parse("1:0:loss")]
    out = stop_rules.replay([_results(tmp_path)], rules, check=True)
    assert out["runs"] == 1  # the kNN row has no curves
    (entry,) = out["entries"]
    run = entry["4:0:loss"]
    assert run["chosen"] == [1, 4] and run["chosen_step"] == 50 and run["val"] == 70
    assert run["selection_steps"] == 120 and run["unknown"] == 0  # point 1 ended its schedule
    short = entry["1:0:loss"]
    # point 0 stops at step 30 (no progress at 30), point 1 at step 20 (its loss rose at 20)
    assert short["selection_steps"] == 50
    assert short["chosen"] == [0, 1] and short["val"] == 60  # point 0's 60 at the lower loss
    assert out["totals"]["1:0:loss"] == {
        "selection_steps": 50,
        "of_first": 50 / 120,
        "changed": 1,
        "val_lost": 10.0,
        "unknown": 0,
        "pruned": 0,
        "steps_by_input": {"0": 50},
    }


def test_a_rule_that_would_run_longer_than_the_run_is_counted_unknown(tmp_path):
    rule = stop_rules.Rule.parse("9:0:loss")
    ended = stop_rules.replay([_results(tmp_path)], [rule], check=False)
    assert ended["entries"][0]["9:0:loss"]["unknown"] == 0  # both curves ended their schedule
    longer = stop_rules.replay([_results(tmp_path, schedule=100)], [rule], check=False)
    assert longer["entries"][0]["9:0:loss"]["unknown"] == 2  # what came after step 60 is unknown


def test_progress_by_the_best_point_only_and_the_step_floor():
    best_only = stop_rules.Rule.parse("1:0:best")
    # point 1's step 20: the same top-1 at a higher loss is not a better point
    assert stop_rules.stop_index(POINT1, best_only, 60) == (1, True)
    floor = stop_rules.Rule.parse("1:45:best")
    assert stop_rules.stop_index(POINT1, floor, 60) == (5, True)  # no stop before step 45


def test_check_refuses_a_first_rule_that_is_not_the_runs(tmp_path):
    with pytest.raises(SystemExit, match="not the runs' rule"):
        stop_rules.replay([_results(tmp_path)], [stop_rules.Rule.parse("1:0:loss")], check=True)


@pytest.mark.parametrize(
    "text", ["5:100", "0:100:loss", "5:100:metric", "a:b:loss", "5:100:loss:mean"]
)
def test_malformed_rules_name_the_form(text):
    with pytest.raises(ValueError, match="PATIENCE:MIN_STEPS|patience >= 1"):
        stop_rules.Rule.parse(text)


def test_the_median_rule_trains_the_narrow_input_first_and_prunes_the_raw_one(tmp_path):
    """The same curves as two inputs of an attentive row, recorded raw first: point 0 on the
    64-component input, point 1 on the raw features. The replay trains point 0 first; it ends at
    step 60 (its patience). At step 10 point 1's best, 40, is below point 0's running mean, 50:
    the median rule stops it there, and point 0's 60 is chosen instead of point 1's later 70."""
    grid = [
        {"config": {"input_pca": 64, "lr": 1e-3, "head": "set"}},
        {"config": {"input_pca": 0, "lr": 1e-3, "head": "set"}},
    ]
    assert stop_rules.training_passes([g["config"] for g in grid]) == [[0], [1]]
    assert stop_rules.training_passes([grid[1]["config"], grid[0]["config"]]) == [[1], [0]]
    both_lrs = [{"input_pca": 0, "lr": 1e-3}, {"input_pca": 0, "lr": 1e-2}]
    assert stop_rules.training_passes(both_lrs) == [[0, 1]]  # one pass, as one stack
    rules = [stop_rules.Rule.parse("4:0:loss"), stop_rules.Rule.parse("4:0:loss:median")]
    out = stop_rules.replay([_results(tmp_path, grid=grid)], rules, check=True)
    (entry,) = out["entries"]
    assert entry["4:0:loss"]["steps_by_input"] == {"64": 60, "0": 60}
    median = entry["4:0:loss:median"]
    assert median["pruned"] == 1 and median["steps_by_input"] == {"64": 60, "0": 10}
    assert median["chosen"] == [0, 1] and median["val"] == 60
    assert out["totals"]["4:0:loss:median"]["changed"] == 1
    assert str(rules[1]) == "4:0:loss:median"
