"""Video list formats: which videos, with which labels.

One entry point, :func:`load_video_list`, reads a list in any supported format into a
:class:`VideoList` of :class:`VideoItem`\\ s. Files are not checked for existence here: the
extraction stage opens each video and records the ones that fail.

Formats (``format=``)
---------------------
``csv``
    ``path label`` per line, separated by whitespace or a comma (the VideoMAE / PySlowFast
    convention). The label is the last field (after the last comma, else the last whitespace),
    so a path may contain spaces only when a label follows it; ``"a path.mp4",3`` (quoted) also
    works. The first line is skipped as a header when its first field is one of
    ``path, video, video_path, filename, file, name, id``. Labels are integers (-1 =
    unlabelled; class names from a ``classes.txt`` beside the list, one per line, else
    ``"0".."max"``) or class names (mapped to indices in sorted order), not a mix: a name
    among integer labels, or a label that looks like a file name (``clip.mp4``), is an error
    naming the line (usually a path with spaces and no label). Relative paths are
    resolved against ``root`` (default: the list's folder). ``video_id`` is the path as written,
    without its extension.
``folder``
    ``<spec>/<class>/**/<video>`` with one subfolder per class (sorted -> label). If
    ``<spec>/<split>/`` exists it is used instead of ``<spec>``. ``video_id`` is
    ``<class>/<stem>``.
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

``auto`` detects the format from the files present (see :func:`detect_format`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scalevid.data.decode import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

Format = Literal["auto", "csv", "folder", "ucf101", "hmdb51", "ssv2", "kinetics", "lvu"]
Split = Literal["train", "val", "test"]

CSV_HEADER_WORDS = frozenset({"path", "video", "video_path", "filename", "file", "name", "id"})
LVU_REGRESSION_TASKS = frozenset({"like_ratio", "view_count", "like", "view"})
LVU_TASKS = (
    frozenset({"relationship", "way_speaking", "scene", "director", "genre", "writer", "year"})
    | LVU_REGRESSION_TASKS
)
LVU_SPLITS = ("train", "val", "test")
HMDB_SPLIT_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<fold>\d+)\.txt$")
UCF_LIST_FILE = re.compile(r"^(?P<kind>train|test)list(?P<fold>\d+)\.txt$")
NO_LABEL = -1


class DatasetError(Exception):
    """A video list that cannot be read."""


class DatasetFormatError(DatasetError):
    """A malformed list file; names the file and, when known, the 1-based line number."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[DatasetFormatError], tuple[Path, int | None, str]]:
        return type(self), (self.path, self.line, self.reason)


@dataclass(frozen=True)
class VideoItem:
    """One video of a list.

    Attributes:
        path: the video file (not checked for existence).
        label: class index, or -1 when the list has none (unlabelled test lists, regression).
        video_id: a key unique within the list (used by the feature store).
        target: regression target (LVU like/view), else None.
    """

    path: Path
    label: int
    video_id: str
    target: float | None = None


@dataclass
class VideoList:
    """The videos of one split, with the class names indexed by ``VideoItem.label``."""

    items: list[VideoItem]
    class_names: list[str]
    name: str
    task: Literal["classification", "regression"] = "classification"
    source: Path | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[VideoItem]:
        return iter(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------------------------
# Shared reading
# --------------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line), skipping blank lines and ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: list file not found") from e
    except UnicodeDecodeError as e:
        raise DatasetFormatError(path, None, f"not a UTF-8 text file ({e})") from e
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip().lstrip("\ufeff")
        if line and not line.startswith("#"):
            yield number, line


def _parse_int(text: str, path: Path, line: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(path, line, f"{what} {text!r} is not an integer") from None


def _resolve(root: Path, relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else root / path


def _id_from(written: str) -> str:
    return Path(written).with_suffix("").as_posix()


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise DatasetFormatError(path, e.lineno, f"invalid json ({e.msg})") from e


# --------------------------------------------------------------------------------------------
# csv "path label"
# --------------------------------------------------------------------------------------------


def _split_path_label(line: str) -> list[str]:
    """Split at the last comma if there is one, else at the last whitespace, so paths may
    contain spaces; a path in double quotes is taken as written."""
    if line.startswith('"') and line.count('"') >= 2:
        end = line.index('"', 1)
        rest = line[end + 1 :].strip().removeprefix(",").strip()
        return [line[1:end], rest] if rest else [line[1:end]]
    parts = line.rsplit(",", 1) if "," in line else line.rsplit(None, 1)
    return [part.strip() for part in parts]


def _check_label_kinds(raw: list[str], path: Path, lines: list[int]) -> None:
    """Integer labels and class names do not mix, and no label looks like a file name: either
    is almost always a path with spaces and no label, which would shift every label."""
    is_int = [re.fullmatch(r"-?\d+", label) is not None for label in raw]
    fix = (
        "the label is the last field of a line; a path with spaces needs a label after it "
        '(use -1 for unlabelled), or write the path in double quotes: "my video.mp4",-1'
    )
    for label, line, number in zip(raw, lines, is_int, strict=True):
        if not number and Path(label).suffix.lower() in (*VIDEO_EXTENSIONS, ".npy"):
            raise DatasetFormatError(path, line, f"label {label!r} looks like a file name; {fix}")
    ints = [i for i, ok in enumerate(is_int) if ok and raw[i] != "-1"]
    names = [i for i, ok in enumerate(is_int) if not ok]
    if ints and names:
        odd = names[0] if len(names) <= len(ints) else ints[0]
        raise DatasetFormatError(
            path,
            lines[odd],
            f"label {raw[odd]!r} mixes class names and integer labels in one list (line "
            f"{lines[ints[0]]} has {raw[ints[0]]!r}, line {lines[names[0]]} has "
            f"{raw[names[0]]!r}); {fix}",
        )


def _labels_to_indices(
    raw: list[str], path: Path, lines: list[int], class_names: list[str] | None = None
) -> tuple[list[int], list[str]]:
    """Integer labels stay as they are; names map to indices of ``class_names`` (default: the
    sorted names)."""
    if class_names is None and all(re.fullmatch(r"-?\d+", label) for label in raw):
        labels = [int(label) for label in raw]
        for label, line in zip(labels, lines, strict=True):
            if label < -1:
                raise DatasetFormatError(path, line, f"label {label}: use -1 for unlabelled")
        return labels, [str(i) for i in range(max(labels, default=-1) + 1)]
    names = class_names if class_names is not None else sorted(set(raw) - {"-1"})
    index = {name: i for i, name in enumerate(names)}
    index.setdefault("-1", -1)  # unlabelled
    labels = []
    for label, line in zip(raw, lines, strict=True):
        if label not in index:
            raise DatasetFormatError(path, line, f"unknown class {label!r}")
        labels.append(index[label])
    return labels, names


CLASSES_FILE = "classes.txt"  # optional: the names of integer labels, one per line


def parse_csv(path: Path, *, root: Path | None = None) -> VideoList:
    """``path label`` lines (see the module docstring)."""
    root = root if root is not None else path.parent
    written, raw, numbers = [], [], []
    for k, (number, line) in enumerate(_lines(path)):
        parts = _split_path_label(line)
        if k == 0 and parts[0].lower() in CSV_HEADER_WORDS:
            continue
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise DatasetFormatError(path, number, f"expected 'path label', got {line!r}")
        written.append(parts[0])
        raw.append(parts[1])
        numbers.append(number)
    _check_label_kinds(raw, path, numbers)
    labels, class_names = _labels_to_indices(raw, path, numbers)
    names_file = path.parent / CLASSES_FILE
    if names_file.is_file() and class_names == [str(i) for i in range(len(class_names))]:
        # integer labels with their names beside the list (e.g. `scalevid make-dataset`)
        names = [line for _, line in _lines(names_file)]
        if len(names) < len(class_names):
            raise DatasetError(
                f"{names_file}: {len(names)} names, but {path} has label {len(class_names) - 1}"
            )
        class_names = names
    items = [
        VideoItem(path=_resolve(root, w), label=label, video_id=_id_from(w))
        for w, label in zip(written, labels, strict=True)
    ]
    return VideoList(items=items, class_names=class_names, name=path.stem, source=path)


# --------------------------------------------------------------------------------------------
# Folder per class
# --------------------------------------------------------------------------------------------


def parse_folder(path: Path, *, split: Split = "train") -> VideoList:
    """``<path>[/<split>]/<class>/**/<video>`` (see the module docstring)."""
    base = path / split if (path / split).is_dir() else path
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{base}: no class subfolders")
    items = []
    for label, name in enumerate(classes):
        videos = sorted(
            p
            for p in (base / name).rglob("*")
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
        )
        for video in videos:
            video_id = f"{name}/{video.relative_to(base / name).with_suffix('').as_posix()}"
            items.append(VideoItem(path=video, label=label, video_id=video_id))
    name = f"{path.name}-{split}" if base != path else path.name
    return VideoList(items=items, class_names=classes, name=name, source=base)


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
    for number, line in _lines(class_file):
        parts = line.split()
        if len(parts) != 2:
            raise DatasetFormatError(class_file, number, f"expected 'index name', got {line!r}")
        index = _parse_int(parts[0], class_file, number, "class index")
        if index != len(class_names) + 1:
            raise DatasetFormatError(class_file, number, f"expected index {len(class_names) + 1}")
        class_names.append(parts[1])
    by_folder = {name.lower(): i for i, name in enumerate(class_names)}

    items = []
    for number, line in _lines(list_file):
        parts = line.split()
        if len(parts) not in (1, 2) or (kind == "train" and len(parts) != 2):
            expected = "'path label'" if kind == "train" else "'path [label]'"
            raise DatasetFormatError(list_file, number, f"expected {expected}, got {line!r}")
        folder_name = parts[0].split("/")[0].lower()
        if folder_name not in by_folder:
            raise DatasetFormatError(list_file, number, f"unknown class folder in {parts[0]!r}")
        label = by_folder[folder_name]
        if len(parts) == 2:
            label = _parse_int(parts[1], list_file, number, "label") - 1
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
        for number, line in _lines(files[name]):
            parts = line.split()
            if len(parts) != 2:
                raise DatasetFormatError(files[name], number, f"expected 'video id', got {line!r}")
            usage = _parse_int(parts[1], files[name], number, "split id")
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
    rows = _lines(path)
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
        start = _parse_int(row["time_start"].split(".")[0], list_file, number, "time_start")
        end = _parse_int(row["time_end"].split(".")[0], list_file, number, "time_end")
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
    for number, line in list(_lines(list_file))[1:]:  # one header line
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
        label = _parse_int(parts[0], list_file, number, "label")
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


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


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
