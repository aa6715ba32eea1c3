"""The demo's picture from hand-made comparisons."""

import json

import matplotlib.image as mpimg
import pytest

from scalevid.demo.ceiling import Ceiling
from scalevid.demo.figure import plot_pairs
from scalevid.demo.pipeline import Comparison

CEILING = Ceiling(
    baseline=35.0,
    oracle=84.0,
    baseline_per_seed=(35.0,),
    oracle_per_seed=(84.0,),
    chance=100 / 6,
    num_fit=384,
    num_val=96,
)


def _comparison(scale: str, base: str, s: float, b: float, setting: str) -> Comparison:
    return Comparison(
        setting=setting,
        scale=scale,
        baseline=base,
        scale_mean=s,
        baseline_mean=b,
        scale_std=1.0,
        baseline_std=1.0,
        delta=s - b,
        delta_std=0.5,
        seeds=3,
        num_test=300,
        scale_se=2.5,
        baseline_se=2.5,
    )


def test_pairs_figure_is_written(tmp_path):
    pairs = [
        _comparison("scale_linear", "linear", 60.0, 40.0, "all labels"),
        _comparison("scale_ft", "transformer", 80.0, 79.0, "10% labels"),
    ]
    path = plot_pairs(pairs, CEILING, out=tmp_path / "pairs.png", title="seed 0")
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    with pytest.raises(ValueError, match="no comparisons"):
        plot_pairs([], CEILING, out=tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_redraw_reads_a_reports_demo_json(tmp_path):
    from dataclasses import asdict

    from scalevid.demo.figure import redraw

    pair = _comparison("scale_linear", "linear", 60.0, 40.0, "all labels")
    demo = {
        "config": {"dataset": {"seed": 3}, "score_on": "test"},
        "ceiling": CEILING.to_dict(),
        "comparisons": [{**asdict(pair), "verdict": pair.verdict, "noise": pair.noise}],
    }
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    path = redraw(tmp_path)
    assert path == tmp_path / "pairs.png" and path.read_bytes()[:4] == b"\x89PNG"
