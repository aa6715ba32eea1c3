"""The official split files of named datasets: UCF101, HMDB51, Something-Something v2,
Kinetics and LVU, each read into a `scalevid.data.lists.VideoList`.

Formats
-------
``ucf101``
    ``spec`` is the ``ucfTrainTestlist`` folder (or a file in it): ``classInd.txt`` ("1 ApplyEyeMakeup"),
    ``trainlist0N.txt`` ("ApplyEyeMakeup/v_..._c01.avi 1", 1-based labels) and
    ``testlist0N.txt`` (paths only, label from the class folder). ``split="train"`` reads the
    train list of ``fold``; ``"val"`` and ``"test"`` read its test list (UCF101 has no
    validation split). Passing a list file itself selects that file (and its fold).
    Videos: ``root/<class>/<file>``; root defaults to the list folder.
``hmdb51``
    ``spec`` is the folder of ``<class>_test_split<N>.txt`` files (or one of them): lines
    "video.avi 1" with 1 = train, 2 = test, 0 = unused. ``"val"`` reads the test ids.
    Videos: ``root/<class>/<file>``.
``ssv2``
    Something-Something v2: ``labels.json`` ({"name": "idx"}), ``train.json``,
    ``validation.json`` (lists of {"id", "label", "template", "placeholders"}); the class is the
    template without brackets. ``"val"`` and ``"test"`` read ``validation.json`` (the labelled
    evaluation set; the public test set has no labels). A json file as ``spec`` selects it.
    Videos: ``root/<id>.webm``.
``kinetics``
    The official csv (``label,youtube_id,time_start,time_end,split``, header; the test csv may
    lack ``label``, giving label -1). A folder ``spec`` picks ``train.csv``,
    ``validate.csv``/``val.csv`` or ``test.csv``. File names are
    ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``. The layout is decided once per list,
    from folders only: ``root/<split>/<label>/`` if such class folders exist (label as written
    or with spaces replaced by underscores), else ``root/<split>/`` if it exists, else
    ``root/``. Class names are the sorted labels of ``train.csv`` beside the list when present
    (so val/test use the train indices), else of the list itself.
``lvu``
    Long-form Video Understanding task files (``lvu_1.0/<task>/{train,val,test}.csv``): space
    separated, one header line, the label first and the video id second-to-last. The task is the
    file's folder name. ``like_ratio`` and ``view_count`` (also ``like``/``view``) are
    regression, with ``label`` = -1 and the target of the LVU baselines (without their
    zero-mean shift): ``10 * like / (like + dislike)`` from the first two fields, and
    ``log(views)`` from the first. The other tasks are classification with the integer labels
    as written. Videos: ``root/<id>.mp4``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

from scalevid.data.lists import (
    NO_LABEL,
    DatasetError,
    DatasetFormatError,
    Split,
    VideoItem,
    VideoList,
    parse_int,
    read_lines,
)

LVU_REGRESSION_TASKS = frozenset({"like_ratio", "view_count", "like", "view"})
LVU_TASKS = (
    frozenset({"relationship", "way_speaking", "scene", "director", "genre", "writer", "year"})
    | LVU_REGRESSION_TASKS
)
LVU_SPLITS = ("train", "val", "test")
HMDB_SPLIT_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<fold>\d+)\.txt$")
UCF_LIST_FILE = re.compile(r"^(?P<kind>train|test)list(?P<fold>\d+)\.txt$")


# --------------------------------------------------------------------------------------------
# UCF101
# --------------------------------------------------------------------------------------------


def parse_ucf101(
    spec: Path, *, split: Split = "train", fold: int = 1, root: Path | None = None
) -> VideoList:
    """UCF101 split lists (see the module docstring)."""
    folder = spec if spec.is_dir() else spec.parent
    match = UCF_LIST_FILE.match(spec.name) if spec.is_file() else None
    if match:
        list_file, kind, fold = spec, match["kind"], int(match["fold"])
    else:
        kind = "train" if split == "train" else "test"
        list_file = folder / f"{kind}list{fold:02d}.txt"
    root = root if root is not None else folder

    class_file = folder / "classInd.txt"
    class_names = []
    for number, line in read_lines(class_file):
        parts = line.split()
        if len(parts) != 2:
            raise DatasetFormatError(class_file, number, f"expected 'index name', got {line!r}")
        index = parse_int(parts[0], class_file, number, "class index")
        if index != len(class_names) + 1:
            raise DatasetFormatError(class_file, number, f"expected index {len(class_names) + 1}")
        class_names.append(parts[1])
    by_folder = {name.lower(): i for i, name in enumerate(class_names)}

    items = []
    for number, line in read_lines(list_file):
        parts = line.split()
        if len(parts) not in (1, 2) or (kind == "train" and len(parts) != 2):
            expected = "'path label'" if kind == "train" else "'path [label]'"
            raise DatasetFormatError(list_file, number, f"expected {expected}, got {line!r}")
        folder_name = parts[0].split("/")[0].lower()
        if folder_name not in by_folder:
            raise DatasetFormatError(list_file, number, f"unknown class folder in {parts[0]!r}")
        label = by_folder[folder_name]
        if len(parts) == 2:
            label = parse_int(parts[1], list_file, number, "label") - 1
            if not 0 <= label < len(class_names):
                raise DatasetFormatError(list_file, number, f"label {parts[1]} out of range")
        items.append(VideoItem(path=root / parts[0], label=label, video_id=Path(parts[0]).stem))
    name = f"ucf101-{kind}-fold{fold}"
    return VideoList(items=items, class_names=class_names, name=name, source=list_file)


# --------------------------------------------------------------------------------------------
# HMDB51
# --------------------------------------------------------------------------------------------


def parse_hmdb51(
    spec: Path, *, split: Split = "train", fold: int = 1, root: Path | None = None
) -> VideoList:
    """HMDB51 ``<class>_test_split<N>.txt`` files (see the module docstring)."""
    folder = spec if spec.is_dir() else spec.parent
    if spec.is_file():
        match = HMDB_SPLIT_FILE.match(spec.name)
        if match is None:
            raise DatasetError(f"{spec}: not an HMDB51 '<class>_test_split<N>.txt' file")
        fold = int(match["fold"])
    root = root if root is not None else folder
    files = {}
    for path in folder.iterdir():
        match = HMDB_SPLIT_FILE.match(path.name)
        if match and int(match["fold"]) == fold:
            files[match["name"]] = path
    if not files:
        raise DatasetError(f"{folder}: no HMDB51 split files for fold {fold}")
    class_names = sorted(files)
    wanted = 1 if split == "train" else 2
    items = []
    for label, name in enumerate(class_names):
        for number, line in read_lines(files[name]):
            parts = line.split()
            if len(parts) != 2:
                raise DatasetFormatError(files[name], number, f"expected 'video id', got {line!r}")
            usage = parse_int(parts[1], files[name], number, "split id")
            if usage not in (0, 1, 2):
                raise DatasetFormatError(files[name], number, f"split id {usage} not in 0/1/2")
            if usage == wanted:
                items.append(
                    VideoItem(
                        path=root / name / parts[0], label=label, video_id=Path(parts[0]).stem
                    )
                )
    name = f"hmdb51-{split}-fold{fold}"
    return VideoList(items=items, class_names=class_names, name=name, source=folder)


# --------------------------------------------------------------------------------------------
# Something-Something v2
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise DatasetFormatError(path, e.lineno, f"invalid json ({e.msg})") from e


SSV2_SPLIT_NAMES = {"train.json": "train", "validation.json": "val", "test.json": "test"}


def ssv2_class_name(template: str) -> str:
    """``"Putting [something] on [something]"`` -> ``"Putting something on something"``."""
    return template.replace("[", "").replace("]", "")


def parse_ssv2(spec: Path, *, split: Split = "train", root: Path | None = None) -> VideoList:
    """Something-Something v2 json files (see the module docstring)."""
    folder = spec if spec.is_dir() else spec.parent
    if spec.is_file():
        list_file = spec
    else:
        list_file = folder / ("train.json" if split == "train" else "validation.json")
    root = root if root is not None else folder
    labels_file = folder / "labels.json"
    mapping = _load_json(labels_file)
    if not isinstance(mapping, dict):
        raise DatasetFormatError(labels_file, None, "expected an object {name: index}")
    try:
        index = {name: int(i) for name, i in mapping.items()}
    except (TypeError, ValueError) as e:
        raise DatasetFormatError(labels_file, None, f"class index is not an integer ({e})") from e
    class_names = [""] * len(index)
    for name, i in index.items():
        if not 0 <= i < len(index) or class_names[i]:
            raise DatasetFormatError(
                labels_file, None, f"class indices must be 0..{len(index) - 1}"
            )
        class_names[i] = name
    entries = _load_json(list_file)
    if not isinstance(entries, list):
        raise DatasetFormatError(list_file, None, "expected a list of videos")
    items = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DatasetFormatError(list_file, None, f"entry {k} has no 'id'")
        if "template" in entry:
            name = ssv2_class_name(entry["template"])
            if name not in index:
                raise DatasetFormatError(list_file, None, f"entry {k}: unknown class {name!r}")
            label = index[name]
        else:
            label = NO_LABEL
        video_id = str(entry["id"])
        items.append(VideoItem(path=root / f"{video_id}.webm", label=label, video_id=video_id))
    name = f"ssv2-{SSV2_SPLIT_NAMES.get(list_file.name, list_file.stem)}"
    return VideoList(items=items, class_names=class_names, name=name, source=list_file)


# --------------------------------------------------------------------------------------------
# Kinetics
# --------------------------------------------------------------------------------------------

KINETICS_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.csv",),
    "val": ("validate.csv", "val.csv", "validation.csv"),
    "test": ("test.csv",),
}


def kinetics_file_name(youtube_id: str, time_start: int, time_end: int) -> str:
    """``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


def _kinetics_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    rows = read_lines(path)
    first = next(rows, None)
    if first is None:
        return
    header = [column.strip() for column in next(csv.reader([first[1]]))]
    if "youtube_id" not in header or "time_start" not in header or "time_end" not in header:
        raise DatasetFormatError(path, first[0], "header needs youtube_id,time_start,time_end")
    for number, line in rows:
        values = [value.strip() for value in next(csv.reader([line]))]
        if len(values) != len(header):
            raise DatasetFormatError(
                path, number, f"expected {len(header)} fields ({','.join(header)}), got {line!r}"
            )
        yield number, dict(zip(header, values, strict=True))


def _kinetics_base(root: Path, split: str, labels: set[str]) -> tuple[Path, bool, bool]:
    """(base folder, files are in class folders, class folders use underscores)."""
    split_dir = root / split
    if split_dir.is_dir():
        for label in labels:
            if (split_dir / label).is_dir():
                return split_dir, True, False
            if (split_dir / label.replace(" ", "_")).is_dir():
                return split_dir, True, True
        return split_dir, False, False
    return root, False, False


def parse_kinetics(spec: Path, *, split: Split = "train", root: Path | None = None) -> VideoList:
    """The official Kinetics csv (see the module docstring)."""
    if spec.is_dir():
        candidates = [spec / name for name in KINETICS_FILES[split]]
        list_file = next((p for p in candidates if p.is_file()), candidates[0])
    else:
        list_file = spec
    folder = list_file.parent
    root = root if root is not None else folder

    rows = list(_kinetics_rows(list_file))
    train_file = folder / "train.csv"
    if train_file.is_file() and train_file != list_file:
        class_names = sorted(
            {row["label"] for _, row in _kinetics_rows(train_file) if "label" in row}
        )
    else:
        class_names = sorted({row["label"] for _, row in rows if "label" in row})
    index = {name: i for i, name in enumerate(class_names)}

    split_names = {row.get("split", "") for _, row in rows} - {""}
    split_dir_name = split_names.pop() if len(split_names) == 1 else split
    base, in_class_folders, underscores = _kinetics_base(root, split_dir_name, set(index))
    items = []
    for number, row in rows:
        start = parse_int(row["time_start"].split(".")[0], list_file, number, "time_start")
        end = parse_int(row["time_end"].split(".")[0], list_file, number, "time_end")
        file_name = kinetics_file_name(row["youtube_id"], start, end)
        label_name = row.get("label")
        if label_name is not None and label_name not in index:
            raise DatasetFormatError(list_file, number, f"unknown class {label_name!r}")
        label = index[label_name] if label_name is not None else NO_LABEL
        folder_name = label_name.replace(" ", "_") if underscores and label_name else label_name
        path = (
            base / folder_name / file_name if in_class_folders and folder_name else base / file_name
        )
        items.append(VideoItem(path=path, label=label, video_id=Path(file_name).stem))
    return VideoList(
        items=items, class_names=class_names, name=f"kinetics-{split}", source=list_file
    )


# --------------------------------------------------------------------------------------------
# LVU
# --------------------------------------------------------------------------------------------


def _lvu_target(task: str, parts: list[str], path: Path, line: int) -> float:
    """The regression target of the LVU baselines, before their zero-mean shift."""
    try:
        if task in ("like_ratio", "like"):
            like, dislike = float(parts[0]), float(parts[1])
            if like + dislike <= 0:
                raise ValueError("like + dislike must be > 0")
            return 10.0 * like / (like + dislike)
        views = float(parts[0])
        if views <= 0:
            raise ValueError("views must be > 0")
        return math.log(views)
    except ValueError as e:
        raise DatasetFormatError(
            path, line, f"bad {task} value in {' '.join(parts)!r} ({e})"
        ) from None


def parse_lvu(spec: Path, *, split: Split = "train", root: Path | None = None) -> VideoList:
    """An LVU task file (see the module docstring)."""
    list_file = spec / f"{split}.csv" if spec.is_dir() else spec
    task = list_file.parent.name
    root = root if root is not None else list_file.parent
    regression = task in LVU_REGRESSION_TASKS
    min_fields = 4 if task in ("like_ratio", "like") else 3
    items = []
    labels = []
    for number, line in list(read_lines(list_file))[1:]:  # one header line
        parts = line.split()
        if len(parts) < min_fields:
            raise DatasetFormatError(
                list_file, number, f"expected at least {min_fields} fields, got {line!r}"
            )
        video_id = parts[-2]
        path = root / f"{video_id}.mp4"
        if regression:
            target = _lvu_target(task, parts, list_file, number)
            items.append(VideoItem(path=path, label=NO_LABEL, video_id=video_id, target=target))
            continue
        label = parse_int(parts[0], list_file, number, "label")
        if label < 0:
            raise DatasetFormatError(list_file, number, f"negative label {label}")
        labels.append(label)
        items.append(VideoItem(path=path, label=label, video_id=video_id))
    class_names = [] if regression else [str(i) for i in range(max(labels, default=-1) + 1)]
    return VideoList(
        items=items,
        class_names=class_names,
        name=f"lvu-{task}-{list_file.stem}",
        task="regression" if regression else "classification",
        source=list_file,
    )
