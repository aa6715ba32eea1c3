"""Presenting evaluation results: the tables of results.md and of the terminal, the data of the
figures (confusion matrix, 2-D embedding map), the files of an evaluation folder, and the
combined table of a recipe (probes as rows, the recipe's points as columns).

Reads the results.json content that the protocol (`scalevid.eval.protocol`) builds; draws with
`scalevid.eval.figures`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from scalevid.eval.probes import video_vectors
from scalevid.eval.representations import Representations
from scalevid.eval.rows import LABELS, PROBES, ROWS
from scalevid.folders import PREDICTIONS, RESULTS, RESULTS_TABLE, learning_curves_file
from scalevid.outfiles import replace_file, write_text
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)

METRIC_TITLES = {"top1": "Top-1 (%)", "top5": "Top-5 (%)", "mse": "MSE"}
_METRIC_SHORT = {"top1": "top-1 %", "top5": "top-5 %", "mse": "MSE"}
_MAP_POINTS = 5000  # the embedding map draws at most this many test videos

# --------------------------------------------------------------------------- tables


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None
) -> str:
    """A markdown table, one line per row, ending in a newline. `align` has one letter per
    column, "l" (left) or "r" (right); by default the first column is left-aligned and the
    others right-aligned (a name, then numbers)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError(f"a table of {len(header)} columns needs that many cells and alignments")
    rule = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(rule[a] for a in align) + "|",
        *["| " + " | ".join(row) + " |" for row in rows],
    ]
    return "\n".join(lines) + "\n"


def _table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the paper-style table: one row per probe in the paper's order, the
    metrics as mean ± std with the test set's standard error beside each, Δ columns against the
    matching baseline row, and the margin the primary metric's Δ must clear to count."""
    metrics, primary = results["metrics"], results["primary_metric"]
    header = ["Probe"]
    for m in metrics:
        header += [METRIC_TITLES.get(m, m), f"SE {_METRIC_SHORT.get(m, m)}"]
    header += [f"Δ {METRIC_TITLES.get(m, m).split(' (')[0]}" for m in metrics]
    header.append(f"Δ {_METRIC_SHORT.get(primary, primary)} counts beyond")
    rows = []
    for name in PROBES:
        entry = results["probes"].get(name)
        if entry is None:
            continue
        row = [entry["label"]]
        for m in metrics:
            mean, std = entry["mean"][m], entry["std"][m]
            row.append(f"{mean:.2f} ± {std:.2f}" if len(entry["seeds"]) > 1 else f"{mean:.2f}")
            row.append(f"{entry['se'][m]:.2f}")
        delta, margin = entry["delta"], entry["delta_margin"]
        row += [f"{delta[m]:+.2f}" if delta else "" for m in metrics]
        row.append(f"±{margin[primary]:.2f}" if margin else "")
        rows.append(row)
    return header, rows


def uncertainty_lines(results: dict[str, Any]) -> list[str]:
    """The lines under the results table: the chance level, what SE and the Δ margin are, and
    the best probe or why none is named."""
    rules = results["uncertainty"]
    chance = ", ".join(
        f"{results['chance'][m]:.2f} {_METRIC_SHORT.get(m, m)}" for m in results["metrics"]
    )
    best = results["best_probe"]
    verdict = LABELS[best] if best is not None else "none named"
    return [
        f"Chance: {chance} ({rules['chance']}).",
        f"SE: the test set's standard error, {rules['se']}; n = {results['num_test_videos']} "
        "test videos.",
        f"A difference between two rows counts beyond {rules['margin']} (the last column, for "
        "each SCALE row's Δ); the best probe must lead the runner-up by more.",
        f"Best probe: {verdict}. {results['best_probe_reason']}.",
    ]


def _selection_sentence(results: dict[str, Any]) -> str:
    """How selection ran, generated from what it did: per seed the selection (hold-out or
    k-fold CV) and its validation videos, and per row what its grid searched."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for info in results["seeds"]:
        by_method.setdefault(info.get("selection", "hold-out"), []).append(info)
    how = []
    for method, infos in by_method.items():
        seeds = ("seed " if len(infos) == 1 else "seeds ") + ", ".join(
            str(i["seed"]) for i in infos
        )
        val = "/".join(sorted({str(i["num_val"]) for i in infos}))
        if method == "hold-out":
            how.append(f"a held-out validation split of train ({val} videos; {seeds})")
        else:
            folds = method.split("-")[0]
            how.append(
                f"{folds}-fold cross-validation on train (all {val} of its videos scored once; "
                f"{seeds})"
            )
    searched = []
    for name in (p for p in PROBES if p in results["probes"]):
        grid = results["probes"][name]["seeds"][0]["grid"]
        step = ROWS[name].family in ("set", "attentive")
        if len(grid) == 1 and not step:
            chosen = _chosen_summary(results["probes"][name]["seeds"][0]["chosen"], name)
            searched.append(f"{LABELS[name]} nothing (one setting: {chosen})")
        else:
            points = f"{len(grid)} setting{'s' if len(grid) != 1 else ''}"
            searched.append(f"{LABELS[name]} {points}{' and the step count' if step else ''}")
    return (
        f"Hyperparameters chosen per seed on {' and '.join(how)}, then retrained on all of train "
        f"and scored once on test. Searched per seed: {'; '.join(searched)}."
    )


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: a short description, the paper-style table with its uncertainty lines and
    the selection table."""
    shot = "" if results["low_shot"] is None else f", low-shot {results['low_shot']:g}"
    lines = [
        f"# {results['dataset']} ({results['backbone']})",
        "",
        f"{results['task']}: {results['num_train_videos']} train / "
        f"{results['num_test_videos']} test videos, {len(results['seeds'])} seed(s){shot}. "
        + _selection_sentence(results),
        "",
        markdown_table(*_table(results)),
        "\n\n".join(uncertainty_lines(results)),
        "",
        _selection_table(results),
    ]
    return "\n".join(lines)


def _chosen_summary(chosen: dict[str, Any], row: str) -> str:
    """A short description of row `row`'s chosen config: what its grid searched."""
    family = ROWS[row].family
    if family in ("set", "attentive"):  # a FinetuneConfig
        steps = f"{chosen['steps']} of {chosen.get('schedule_steps') or chosen['steps']} steps"
        pca = f"PCA {chosen['input_pca']} input, " if chosen.get("input_pca") else ""
        if family == "attentive":
            return f"{pca}lr {chosen['lr']:g}, wd {chosen['weight_decay']:g}, {steps}"
        return f"{pca}{chosen['head']} head, lr {chosen['lr']:g}, {steps}"
    if family == "knn":
        return f"k {chosen['k']}"
    return f"lr {chosen['lr']:g}, wd {chosen['weight_decay']:g}"


def _selection_table(results: dict[str, Any]) -> str:
    """Markdown: per seed, how the grid was scored, on how many videos, and each probe's
    chosen config (a choice that flips with the seed shows here)."""
    names = [p for p in PROBES if p in results["probes"]]
    header = ["Seed", "Selection", "Val videos", *(LABELS[p] for p in names)]
    rows = []
    for i, info in enumerate(results["seeds"]):
        chosen = [_chosen_summary(results["probes"][p]["seeds"][i]["chosen"], p) for p in names]
        selection = info.get("selection", "hold-out")
        rows.append([str(info["seed"]), selection, str(info["num_val"]), *chosen])
    table = markdown_table(header, rows, align="rlr" + "l" * len(names))
    return "## Model selection\n\n" + table


def format_table(results: dict[str, Any]) -> str:
    """The results table as aligned plain text, for a terminal."""
    header, rows = _table(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    lines = [line(header), rule, *[line(r) for r in rows], "", *uncertainty_lines(results)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures' data


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def project_2d(
    vectors: np.ndarray, *, method: Literal["pca", "tsne"] = "pca", seed: int = 0
) -> np.ndarray:
    """(N, F) -> (N, 2): PCA of the centred vectors (numpy SVD), or t-SNE with scikit-learn
    (falls back to PCA when scikit-learn is missing or N is tiny)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    if method == "tsne" and len(x) > 5:
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            logger.warning("t-SNE needs scikit-learn; drawing a PCA map instead")
        else:
            perplexity = min(30.0, (len(x) - 1) / 3)
            return TSNE(2, perplexity=perplexity, random_state=seed).fit_transform(x)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    points = x @ vt[:2].T  # (N, <=2)
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points


# --------------------------------------------------------------------------- the folder


def write_report(
    results: dict[str, Any],
    test_scores: dict[str, list[np.ndarray]],
    *,
    test_store: FeatureStore,
    test_rows: np.ndarray,
    y_test: np.ndarray,
    test: Representations,
    plots: bool,
    embedding_map: Literal["pca", "tsne"],
    out: Path,
) -> None:
    """Write predictions.npz, the plots (with `plots`), results.md and results.json into `out`;
    record the files written in `results["files"]`.

    test_scores: per probe, per seed, the test scores (Nte, C) of the videos `test_rows` of
    `test_store`; `y_test`: their labels (Nte,) as the scores index classes (the train store's
    class indices) or their regression targets; `test`: their representations (for the map).
    """
    task = results["task"]
    files = {"results": RESULTS, "table": RESULTS_TABLE, "predictions": PREDICTIONS}
    predictions = _predictions(test_scores, task=task, num_test=len(test_rows))
    video_ids = np.asarray([test_store.video_ids[i] for i in test_rows])
    replace_file(
        out / PREDICTIONS,
        lambda f: np.savez(f, video_ids=video_ids, labels=y_test, **predictions),
    )
    if plots:
        files.update(_plot_probes(results, out))
        files.update(_plot_learning_curves(results, out))
        if task == "classification":
            files.update(_plot_confusion(results, predictions, y_test, out))
        files.update(_plot_embedding_map(results, test, y_test, method=embedding_map, out=out))
    results["files"] = files
    write_text(out / RESULTS_TABLE, results_markdown(results))
    write_text(out / RESULTS, json.dumps(results, indent=2))
    logger.info("wrote %s", out / RESULTS)


def _predictions(
    test_scores: dict[str, list[np.ndarray]], *, task: str, num_test: int
) -> dict[str, np.ndarray]:
    """Per probe (seeds, Nte): the predicted class, or the predicted target."""
    if task == "classification":
        return {
            n: np.stack([s.argmax(axis=1) for s in per_seed]) for n, per_seed in test_scores.items()
        }
    return {
        n: np.stack([s.reshape(num_test) for s in per_seed]) for n, per_seed in test_scores.items()
    }


def _plot_probes(results: dict[str, Any], out: Path) -> dict[str, str]:
    from scalevid.eval import figures

    names = [p for p in PROBES if p in results["probes"]]
    primary = results["primary_metric"]
    figures.plot_probe_comparison(
        [LABELS[p] for p in names],
        [results["probes"][p]["mean"][primary] for p in names],
        [results["probes"][p]["std"][primary] for p in names],
        metric=METRIC_TITLES[primary],
        scale_rows=[p.startswith("scale_") for p in names],
        out=out / "probes.png",
        chance=(results.get("chance") or {}).get(primary) if primary != "mse" else None,
    )
    return {"probes_plot": "probes.png"}


def _plot_learning_curves(results: dict[str, Any], out: Path) -> dict[str, str]:
    """Per set / attentive probe, its first seed's curves: every grid point's validation metric
    and loss against steps with its training loss, the chosen point and step marked, and the
    points the median stopping rule stopped named so."""
    from scalevid.eval import figures

    files = {}
    for name in (p for p in PROBES if p in results["probes"]):
        seed = results["probes"][name]["seeds"][0]
        if "curves" not in seed:
            continue
        path = out / learning_curves_file(name)
        figures.plot_learning_curves(
            seed["curves"]["grid"],
            labels=[
                _chosen_summary({**g["config"], "steps": g["best_step"]}, name)
                + (" (median rule stop)" if g.get("pruned") else "")
                for g in seed["grid"]
            ],
            chosen=seed["curves"]["chosen"],
            chosen_step=seed["chosen"]["steps"],
            metric=METRIC_TITLES[results["primary_metric"]],
            title=f"{LABELS[name]}, seed {seed['seed']}",
            out=path,
        )
        files[f"curves_{name}"] = path.name
    return files


def _plot_confusion(
    results: dict[str, Any], predictions: dict[str, np.ndarray], y_test: np.ndarray, out: Path
) -> dict[str, str]:
    """The leading probe's confusion matrix on the first seed (the leader on the primary metric,
    whether or not it clears the margin to be named best)."""
    from scalevid.eval import figures

    best = results["ranking"]["leader"]
    matrix = confusion_matrix(predictions[best][0], y_test, num_classes=results["num_classes"])
    figures.plot_confusion_matrix(
        matrix,
        class_names=results["class_names"],
        title=f"{LABELS[best]}, seed {results['seeds'][0]['seed']}",
        out=out / "confusion.png",
    )
    return {"confusion_plot": "confusion.png"}


def _plot_embedding_map(
    results: dict[str, Any],
    test: Representations,
    y_test: np.ndarray,
    *,
    method: Literal["pca", "tsne"],
    out: Path,
) -> dict[str, str]:
    """A 2-D map of the test videos' vectors (SCALE's with a run, else the mean clip feature),
    of at most `_MAP_POINTS` videos drawn at random; nothing with fewer than two videos."""
    from scalevid.eval import figures

    reps = test.scale if test.scale is not None else test.raw
    vectors = video_vectors(reps, test.num_valid, normalize=False)
    if len(vectors) < 2:
        return {}
    keep = np.random.default_rng(0).permutation(len(vectors))[:_MAP_POINTS]
    kind = "SCALE [clip, SET]" if test.scale is not None else "mean clip feature"
    figures.plot_embedding_map(
        project_2d(vectors[keep], method=method),
        y_test[keep],
        class_names=results["class_names"] if results["task"] == "classification" else (),
        title=f"test videos, {kind} ({method})",
        out=out / "embedding_map.png",
    )
    return {"embedding_plot": "embedding_map.png"}


# --------------------------------------------------------------------------- recipes


class RecipePoint(Protocol):
    """One column of a recipe's table (`scalevid.recipes.Point`)."""

    label: str
    slug: str
    values: dict[str, Any]


class RecipeLike(Protocol):
    """What the combined table reads of a recipe (`scalevid.recipes.Recipe`)."""

    name: str
    title: str
    paper: str
    points: Sequence[RecipePoint]


def combine(
    recipe: RecipeLike,
    results: dict[str, dict[str, Any]],
    *,
    extraction: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One entry per point (column) with the primary metric of every probe (row); `results`
    holds each point's results.json content by its slug."""
    return {
        "recipe": recipe.name,
        "title": recipe.title,
        "paper": recipe.paper,
        "columns": [_column(point, results[point.slug]) for point in recipe.points],
        "extraction": extraction or {},
    }


def _column(point: RecipePoint, res: dict[str, Any]) -> dict[str, Any]:
    metric = res["primary_metric"]
    cells = {}
    for name, entry in res["probes"].items():
        delta = entry.get("delta")
        cells[name] = {
            "mean": entry["mean"][metric],
            "std": entry["std"][metric],
            "delta": None if delta is None else delta[metric],
        }
    return {
        "label": point.label,
        "folder": point.slug,
        "dataset": res.get("dataset"),
        "values": point.values,
        "metric": metric,
        "task": res["task"],
        "seeds": len(res["seeds"]),
        "low_shot": res.get("low_shot"),
        "num_train_videos": res.get("num_train_videos"),
        "num_test_videos": res.get("num_test_videos"),
        "backbone": res.get("backbone"),
        "probes": cells,
    }


def _cell(cell: dict[str, Any] | None, seeds: int) -> str:
    if cell is None:
        return "–"
    text = f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if seeds > 1 else "")
    if cell["delta"] is not None:
        text += f" ({cell['delta']:+.2f})"
    return text


def combined_markdown(combined: dict[str, Any]) -> str:
    """The paper-shaped table: probes as rows, points as columns, mean ± std over seeds and, on
    SCALE rows, the difference to the matching baseline row in parentheses."""
    columns = combined["columns"]
    metrics = {c["metric"] for c in columns}
    one_metric = len(metrics) == 1
    header = ["Probe"] + [
        c["label"] if one_metric else f"{c['label']} ({_METRIC_SHORT.get(c['metric'])})"
        for c in columns
    ]
    rows = []
    for name in PROBES:
        if not any(name in c["probes"] for c in columns):
            continue
        rows.append([LABELS[name]] + [_cell(c["probes"].get(name), c["seeds"]) for c in columns])
    seeds = sorted({c["seeds"] for c in columns})
    what = METRIC_TITLES.get(next(iter(metrics))) if one_metric else "The metric in each header"
    lines = [f"# {combined['title']}", ""]
    if combined["paper"]:
        lines += [f"Reproduces: {combined['paper']}.", ""]
    lines += [
        f"{what} on the test split{' (MSE: lower is better)' if 'mse' in metrics else ''}, "
        f"mean ± std over {'/'.join(map(str, seeds))} seed(s); "
        "SCALE rows give the difference to their baseline row in parentheses; – = not run "
        "(kNN rows need class labels). Per-column details: `<column>/eval/results.md`.",
        "",
        markdown_table(header, rows),
    ]
    return "\n".join(lines)
