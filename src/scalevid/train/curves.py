"""The training-curves figure a run folder ends with (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from scalevid.outfiles import replace_file  # noqa: E402

# Up to this many logged points each is drawn as a marker too: a short run (fewer steps than
# --log-every) logs one row, which a line alone would not show.
MARKED_POINTS = 30


def chance_accuracies(*, batch_size: int, num_views: int) -> dict[str, float]:
    """The top-1 accuracy of a random guess in each pretext loss (`scalevid.losses`), by metric:
    a SET query picks its video's other set among the B videos of the global batch (1 / B); an
    MCM query picks its clip's target among every clip of the batch's two sets of V clips,
    2 * B * V of them (1 / (2BV); higher when videos with fewer than 2V clips are padded)."""
    return {"set_acc": 1.0 / batch_size, "mcm_acc": 1.0 / (2 * batch_size * num_views)}


def plot_training_curves(
    metrics_file: Path, out: Path, *, chance: dict[str, float] | None = None
) -> Path | None:
    """Loss and contrastive-accuracy curves from a run's metrics.jsonl (`curves_figure`) as a
    PNG at `out`; None if the file has no rows."""
    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line]
    if not rows:
        return None
    fig = curves_figure(rows, chance=chance)
    try:
        replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(out)


def curves_figure(
    rows: list[dict[str, float]], *, chance: dict[str, float] | None = None
) -> Figure:
    """Two panels against the step: the losses, and the accuracies of the losses that ran.

    `chance` ({"mcm_acc": ..., "set_acc": ...}, see `chance_accuracies`) draws each accuracy's
    chance level as a dotted line; the accuracy axis is then logarithmic down to below the
    lowest one, so that an accuracy far above chance (5% against 1 in 8192) reads as such.
    """
    steps = [r["step"] for r in rows]
    marker = "o" if len(rows) <= MARKED_POINTS else None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "total"), ("mcm_loss", "MCM"), ("set_loss", "SET")):
        ax_loss.plot(steps, [r[key] for r in rows], label=label, marker=marker, ms=3)
    ax_loss.set(xlabel="step", ylabel="loss", title="InfoNCE losses")
    ax_loss.legend()
    shown = {}
    for key, loss, label in (("mcm_acc", "mcm_loss", "MCM"), ("set_acc", "set_loss", "SET")):
        if all(r[loss] == 0 for r in rows):  # a loss switched off (its weight 0)
            continue
        values = [r[key] for r in rows]
        line = ax_acc.plot(steps, values, label=f"{label} top-1", marker=marker, ms=3)[0]
        if chance and key in chance:
            shown[key] = chance[key]
            ax_acc.axhline(
                chance[key],
                ls=":",
                color=line.get_color(),
                label=f"{label} chance (1 in {round(1 / chance[key])})",
            )
    ax_acc.set(xlabel="step", ylabel="accuracy")
    if shown:
        ax_acc.set_yscale("log")
        ax_acc.set(ylim=(min(shown.values()) / 2, 1), title="contrastive accuracy (log scale)")
    else:
        ax_acc.set(ylim=(0, 1), title="contrastive accuracy")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig
