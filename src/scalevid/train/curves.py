"""The training-curves figure a run folder ends with (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scalevid.outfiles import replace_file  # noqa: E402


def plot_training_curves(metrics_file: Path, out: Path) -> Path | None:
    """Loss and contrastive-accuracy curves from a run's metrics.jsonl; None if it is empty."""
    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "total"), ("mcm_loss", "MCM"), ("set_loss", "SET")):
        ax_loss.plot(steps, [r[key] for r in rows], label=label)
    ax_loss.set(xlabel="step", ylabel="loss", title="InfoNCE losses")
    ax_loss.legend()
    for key, label in (("mcm_acc", "MCM top-1"), ("set_acc", "SET top-1")):
        ax_acc.plot(steps, [r[key] for r in rows], label=label)
    ax_acc.set(xlabel="step", ylabel="accuracy", title="contrastive accuracy", ylim=(0, 1))
    ax_acc.legend()
    fig.tight_layout()
    try:
        replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(out)
