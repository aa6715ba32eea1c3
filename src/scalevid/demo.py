"""`scalevid demo`: the whole pipeline end to end on a generated dataset, in minutes on a CPU.

generated videos (labels need the whole video) -> I3D clip features (train: K random clips per
video; test: T x S views) -> SCALE pretraining -> probes on raw features and on SCALE -> a
report (markdown, with the table, the plots and the timings) in the output folder.

Every stage is cached or resumable: re-running the demo in the same folder reuses the videos
and the feature stores and starts training and evaluation afresh.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from scalevid import __version__
from scalevid.evaluate import EvalConfig, evaluate, format_table, markdown_table
from scalevid.extract import ExtractConfig, extract
from scalevid.finetune import FinetuneConfig
from scalevid.synthetic import DatasetConfig, make_dataset, quick_config
from scalevid.train import TrainConfig, train

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """The demo's sizes; `quick()` is the ~1-minute version CI runs."""

    dataset: DatasetConfig = field(
        default_factory=lambda: DatasetConfig(train=240, val=0, test=120)
    )
    frames: int = 8  # I3D input: 8 frames of 64 x 64 at stride 4 keeps a CPU demo in minutes
    size: int = 64
    train_clips: int = 8  # K random clips per training video
    temporal_views: int = 4  # test views: T x S
    spatial_views: int = 1
    epochs: int = 60
    batch_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    probes: tuple[str, ...] = (
        "knn", "scale_knn", "linear", "scale_linear", "mlp", "transformer", "scale_ft",
    )  # fmt: skip
    head_epochs: int = 30
    finetune_epochs: tuple[int, ...] = (20,)
    finetune_lrs: tuple[float, ...] = (3e-4, 1e-3)
    finetune_min_steps: int = 100  # EvalConfig's: every set-probe budget >= 100 steps
    min_val_videos: int = 100  # EvalConfig's: a smaller val split -> 5-fold cross-validation
    workers: int = 2

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            dataset=quick_config("order", train=48, val=0, test=24),
            train_clips=6,
            temporal_views=3,
            epochs=8,
            batch_size=24,
            seeds=(0,),
            head_epochs=10,
            finetune_epochs=(5,),
            finetune_lrs=(1e-3,),
            finetune_min_steps=1,
            min_val_videos=0,
        )


def run_demo(out: str | Path, *, config: DemoConfig | None = None, weights: str | None = None,
             progress: bool = True) -> Path:  # fmt: skip
    """Run every stage into `out`; returns the report's path."""
    config = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str) -> _Stage:
        return _Stage(name, timings)

    with stage("generate videos"):
        data = make_dataset(out / "data", config.dataset, progress=progress, workers=config.workers)
    stores = {}
    extract_reports = {}
    for split in ("train", "test"):
        with stage(f"extract {split} features"):
            report = extract(
                ExtractConfig(
                    list=str(data.list_file(split)),
                    root=str(data.root),
                    out=str(out / "stores" / split),
                    split=split,
                    backbone="i3d",
                    weights=weights,
                    frames=config.frames,
                    crop_size=config.size,
                    num_clips=config.train_clips,
                    temporal_views=config.temporal_views,
                    spatial_views=config.spatial_views,
                    workers=config.workers,
                    progress=progress,
                )
            )
        if report.failed:
            raise RuntimeError(
                f"{report.failed} generated videos failed to extract:\n{report.summary()}"
            )
        stores[split], extract_reports[split] = report.store, report

    run = out / "run"
    if run.exists():
        shutil.rmtree(run)  # the demo always trains afresh; extraction above is what is cached
    with stage("pretrain SCALE"):
        train_config = TrainConfig(
            store=str(stores["train"]),
            out=str(run),
            epochs=config.epochs,
            batch_size=config.batch_size,
            log_every=10,
            progress=progress,
        )
        train(train_config)

    with stage("probes"):
        results = evaluate(
            train_store=stores["train"],
            test_store=stores["test"],
            run=run,
            config=EvalConfig(
                probes=config.probes,
                seeds=config.seeds,
                head_epochs=config.head_epochs,
                finetune=FinetuneConfig(num_views=min(8, config.train_clips)),
                finetune_epochs=config.finetune_epochs,
                finetune_lrs=config.finetune_lrs,
                finetune_min_steps=config.finetune_min_steps,
                min_val_videos=config.min_val_videos,
                progress=progress,
            ),
            out=out / "report",
        )
    report_path = write_report(out, config=config, data=data, results=results, timings=timings,
                               run=run)  # fmt: skip
    print(format_table(results))
    total = sum(timings.values())
    print(f"demo finished in {total:.0f} s; report: {report_path}")
    return report_path


class _Stage:
    """Times a stage into `timings` and logs it."""

    def __init__(self, name: str, timings: dict[str, float]) -> None:
        self.name, self.timings = name, timings

    def __enter__(self) -> _Stage:
        logger.info("demo: %s ...", self.name)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timings[self.name] = time.perf_counter() - self.start
        logger.info("demo: %s done in %.1f s", self.name, self.timings[self.name])


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}{gpu}"


def write_report(out: Path, *, config: DemoConfig, data: Any, results: dict[str, Any],
                 timings: dict[str, float], run: Path) -> Path:  # fmt: skip
    """report.md: what was run, the table, the plots and the timings."""
    report_dir = out / "report"
    total = sum(timings.values())
    lines = [
        "# scalevid demo",
        "",
        f"scalevid {__version__} on {machine_description()}; total {total:.0f} s.",
        "",
        "## Dataset",
        "",
        f"Generated ({data.root}): {data.counts.get('train', 0)} train and "
        f"{data.counts.get('test', 0)} test videos of {config.dataset.frames} frames; "
        f"{len(data.classes)} classes that need the whole video: {', '.join(data.classes)}.",
        "",
        "## Pipeline",
        "",
        f"- Backbone: Kinetics-400 I3D (frozen), clips of {config.frames} frames at stride 4, "
        f"{config.size} x {config.size} crops; 1024-d features.",
        f"- Train: {config.train_clips} random clips per video; test: "
        f"{config.temporal_views} x {config.spatial_views} views.",
        f"- SCALE: {config.epochs} epochs, batch {config.batch_size} videos (run: `{run}`).",
        f"- Probes: hyperparameters chosen on a validation split of train; seeds {list(config.seeds)}.",
        "",
        "## Results (test top-1 %)",
        "",
        markdown_table(results),
        "",
        "![probe comparison](probes.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "![embedding map](embedding_map.png)",
        "",
        "![SCALE training curves](../run/curves.png)",
        "",
        "## Timings",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()],
        f"| total | {total:.1f} |",
        "",
    ]
    path = report_dir / "report.md"
    path.write_text("\n".join(lines))
    (report_dir / "demo.json").write_text(
        json.dumps(
            {"config": asdict(config), "timings": timings, "machine": machine_description()},
            indent=2,
            default=str,
        )
    )
    return path
