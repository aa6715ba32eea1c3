"""The probes figure says which bars are SCALE, where chance is, and keeps its numbers clear of
the error bars."""

import matplotlib.pyplot as plt
import pytest

from scalevid.eval.figures import plot_probe_comparison, probe_comparison_figure

NAMES = ["kNN", "SCALE_kNN", "Linear", "SCALE_Linear"]
MEANS = [40.0, 62.5, 45.0, 70.0]
STDS = [3.0, 8.0, 0.0, 5.0]


def test_bars_have_a_legend_a_chance_line_and_labels_above_their_error_bars():
    fig = probe_comparison_figure(
        NAMES, MEANS, STDS, metric="Top-1 (%)", scale_rows=[False, True, False, True], chance=50.0
    )
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["baseline (raw clip features)", "SCALE", "chance (50)"]
    chance = [line for line in ax.get_lines() if line.get_label() == "chance (50)"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [50.0, 50.0]
    labels = {t.get_text(): t.xy[1] for t in ax.texts}
    for mean, std in zip(MEANS, STDS, strict=True):
        assert labels[f"{mean:.1f}"] == pytest.approx(mean + std)  # at the cap, then 3 pt up
    plt.close(fig)


def test_without_scale_rows_or_chance_the_legend_names_the_baseline_only(tmp_path):
    fig = probe_comparison_figure(NAMES[:1], MEANS[:1], STDS[:1], metric="MSE")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "baseline (raw clip features)"
    ]
    assert not [line for line in fig.axes[0].get_lines() if "chance" in line.get_label()]
    plt.close(fig)
    out = plot_probe_comparison(NAMES, MEANS, STDS, metric="MSE", out=tmp_path / "p.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
