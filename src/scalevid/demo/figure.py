"""The demo's picture: each SCALE row beside its baseline, with error bars and the ceiling lines.

One group of two bars per comparison (baseline, SCALE row; mean top-1 over probe seeds, error
bars of one binomial standard error of the scored split), the difference written above the
group (bold where it counts, `Comparison.verdict`), and three horizontal lines from the
ceiling: the order-aware oracle, the order-blind baseline and chance. Used by the demo's report
and copied into the README's demo section; `python -m scalevid.demo.figure OUT/report` draws it
again from that report's demo.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scalevid.demo.ceiling import Ceiling  # noqa: E402
from scalevid.eval.figures import BASELINE_COLOUR, SCALE_COLOUR  # noqa: E402
from scalevid.eval.rows import LABELS  # noqa: E402
from scalevid.outfiles import replace_file  # noqa: E402


class Pair(Protocol):
    """What the figure reads of one comparison (`scalevid.demo.pipeline.Comparison`)."""

    setting: str
    scale: str
    baseline: str
    scale_mean: float
    baseline_mean: float
    scale_se: float
    baseline_se: float
    delta: float

    @property
    def verdict(self) -> str: ...


# The figure's file name in a demo report folder.
PAIRS_FIGURE = "pairs.png"


def figure_title(data_seed: int, split: str) -> str:
    """The figure's title: which draw of the data, scored on which split."""
    return f"data seed {data_seed}, {split} split"


def _ceiling_lines(ax: plt.Axes, ceiling: Ceiling) -> None:
    lines = (
        (ceiling.oracle, "order-aware oracle (val)", "tab:green", "--"),
        (ceiling.baseline, "order-blind baseline (val)", "tab:red", "--"),
        (ceiling.chance, "chance", "grey", ":"),
    )
    for value, label, colour, style in lines:
        ax.axhline(value, color=colour, linestyle=style, linewidth=1.2, label=label)


def plot_pairs(
    comparisons: Sequence[Pair], ceiling: Ceiling, *, out: Path, title: str = ""
) -> Path:
    """Write the figure to `out` (PNG) and return its path."""
    if not comparisons:
        raise ValueError("no comparisons to plot")
    n = len(comparisons)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * n + 3.5), 4.2))
    x = np.arange(n)
    width = 0.38
    base = [c.baseline_mean for c in comparisons]
    scale = [c.scale_mean for c in comparisons]
    ax.bar(
        x - width / 2,
        base,
        width,
        yerr=[c.baseline_se for c in comparisons],
        color=BASELINE_COLOUR,
        capsize=3,
        label="baseline",
    )
    ax.bar(
        x + width / 2,
        scale,
        width,
        yerr=[c.scale_se for c in comparisons],
        color=SCALE_COLOUR,
        capsize=3,
        label="SCALE",
    )
    _ceiling_lines(ax, ceiling)
    for xi, c in zip(x, comparisons, strict=True):
        top = max(c.baseline_mean + c.baseline_se, c.scale_mean + c.scale_se)
        ax.annotate(
            f"{c.delta:+.1f}",
            (xi, top),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold" if c.verdict != "no clear difference" else "normal",
        )
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{LABELS[c.scale]}\nvs {LABELS[c.baseline]}\n({c.setting})" for c in comparisons],
        fontsize=7,
    )
    ax.set_ylabel("top-1 (%), ± 1 SE")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # clear of the bars
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return Path(out)


@dataclass(frozen=True)
class StoredPair:
    """One comparison as demo.json keeps it (its verdict included)."""

    setting: str
    scale: str
    baseline: str
    scale_mean: float
    baseline_mean: float
    scale_se: float
    baseline_se: float
    delta: float
    verdict: str


def redraw(report_dir: Path) -> Path:
    """pairs.png of a demo report folder, drawn again from its demo.json."""
    demo = json.loads((Path(report_dir) / "demo.json").read_text())
    names = StoredPair.__dataclass_fields__
    pairs = [StoredPair(**{k: c[k] for k in names}) for c in demo["comparisons"]]
    config = demo["config"]
    title = figure_title(config["dataset"]["seed"], config.get("score_on", "test"))
    ceiling = Ceiling.from_dict(demo["ceiling"])
    return plot_pairs(pairs, ceiling, out=Path(report_dir) / PAIRS_FIGURE, title=title)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m scalevid.demo.figure OUT/report")
    print(redraw(Path(sys.argv[1])))
