"""Reading a video list in any supported format: :func:`load_video_list`, which detects the
format from the files present (:func:`detect_format`) when asked to.

Formats (``format=``): ``csv`` and ``folder`` (see `scalevid.data.lists`), ``ucf101``,
``hmdb51``, ``ssv2``, ``kinetics`` and ``lvu`` (see `scalevid.data.benchmark_lists`);
``auto`` detects the format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from scalevid.data.benchmark_lists import (
    HMDB_SPLIT_FILE,
    LVU_SPLITS,
    LVU_TASKS,
    UCF_LIST_FILE,
    parse_hmdb51,
    parse_kinetics,
    parse_lvu,
    parse_ssv2,
    parse_ucf101,
)
from scalevid.data.lists import DatasetError, Split, VideoList, parse_csv, parse_folder

logger = logging.getLogger(__name__)

Format = Literal["auto", "csv", "folder", "ucf101", "hmdb51", "ssv2", "kinetics", "lvu"]


def _csv_header(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.readline().strip().lower()
    except OSError:
        return ""


def _is_kinetics_header(header: str) -> bool:
    columns = {column.strip() for column in header.split(",")}
    return {"youtube_id", "time_start", "time_end"} <= columns


def detect_format(
    spec: Path,
) -> Literal["csv", "folder", "ucf101", "hmdb51", "ssv2", "kinetics", "lvu"]:
    """Guess a list's format from its files.

    Folders: ``classInd.txt`` -> ucf101; ``*_test_split<N>.txt`` -> hmdb51; ``labels.json`` ->
    ssv2; a folder named after an LVU task holding ``train/val/test.csv`` -> lvu; ``train.csv`` (or
    ``validate.csv``, ``val.csv``, ``test.csv``) with a ``youtube_id,time_start,time_end``
    header -> kinetics; anything else -> folder.
    Files: UCF101/HMDB51 list names and ``.json`` go to their formats; a file inside a folder
    named after an LVU task -> lvu; a csv with the Kinetics header -> kinetics; else csv.
    """
    if spec.is_dir():
        if (spec / "classInd.txt").is_file():
            return "ucf101"
        if any(HMDB_SPLIT_FILE.match(p.name) for p in spec.iterdir()):
            return "hmdb51"
        if (spec / "labels.json").is_file():
            return "ssv2"
        if spec.name in LVU_TASKS and any((spec / f"{n}.csv").is_file() for n in LVU_SPLITS):
            return "lvu"
        for name in ("train.csv", "validate.csv", "val.csv", "test.csv"):
            if _is_kinetics_header(_csv_header(spec / name)):
                return "kinetics"
        return "folder"
    if not spec.exists():
        raise DatasetError(f"{spec}: no such file or folder")
    if spec.name == "classInd.txt" or UCF_LIST_FILE.match(spec.name):
        return "ucf101"
    if HMDB_SPLIT_FILE.match(spec.name):
        return "hmdb51"
    if spec.suffix == ".json":
        return "ssv2"
    if spec.parent.name in LVU_TASKS:
        return "lvu"
    if _is_kinetics_header(_csv_header(spec)):
        return "kinetics"
    return "csv"


def load_video_list(
    spec: str | Path,
    *,
    format: Format = "auto",
    split: Split = "train",
    fold: int = 1,
    root: str | Path | None = None,
) -> VideoList:
    """Read a video list.

    Args:
        spec: a list file or a folder, depending on the format (see the module docstring).
        format: the list format, or ``"auto"`` to detect it (:func:`detect_format`).
        split: which split to read where the format holds several.
        fold: the official fold of UCF101 / HMDB51 (1-3).
        root: folder the video paths are relative to (default: per format, the list's folder).

    Raises:
        DatasetFormatError: a malformed line (naming the file and line number) or file.
        DatasetError: a missing list, or a format that cannot be detected.
    """
    spec = Path(spec)
    root_path = Path(root) if root is not None else None
    if not spec.exists():
        raise DatasetError(f"{spec}: no such file or folder")
    fmt = detect_format(spec) if format == "auto" else format
    if format == "auto":  # a guess made for the user: one line says which (--format overrides)
        logger.info("%s: read as a %s list (detected; --format to choose)", spec, fmt)
    logger.debug("reading %s as %s (split %s, fold %d)", spec, fmt, split, fold)
    if fmt == "csv":
        return parse_csv(spec, root=root_path)
    if fmt == "folder":
        return parse_folder(spec, split=split)
    if fmt == "ucf101":
        return parse_ucf101(spec, split=split, fold=fold, root=root_path)
    if fmt == "hmdb51":
        return parse_hmdb51(spec, split=split, fold=fold, root=root_path)
    if fmt == "ssv2":
        return parse_ssv2(spec, split=split, root=root_path)
    if fmt == "kinetics":
        return parse_kinetics(spec, split=split, root=root_path)
    if fmt == "lvu":
        return parse_lvu(spec, split=split, root=root_path)
    raise ValueError(f"unknown format {format!r}")
