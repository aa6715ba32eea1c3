"""Figures written into run and report folders (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from scalevid.eval.probes import is_regression
from scalevid.outfiles import replace_file  # noqa: E402

BASELINE_COLOUR, SCALE_COLOUR = "tab:blue", "tab:orange"


def plot_probe_comparison(
    names: list[str],
    means: list[float],
    stds: list[float],
    *,
    metric: str,
    out: Path,
    scale_rows: list[bool] | None = None,
    chance: float | None = None,
) -> Path:
    """Bar chart of one metric per probe (mean over seeds) with ±std error bars; SCALE rows
    (`scale_rows`) drawn in a second colour, named in the legend; each mean written above its
    error bar; `chance` (a constant guess's metric: results.json's `chance`) as a
    dashed line."""
    fig = probe_comparison_figure(
        names, means, stds, metric=metric, scale_rows=scale_rows, chance=chance
    )
    replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(out)


def probe_comparison_figure(
    names: list[str],
    means: list[float],
    stds: list[float],
    *,
    metric: str,
    scale_rows: list[bool] | None = None,
    chance: float | None = None,
) -> Figure:
    """The figure of `plot_probe_comparison`."""
    scale_rows = scale_rows or [False] * len(names)
    colours = [SCALE_COLOUR if s else BASELINE_COLOUR for s in scale_rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 4))
    x = np.arange(len(names))
    ax.bar(x, means, yerr=stds, color=colours, capsize=4)
    for xi, m, s in zip(x, means, stds, strict=True):
        ax.annotate(  # above the error bar's cap, not across it
            f"{m:.1f}",
            (xi, m + (s if np.isfinite(s) else 0.0)),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 3),
            textcoords="offset points",
        )
    handles = [Patch(color=BASELINE_COLOUR, label="baseline (raw clip features)")]
    if any(scale_rows):
        handles.append(Patch(color=SCALE_COLOUR, label="SCALE"))
    if chance is not None:
        handles.append(
            ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.3g})")
        )
    ax.margins(y=0.12)  # room for the labels over the highest bar
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylabel=metric, title=f"probes: {metric} (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def plot_learning_curves(
    grid: list[dict[str, list[float]]],
    *,
    labels: list[str],
    chosen: int,
    chosen_step: int,
    metric: str,
    title: str,
    out: Path,
) -> Path:
    """Two panels against optimizer steps: each grid point's training loss (dashed) and
    validation loss (solid), and its validation metric; the chosen point drawn thick, the
    chosen step a vertical line. grid[i]: {"steps", "metric", "loss", "train_loss"}."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (curve, label) in enumerate(zip(grid, labels, strict=True)):
        width = 2.5 if i == chosen else 1.0
        line = ax_loss.plot(curve["steps"], curve["loss"], lw=width, label=label)[0]
        ax_loss.plot(curve["steps"], curve["train_loss"], ls="--", lw=width, color=line.get_color())
        ax_metric.plot(curve["steps"], curve["metric"], lw=width, color=line.get_color())
    for ax in (ax_loss, ax_metric):
        ax.axvline(chosen_step, color="black", lw=0.8, ls=":")
        ax.set_xlabel("optimizer step")
    ax_loss.set(ylabel="loss (solid: validation, dashed: train)", title=title)
    ax_metric.set(ylabel=f"validation {metric}", title="validation (pooled folds)")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(out)


def plot_confusion_matrix(
    matrix: np.ndarray, *, class_names: list[str], out: Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class); class
    names on the axes up to 30 classes."""
    counts = np.asarray(matrix, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    c = rates.shape[0]
    size = min(12.0, max(4.0, 0.35 * c + 2))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if c <= 30:
        names = list(class_names) if len(class_names) == c else [str(i) for i in range(c)]
        ax.set_xticks(range(c), names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.tight_layout()
    replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(out)


def plot_embedding_map(
    points: np.ndarray,
    labels: np.ndarray,
    *,
    out: Path,
    class_names: list[str] | tuple[str, ...] = (),
    title: str = "",
) -> Path:
    """Scatter of 2-D video embeddings (N, 2) coloured by label: class ids (legend up to 20
    classes; -1 = unlabelled, grey) or float targets (colour bar)."""
    points, labels = np.asarray(points), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6, 5))
    if is_regression(labels):
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, s=8, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="target")
    else:
        classes = np.unique(labels[labels >= 0])
        palette = "tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "hsv"
        cmap = plt.get_cmap(palette)
        unlabelled = labels < 0
        if unlabelled.any():
            ax.scatter(*points[unlabelled].T, s=6, c="lightgrey", label="unlabelled")
        for i, c in enumerate(classes):
            name = class_names[c] if c < len(class_names) else str(c)
            colour = cmap(i) if len(classes) <= 20 else cmap(i / len(classes))
            ax.scatter(*points[labels == c].T, s=8, color=colour, label=name)
        if len(classes) <= 20:
            ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set(xticks=[], yticks=[], title=title or "video embeddings")
    fig.tight_layout()
    replace_file(Path(out), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(out)
