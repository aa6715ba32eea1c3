"""Paper recipes: one YAML file per table of the SCALE paper, run end to end by one command.

    scalevid recipe recipes/ucf101.yaml --data-root /data --out results/

A recipe runs, for each of its *points* (a dataset, or one setting of an ablation sweep):
extraction (once per dataset, shared by every point), SCALE pretraining, the probes, and then
writes one combined table with the paper's rows (kNN ... SCALE_ft) and one column per point.

Recipe file (YAML; every section is optional except `data`):

    extends: ucf101.yaml        # start from another recipe (path relative to this file); deep merge
    title: UCF101 (split 1)     # the table's title (not inherited)
    paper: the UCF101 results   # what it reproduces (not inherited)
    data:                       # the dataset; paths relative to --data-root
      name: ucf101              # store folder name: recipes naming the same dataset share stores
      format: ucf101            # a `scalevid.data.list_formats` format
      list: ucf101/ucfTrainTestlist
      root: ucf101/UCF-101      # the videos
      fold: 1                   # UCF101 / HMDB51 split
      train_split: train        # the split pretraining and the probes train on
      test_split: test          # the split the probes are scored on
    datasets:                   # several datasets (one column each), each overriding `data`
      genre: {list: lvu/lvu_1.0/genre}
    extract: {preset: ssv2}     # ExtractConfig fields, for both splits
    train: {epochs: 300}        # TrainConfig fields (nested `model:` / `pretext:`)
    eval: {low_shot: 0.1}       # EvalConfig fields
    sweep:                      # ablation: config keys -> value lists; `eval.` keys go to eval,
      pretext.mcm_weight: [1, 0, 1]   # the others to training
      pretext.set_weight: [0, 1, 1]
    sweep_mode: zip             # zip (paired lists, the default) or product (every combination)
    sweep_labels: [MCM, SET, MCM + SET]   # column titles (default: key=value)
    tiny: {train: {...}}        # extra overrides for --tiny, on top of TINY below

Layout of --out:

    stores/<dataset>[/<entry>]/{train,test}/   feature stores
    <recipe>/<point>/run/                      the SCALE run (`scalevid train`)
    <recipe>/<point>/eval/                     results.json, results.md, predictions, plots
    <recipe>/results.md, results.json          the combined table
    steps/<output>.json                        per store, run and evaluation: the settings it
                                               was made with and its outcome
    baselines/                                 baseline rows (kNN, Linear, MLP, Transformer) per
                                               seed, shared by every point and recipe that
                                               evaluates the same stores with the same settings

A recipe is a list of steps (`recipe_steps`: per dataset its two stores, per point pretraining
and the probes, then the combined table) run by `scalevid.steps`, the orchestrator the demo's
recipe runs on too. Everything resumes: a finished step is reused, an interrupted extraction
resumes video by video and an interrupted run from its checkpoint. A store or point made with
other settings (an edited recipe, another backbone, --tiny) is an error, found before anything
runs, never reused. "Settings" are a stage config's fields that affect results
(`scalevid.config.result_settings`).

This module is library code; the `scalevid recipe` command line lives in `scalevid.cli`.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from scalevid.config import ConfigError, Layer, build_config, merge
from scalevid.eval.config import EvalConfig
from scalevid.eval.protocol import evaluate
from scalevid.eval.report import combine, combined_markdown
from scalevid.extract import ExtractConfig, extract
from scalevid.folders import RESULTS, RESULTS_TABLE, WEIGHTS
from scalevid.outfiles import write_text
from scalevid.steps import Step, plan_steps, record_path, run_steps, settings_of
from scalevid.train import TrainConfig, train
from scalevid.train.config import drop_retired

logger = logging.getLogger(__name__)

# --tiny: the same pipeline at smoke-test size (a few clips, 2 epochs, a small model, one seed,
# one point per probe grid). The backbone is left alone: `--set extract.backbone=...` changes it.
TINY: dict[str, dict[str, Any]] = {
    "extract": {"num_clips": 4, "temporal_views": 2, "spatial_views": 1, "progress": False},
    "train": {
        "epochs": 2,
        "batch_size": 16,
        "log_every": 1,
        "progress": False,
        "model": {
            "hidden": 32,
            "depth": 1,
            "heads": 4,
            "set_head": [64, 16],
            "pred_head": [64, 16],
            "target_head": [64, 64, 16],
        },
        "pretext": {"num_views": 2},
    },
    "eval": {
        "seeds": [0],
        "head_lrs": [1e-3],
        "head_weight_decays": [0.0],
        "head_epochs": 2,
        "mlp_hidden": [16],
        "finetune_lrs": [1e-3],
        "finetune_max_epochs": 1,
        "finetune_min_steps": 1,  # smoke-test size: no step floor, hold-out selection
        "finetune_heads": ["clip_set"],
        "attentive_lrs": [1e-3],
        "attentive_weight_decays": [0.01],
        "min_val_videos": 0,
        "finetune": {"batch_size": 8, "num_views": 2, "eval_batch_size": 64},
        "transformer_hidden": 32,
        "transformer_depth": 1,
        "transformer_heads": 4,
        "progress": False,
        "plots": False,
    },
}

RECIPE_KEYS = frozenset(
    {
        *("extends", "title", "paper", "data", "datasets", "extract", "train", "eval"),
        *("sweep", "sweep_mode", "sweep_labels", "tiny"),
    }
)
NOT_INHERITED = ("title", "paper")
DATA_KEYS = frozenset({"name", "format", "list", "root", "fold", "train_split", "test_split"})
# Set by the recipe's data section, not by `extract:`.
EXTRACT_OWN_KEYS = frozenset({"list", "out", "root", "format", "split", "fold"})
STAGES = ("extract", "train", "eval")


class RecipeError(ConfigError):
    """A recipe that cannot run as written; names the file and the offending entry."""


# --------------------------------------------------------------------------- reading


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The recipe's mapping with its `extends` chain merged in (the file's own keys win)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise RecipeError(f"{path}: cannot read the recipe ({err})") from err
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping")
    unknown = sorted(set(data) - RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown recipe keys {unknown}; known: {sorted(RECIPE_KEYS)}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = read_recipe_file(path.parent / parent)
    for key in NOT_INHERITED:
        base.pop(key, None)
    return merge(base, data)


@dataclass(frozen=True)
class Dataset:
    """One dataset of a recipe: where its list and videos are, and where its stores go."""

    key: str  # column prefix ("" for a recipe's only dataset)
    store_name: str  # folder under <out>/stores
    format: str
    list: str  # relative to --data-root
    root: str | None = None
    fold: int = 1
    train_split: Literal["train", "val", "test"] = "train"
    test_split: Literal["train", "val", "test"] = "test"


@dataclass
class Point:
    """One column of the table: a dataset and one setting of the sweep."""

    label: str  # the column title
    slug: str  # its folder name under <out>/<recipe>
    dataset: Dataset
    values: dict[str, Any] = field(default_factory=dict)  # the sweep's keys -> values

    def overrides(self, stage: Literal["train", "eval"]) -> dict[str, Any]:
        """This point's sweep values for `stage`, as a nested mapping."""
        if stage == "eval":
            picked = {
                k.removeprefix("eval."): v for k, v in self.values.items() if k.startswith("eval.")
            }
        else:
            picked = {k: v for k, v in self.values.items() if not k.startswith("eval.")}
        return merge({}, picked)


@dataclass
class Recipe:
    """A recipe file, resolved: its stage overrides and the points it runs."""

    name: str
    path: Path
    title: str
    paper: str
    extract: dict[str, Any]
    train: dict[str, Any]
    eval: dict[str, Any]
    datasets: list[Dataset]
    points: list[Point]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "point"


def _datasets(name: str, data: dict[str, Any], path: Path) -> list[Dataset]:
    base = data.get("data") or {}
    entries = data.get("datasets") or {"": {}}
    out = []
    for key, entry in entries.items():
        spec = {**base, **(entry or {})}
        unknown = sorted(set(spec) - DATA_KEYS)
        if unknown:
            raise RecipeError(f"{path}: unknown data keys {unknown}; known: {sorted(DATA_KEYS)}")
        for required in ("format", "list"):
            if required not in spec:
                where = f"datasets.{key}" if key else "data"
                raise RecipeError(f"{path}: {where} needs `{required}`")
        store = spec.pop("name", name)
        out.append(Dataset(key=str(key), store_name=f"{store}/{key}" if key else store, **spec))
    return out


def _sweep(data: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(label, values) per sweep setting; one unnamed setting without a sweep."""
    sweep = data.get("sweep") or {}
    if not sweep:
        return [("", {})]
    mode = data.get("sweep_mode", "zip")
    keys = list(sweep)
    lists = [v if isinstance(v, list) else [v] for v in sweep.values()]
    if mode == "zip":
        if len({len(v) for v in lists}) != 1:
            lengths = {k: len(v) for k, v in zip(keys, lists, strict=True)}
            raise RecipeError(f"{path}: sweep_mode zip needs lists of one length, got {lengths}")
        combos = list(zip(*lists, strict=True))
    elif mode == "product":
        combos = list(itertools.product(*lists))
    else:
        raise RecipeError(f"{path}: sweep_mode must be zip or product, got {mode!r}")
    settings = [dict(zip(keys, combo, strict=True)) for combo in combos]
    labels = data.get("sweep_labels")
    if labels is None:
        labels = [", ".join(f"{k.split('.')[-1]}={v}" for k, v in s.items()) for s in settings]
    elif len(labels) != len(settings):
        raise RecipeError(f"{path}: {len(labels)} sweep_labels for {len(settings)} sweep settings")
    return list(zip(map(str, labels), settings, strict=True))


def _read_with_overrides(path: Path, *, tiny: bool, overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe file's mapping, then TINY and its `tiny:` section, then `--set` entries."""
    data = read_recipe_file(path)
    if tiny:
        data = merge(data, merge(TINY, data.get("tiny") or {}))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise RecipeError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        data = merge(data, {key: yaml.safe_load(text)})
    return data


def _stage_sections(data: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The `extract`, `train` and `eval` mappings (empty when absent)."""
    stages = {}
    for stage in STAGES:
        stages[stage] = data.get(stage) or {}
        if not isinstance(stages[stage], dict):
            raise RecipeError(f"{path}: `{stage}` must be a mapping")
    clash = sorted(set(stages["extract"]) & EXTRACT_OWN_KEYS)
    if clash:
        raise RecipeError(f"{path}: set {clash} in `data`, not in `extract`")
    return stages


def _points(name: str, datasets: list[Dataset], data: dict[str, Any], path: Path) -> list[Point]:
    """One point per dataset and sweep setting, each with its own folder name."""
    points = []
    for dataset in datasets:
        for label, values in _sweep(data, path):
            title = " ".join(part for part in (dataset.key, label) if part) or name
            points.append(Point(label=title, slug=_slug(title), dataset=dataset, values=values))
    slugs = [p.slug for p in points]
    if len(set(slugs)) != len(slugs):
        raise RecipeError(f"{path}: two points share a folder name: {slugs}")
    return points


def load_recipe(
    path: str | Path,
    *,
    tiny: bool = False,
    overrides: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> Recipe:
    """Read and resolve a recipe file; every stage config is built once, so that a bad key
    fails now rather than after hours of extraction.

    Args:
        path: the YAML recipe.
        tiny: apply `TINY` and the recipe's own `tiny:` section (a smoke-test run).
        overrides: "section.key=value" strings (value parsed as YAML) applied last, e.g.
            "extract.backbone=module" or "train.epochs=10".
        only: keep the datasets with these keys (the entries of `datasets:`), e.g. LVU tasks.
    """
    path = Path(path)
    data = _read_with_overrides(path, tiny=tiny, overrides=overrides)
    name = path.stem
    stages = _stage_sections(data, path)
    datasets = _datasets(name, data, path)
    if only:
        missing = sorted(set(only) - {d.key for d in datasets})
        if missing:
            raise RecipeError(f"{path}: no datasets {missing}; it has {[d.key for d in datasets]}")
        datasets = [d for d in datasets if d.key in only]
    recipe = Recipe(
        name=name,
        path=path,
        title=str(data.get("title", name)),
        paper=str(data.get("paper", "")),
        extract=stages["extract"],
        train=stages["train"],
        eval=stages["eval"],
        datasets=datasets,
        points=_points(name, datasets, data, path),
    )
    for dataset in datasets:
        extract_config(recipe, dataset, split="train", data_root=Path("."), store=Path("."))
    for point in recipe.points:
        _train_config(recipe, point, store=Path("."), run=Path("."), device=None)
        _eval_config(recipe, point, device=None)
    return recipe


# --------------------------------------------------------------------------- configs


def _device(device: str | None) -> dict[str, str]:
    """The `--device` layer: empty when not given, so the stage's own setting stands."""
    return {} if device is None else {"device": device}


def _build(recipe: Recipe, what: str, cls: type, *layers: Layer) -> Any:
    """`build_config` with errors that name the recipe file and the stage."""
    try:
        return build_config(cls, *layers)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{recipe.path}: {what}: {err}") from err


def _train_config(
    recipe: Recipe, point: Point, *, store: Path, run: Path, device: str | None
) -> TrainConfig:
    """TrainConfig defaults < the recipe's `train:` < the point's sweep values < paths, device."""
    return _build(
        recipe,
        f"train ({point.label})",
        TrainConfig,
        ("`train`", recipe.train),
        ("`sweep`", point.overrides("train")),
        ("the recipe runner", {"store": str(store), "out": str(run), **_device(device)}),
    )


def _eval_config(recipe: Recipe, point: Point, *, device: str | None) -> EvalConfig:
    """EvalConfig defaults < the recipe's `eval:` < the point's `eval.` sweep values < device."""
    return _build(
        recipe,
        f"eval ({point.label})",
        EvalConfig,
        ("`eval`", recipe.eval),
        ("`sweep`", point.overrides("eval")),
        ("--device", _device(device)),
    )


def extract_config(
    recipe: Recipe,
    dataset: Dataset,
    *,
    split: Literal["train", "test"],
    data_root: Path,
    store: Path,
    device: str | None = None,
) -> ExtractConfig:
    """The ExtractConfig of one split of a dataset; `split` names the store, the dataset maps
    it to the list's split (e.g. Kinetics scores on `val`)."""
    data = {
        "list": str(data_root / dataset.list),
        "root": str(data_root / dataset.root) if dataset.root else None,
        "format": dataset.format,
        "split": dataset.train_split if split == "train" else dataset.test_split,
        "fold": dataset.fold,
        "out": str(store),
    }
    where = f"extract ({dataset.key or recipe.name})"
    layers: tuple[Layer, ...] = (("`extract`", recipe.extract), ("`data`", data))
    return _build(recipe, where, ExtractConfig, *layers, ("--device", _device(device)))


# --------------------------------------------------------------------------- the steps


def _store_key(dataset: Dataset, split: str) -> str:
    return f"stores/{dataset.store_name}/{split}"


def _extract_step(
    recipe: Recipe,
    dataset: Dataset,
    split: Literal["train", "test"],
    *,
    data_root: Path,
    out: Path,
    device: str | None,
) -> Step:
    """Extract one split of a dataset into its store (shared by every point and recipe that
    names the dataset); an interrupted extraction resumes video by video."""
    key = _store_key(dataset, split)
    config = extract_config(
        recipe, dataset, split=split, data_root=data_root, store=out / key, device=device
    )

    def make() -> dict[str, Any]:
        list_path = data_root / dataset.list
        if not list_path.exists():
            raise RecipeError(
                f"{list_path}: no such list; {recipe.path.name} expects the layout in "
                "recipes/README.md under --data-root"
            )
        report = extract(config)
        logger.info("%s", report.summary())
        if report.failed:
            logger.warning(
                "%s: %d videos failed (see failures-*.jsonl there); the recipe goes on without "
                "them",
                config.out,
                report.failed,
            )
        return {
            "paths": {"list": config.list, "root": config.root},
            "listed": report.listed,
            "videos": report.extracted + report.skipped_existing,
            "failed": report.failed,
        }

    return Step(
        key=key,
        title=f"extract {dataset.store_name} {split}",
        settings=settings_of(config),
        make=make,
    )


def _retired(settings: dict[str, Any]) -> None:
    drop_retired(settings.get("pretext", {}))


def point_steps(
    recipe: Recipe, point: Point, *, out: Path, device: str | None = None
) -> list[Step]:
    """Pretraining (a finished run is not retrained, an interrupted one resumes from its
    checkpoint) and the probes of one point. Baseline rows are reused from `<out>/baselines`
    when an earlier point computed them with the same stores and settings (see `evaluate`)."""
    folder = Path(recipe.name) / point.slug
    train_store = _store_key(point.dataset, "train")
    test_store = _store_key(point.dataset, "test")
    run = out / folder / "run"
    train_config = _train_config(recipe, point, store=out / train_store, run=run, device=device)
    eval_config = _eval_config(recipe, point, device=device)

    def pretrain() -> dict[str, Any]:
        if not (run / WEIGHTS).is_file():
            train(train_config, resume=True)
        return {"epochs": train_config.epochs}

    def probes() -> dict[str, Any]:
        results = evaluate(
            train_store=out / train_store,
            test_store=out / test_store,
            run=run,
            config=eval_config,
            out=out / folder / "eval",
            baseline_cache=out / "baselines",
        )
        return {"best_probe": results["best_probe"]}

    where = f"{recipe.name} / {point.label}"
    return [
        Step(
            key=f"{folder}/run",
            title=f"pretrain SCALE, {where}",
            settings=settings_of(train_config),
            make=pretrain,
            inputs=(train_store,),
            upgrade=_retired,
        ),
        Step(
            key=f"{folder}/eval",
            title=f"probes, {where}",
            settings=settings_of(eval_config),
            make=probes,
            inputs=(f"{folder}/run", train_store, test_store),
        ),
    ]


def recipe_steps(
    recipe: Recipe, *, data_root: str | Path, out: str | Path, device: str | None = None
) -> list[Step]:
    """Every step of `recipe`: per dataset its two stores, then per point pretraining and the
    probes; last, the combined table (rendered on every run, from the points' results)."""
    data_root, out = Path(data_root), Path(out)
    steps: list[Step] = []
    for dataset in recipe.datasets:
        for split in ("train", "test"):
            steps.append(
                _extract_step(recipe, dataset, split, data_root=data_root, out=out, device=device)
            )
        for point in recipe.points:
            if point.dataset == dataset:
                steps += point_steps(recipe, point, out=out, device=device)

    def table() -> dict[str, Any]:
        results = {
            p.slug: json.loads((out / recipe.name / p.slug / "eval" / RESULTS).read_text())
            for p in recipe.points
        }
        extraction = {}
        for dataset in recipe.datasets:
            for split in ("train", "test"):
                record = record_path(out, _store_key(dataset, split))
                extraction[f"{dataset.store_name}/{split}"] = json.loads(record.read_text())
        combined = combine(recipe, results, extraction=extraction)
        write_text(out / recipe.name / RESULTS, json.dumps(combined, indent=2))
        write_text(out / recipe.name / RESULTS_TABLE, combined_markdown(combined))
        return {}

    steps.append(
        Step(
            key=f"{recipe.name}/results",
            title=f"{recipe.name}: combined table",
            settings={},
            make=table,
            cached=False,
        )
    )
    return steps


def run_recipe(
    recipe: Recipe, *, data_root: str | Path, out: str | Path, device: str | None = None
) -> dict[str, Any]:
    """Run every step of `recipe` (reusing finished ones, `scalevid.steps`) and write the
    combined table into `<out>/<recipe>/results.{md,json}`; returns the combined results."""
    steps = recipe_steps(recipe, data_root=data_root, out=out, device=device)
    run_steps(steps, out)
    return json.loads((Path(out) / recipe.name / RESULTS).read_text())


# --------------------------------------------------------------------------- the plan


def plan(recipe: Recipe, data_root: Path, out: Path) -> str:
    """What `run_recipe` would do, one line per extraction and per point, then each step's
    state in `out` (cached, resume, make, error: ...) (`--dry-run`)."""
    lines = [f"{recipe.name}: {recipe.title}"]
    for dataset in recipe.datasets:
        for split in ("train", "test"):
            store = out / "stores" / dataset.store_name / split
            config = extract_config(recipe, dataset, split=split, data_root=data_root, store=store)
            lines.append(
                f"  extract {config.format} {config.list} ({config.split}) -> {config.out}"
            )
    for point in recipe.points:
        values = f" {point.values}" if point.values else ""
        lines.append(f"  point {point.label!r}{values} -> {out / recipe.name / point.slug}")
    steps = recipe_steps(recipe, data_root=data_root, out=out)
    lines.append("steps:")
    lines += [f"  {key}: {state}" for key, state in plan_steps(steps, out).items()]
    return "\n".join(lines)
