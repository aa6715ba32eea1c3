"""grid_axes.py: groups along one grid axis, counted by hand."""

import json

import grid_axes


def _grid() -> list[dict]:
    points = [(1e-3, 0.0, 50.0), (1e-3, 1e-4, 50.0), (1e-2, 0.0, 60.0), (1e-2, 1e-4, 70.0)]
    return [{"config": {"lr": lr, "weight_decay": wd}, "val": val} for lr, wd, val in points]


def test_groups_differ_in_the_axis_alone():
    groups = grid_axes.axis_groups(_grid(), "weight_decay")
    assert sorted(sorted(g.items()) for g in groups) == [
        [(0.0, 50.0), (1e-4, 50.0)],
        [(0.0, 60.0), (1e-4, 70.0)],
    ]


def test_a_seed_counts_equal_groups_the_spread_and_what_keeping_loses():
    summary = grid_axes.seed_summary(_grid(), "weight_decay", keep=[0.0])
    assert summary == {"groups": 2, "same": 1, "largest_spread": 10.0, "lost": 10.0}
    assert grid_axes.seed_summary(_grid(), "weight_decay", keep=[1e-4])["lost"] == 0.0


def test_the_command_totals_rows_of_results_files(tmp_path, capsys):
    results = {
        "probes": {
            "linear": {"seeds": [{"seed": 0, "grid": _grid()}]},
            "knn": {"seeds": [{"seed": 0, "grid": []}]},
        }
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "axes.json"
    grid_axes.main([str(path), "--axis", "weight_decay", "--keep", "0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["totals"] == {
        "linear": {
            "seeds": 1,
            "groups": 2,
            "same": 1,
            "largest_spread": 10.0,
            "lost_max": 10.0,
            "lost_seeds": 1,
        }
    }
    assert "1 of 2 groups score the same" in capsys.readouterr().out
