"""The synthetic dataset folder: :func:`make_dataset` renders every video of a config and writes
its lists, class names and info file.

Folder layout and caching
-------------------------
``make_dataset(out, config)`` writes::

    out/videos/<split>/<split>_<i:05d>.mp4
    out/train.csv, out/val.csv, out/test.csv    "videos/train/train_00000.mp4 3" per line
    out/classes.txt                             class names, line k = label k
    out/dataset.json                            config, codec, classes, counts

Each video is encoded to a hidden temporary file and renamed into place when complete, so an
interrupted run never leaves a half video under a final name; leftover temporary files are
deleted by the next run. Re-running with the same config renders only the missing videos and,
when nothing is missing, writes nothing. A folder made with a *different* config (or a different
generator version or resolved codec) is refused with :class:`SyntheticDatasetError`: use a new
folder. One writer per folder at a time.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalevid.demo.render import TMP_SUFFIX, resolve_codec, write_video
from scalevid.demo.synthetic import (
    SPLITS,
    DatasetConfig,
    Split,
    SyntheticDatasetError,
    class_descriptions,
    class_sequences,
    describe_classes,
    video_id,
    video_label,
)
from scalevid.outfiles import write_text
from scalevid.progress import progress_bar

logger = logging.getLogger(__name__)

# The generator's name and version in dataset.json: a folder whose videos another generator or
# version drew is not reused. The name stays fixed so that existing folders stay valid; the
# version changes whenever the same config would draw different pixels.
GENERATOR = "scalevid.demo.synthetic"
GENERATOR_VERSION = 2
INFO_FILE = "dataset.json"
CLASSES_FILE = "classes.txt"
VIDEOS_DIR = "videos"


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`make_dataset` produced.

    Attributes:
        root: the dataset folder.
        config: the config it was made with.
        classes: class names, index = label.
        counts: videos per split.
        label_counts: per split, videos per label.
        codec: the encoder used.
        written: videos rendered by this call.
        skipped: videos that were already complete.
        seconds: wall time of this call.
    """

    root: Path
    config: DatasetConfig
    classes: list[str]
    counts: dict[str, int]
    label_counts: dict[str, list[int]]
    codec: str
    written: int
    skipped: int
    seconds: float

    def list_file(self, split: Split) -> Path:
        """The ``path label`` list of ``split``."""
        return dataset_list(self.root, split)


def dataset_list(root: Path, split: Split) -> Path:
    """The ``path label`` list of ``split`` in the dataset folder ``root``."""
    return Path(root) / f"{split}.csv"


def video_path(split: Split, index: int) -> str:
    """Path of a video relative to the dataset folder (``/`` separated)."""
    return f"{VIDEOS_DIR}/{split}/{video_id(split, index)}.mp4"


def _header(config: DatasetConfig, codec: str) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "codec": codec,
        "config": config.to_dict(),
    }


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def _check_same(stored: dict[str, Any], header: dict[str, Any], where: Path) -> None:
    differences = [
        f"{key}: {stored.get(key)!r} here, {header[key]!r} asked"
        for key in ("generator", "version", "codec")
        if stored.get(key) != header[key]
    ]
    # a field missing from an older folder was made with that field's default behaviour
    old = {**DatasetConfig().to_dict(), **(stored.get("config") or {})}
    new = header["config"]
    differences += [
        f"config.{key}: {old.get(key)!r} here, {new.get(key)!r} asked"
        for key in sorted(set(old) | set(new))
        if _canonical(old.get(key)) != _canonical(new.get(key))
    ]
    if differences:
        raise SyntheticDatasetError(
            f"{where} describes a different synthetic dataset ("
            + "; ".join(differences)
            + "); choose another folder or delete this one"
        )


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless ``path`` already holds it; True when written."""
    if path.is_file() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def _read_info(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SyntheticDatasetError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise SyntheticDatasetError(f"{path}: expected a JSON object")
    return data


def _render_job(config: DatasetConfig, split: Split, index: int, root: str, codec: str) -> int:
    write_video(Path(root) / video_path(split, index), config, split, index, codec=codec)
    return index


def _run_jobs(
    jobs: list[tuple[Split, int]],
    out: Path,
    config: DatasetConfig,
    codec: str,
    *,
    progress: bool,
    workers: int,
) -> None:
    bar = progress_bar(total=len(jobs), enabled=progress, desc="synthetic videos", unit="video")
    try:
        if workers <= 1 or len(jobs) <= 1:
            for split, index in jobs:
                _render_job(config, split, index, str(out), codec)
                bar.update(1)
            return
        # spawn: a fork of a process that already runs torch threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_render_job, config, split, index, str(out), codec)
                for split, index in jobs
            ]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()


def _open_folder(out: Path, header: dict[str, Any]) -> None:
    """Start a new dataset folder (an incomplete info file), or check that `out` holds this
    dataset already."""
    info_path = out / INFO_FILE
    stored = _read_info(info_path)
    if stored is not None:
        _check_same(stored, header, info_path)
        return
    if out.exists() and any(out.iterdir()):
        raise SyntheticDatasetError(
            f"{out} is not empty and has no {INFO_FILE}; choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_if_changed(info_path, json.dumps({**header, "complete": False}, indent=2) + "\n")


def _pending_jobs(out: Path, config: DatasetConfig) -> tuple[list[tuple[Split, int]], int]:
    """The (split, index) of every video not yet written, and the number of videos in all;
    removes the temporary files of renders that were interrupted."""
    jobs: list[tuple[Split, int]] = []
    total = 0
    for split in SPLITS:
        folder = out / VIDEOS_DIR / split
        folder.mkdir(parents=True, exist_ok=True)
        stale = sorted(folder.glob(f".*{TMP_SUFFIX}"))
        for tmp in stale:
            tmp.unlink(missing_ok=True)
        if stale:
            logger.info("removed %d unfinished video(s) in %s", len(stale), folder)
        size = config.split_size(split)
        total += size
        jobs += [(split, i) for i in range(size) if not (out / video_path(split, i)).is_file()]
    return jobs, total


def _write_lists(
    out: Path, config: DatasetConfig, header: dict[str, Any]
) -> tuple[list[str], dict[str, int], dict[str, list[int]]]:
    """The `path label` lists, the class names and the completed info file; returns the class
    names, the videos per split and the videos per class per split."""
    classes = describe_classes(config)
    descriptions = class_descriptions(config)
    sequences = class_sequences(config)
    counts: dict[str, int] = {}
    label_counts: dict[str, list[int]] = {}
    for split in SPLITS:
        labels = [video_label(config, split, i) for i in range(config.split_size(split))]
        lines = "".join(f"{video_path(split, i)} {y}\n" for i, y in enumerate(labels))
        _write_if_changed(dataset_list(out, split), lines)
        counts[split] = len(labels)
        label_counts[split] = np.bincount(labels, minlength=len(classes)).tolist()
    _write_if_changed(out / CLASSES_FILE, "".join(f"{name}\n" for name in classes))
    info = {
        **header,
        "complete": True,
        "classes": [
            {"label": k, "name": name, "description": text, "events": list(sequence)}
            for k, (name, text, sequence) in enumerate(
                zip(classes, descriptions, sequences, strict=True)
            )
        ],
        "counts": counts,
        "label_counts": label_counts,
        "lists": {split: dataset_list(Path(), split).name for split in SPLITS},
    }
    _write_if_changed(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return classes, counts, label_counts


def make_dataset(
    out: Path, config: DatasetConfig, *, progress: bool = True, workers: int = 1
) -> DatasetInfo:
    """Generate (or complete) the synthetic dataset ``config`` in folder ``out``.

    See the module docstring for the layout. Videos already present are kept; a folder made
    with another config raises :class:`SyntheticDatasetError`, as does a non-empty folder that
    is not a synthetic dataset.

    Args:
        out: the dataset folder (created if missing).
        config: what to generate.
        progress: show a progress bar.
        workers: processes rendering in parallel (1 = in this process). They are started with
            ``spawn``, so a script that passes ``workers > 1`` needs the usual
            ``if __name__ == "__main__":`` guard. The files do not depend on ``workers``.

    Returns:
        What was produced, with the number of videos written and skipped by this call.
    """
    tick = time.perf_counter()
    out = Path(out)
    codec = resolve_codec(config.codec)
    header = _header(config, codec)
    _open_folder(out, header)
    jobs, total = _pending_jobs(out, config)
    if jobs:
        logger.info("rendering %d of %d synthetic videos into %s", len(jobs), total, out)
    _run_jobs(jobs, out, config, codec, progress=progress, workers=workers)
    classes, counts, label_counts = _write_lists(out, config, header)
    seconds = time.perf_counter() - tick
    if jobs:
        logger.info("wrote %d videos in %.1f s", len(jobs), seconds)
    return DatasetInfo(
        root=out,
        config=config,
        classes=classes,
        counts=counts,
        label_counts=label_counts,
        codec=codec,
        written=len(jobs),
        skipped=total - len(jobs),
        seconds=seconds,
    )
