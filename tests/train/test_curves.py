"""The training-curves figure: what a short run logged is visible, and accuracies come with their
chance levels."""

import matplotlib.pyplot as plt
import pytest

from scalevid.train.curves import chance_accuracies, curves_figure, plot_training_curves


def row(step: int, *, mcm_loss: float = 5.0) -> dict[str, float]:
    return {
        "step": step,
        "loss": 7.0,
        "mcm_loss": mcm_loss,
        "set_loss": 2.0,
        "mcm_acc": 0.05 if mcm_loss else 0.0,
        "set_acc": 0.3,
    }


def test_chance_is_one_over_the_candidates_of_each_loss():
    # batch 64 of 2 sets x 8 clips: an MCM query picks among 1024 clips, a SET query among 64
    chance = chance_accuracies(batch_size=64, num_views=8)
    assert chance == {"mcm_acc": pytest.approx(1 / 1024), "set_acc": pytest.approx(1 / 64)}


def test_a_run_shorter_than_the_logging_interval_still_shows_its_point():
    fig = curves_figure([row(10)])  # 10 steps at --log-every 20: the last step's row only
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert lines and all(line.get_marker() == "o" for line in lines)
    plt.close(fig)
    many = curves_figure([row(s) for s in range(1, 200)])
    assert all(line.get_marker() in ("None", None, "") for line in many.axes[0].get_lines())
    plt.close(many)


def test_accuracies_are_drawn_against_their_chance_lines():
    chance = chance_accuracies(batch_size=16, num_views=3)
    fig = curves_figure([row(1), row(2)], chance=chance)
    ax_acc = fig.axes[1]
    labels = {line.get_label(): line for line in ax_acc.get_lines()}
    assert labels["MCM chance (1 in 96)"].get_ydata()[0] == pytest.approx(1 / 96)
    assert labels["SET chance (1 in 16)"].get_ydata()[0] == pytest.approx(1 / 16)
    assert ax_acc.get_yscale() == "log" and ax_acc.get_ylim()[0] < 1 / 96
    legend = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    assert "MCM chance (1 in 96)" in legend
    plt.close(fig)


def test_a_loss_switched_off_has_no_accuracy_curve():
    fig = curves_figure(
        [row(1, mcm_loss=0.0), row(2, mcm_loss=0.0)],
        chance=chance_accuracies(batch_size=16, num_views=3),
    )
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert labels == ["SET top-1", "SET chance (1 in 16)"]
    plt.close(fig)


def test_plot_writes_a_png_and_none_for_an_empty_log(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert plot_training_curves(empty, tmp_path / "a.png") is None
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"step": 3, "loss": 1, "mcm_loss": 1, "set_loss": 1, "mcm_acc": 0.1, "set_acc": 0.2}\n'
    )
    out = plot_training_curves(metrics, tmp_path / "curves.png", chance={"set_acc": 0.5})
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"
