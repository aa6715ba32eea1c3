"""Video lists: which videos, with which labels; the generic ``path label`` and folder formats.

A list is read into a :class:`VideoList` of :class:`VideoItem`\\ s. Files are not checked for
existence here: the extraction stage opens each video and records the ones that fail. This module
holds the types, the errors, the line reading every format shares and the two generic formats;
the named datasets' official split files are read by `scalevid.data.benchmark_lists`, and
`scalevid.data.list_formats` reads a list in any format (:func:`load_video_list`).

Formats
-------
``csv``
    ``path label`` per line, separated by whitespace or a comma (the VideoMAE / PySlowFast
    convention). The label is the last field (after the last comma, else the last whitespace),
    so a path may contain spaces only when a label follows it; ``"a path.mp4",3`` (quoted) also
    works. A label with spaces needs quotes (``v1.mp4 "class a"``): an unquoted line whose path
    part holds a space but does not end in a video file name (``v1.mp4 class a``) is an
    error naming the line, since it could be either. The first line is skipped as a header when its first field is one of
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
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scalevid.data.decode import VIDEO_EXTENSIONS

Split = Literal["train", "val", "test"]

CSV_HEADER_WORDS = frozenset({"path", "video", "video_path", "filename", "file", "name", "id"})
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


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
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


def parse_int(text: str, path: Path, line: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(path, line, f"{what} {text!r} is not an integer") from None


def _resolve(root: Path, relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else root / path


def _id_from(written: str) -> str:
    return Path(written).with_suffix("").as_posix()


# --------------------------------------------------------------------------------------------
# csv "path label"
# --------------------------------------------------------------------------------------------


def _unquoted(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _split_path_label(line: str) -> tuple[list[str], bool]:
    """(fields, unambiguous). Split at the last comma if there is one, else at the last
    whitespace, so paths may contain spaces; a path or a label in double quotes is taken as
    written. A whitespace split whose path part holds a space is ambiguous unless that part
    ends in a video file name: it may as well be a label with spaces (``v1.mp4 class a``)."""
    if line.startswith('"') and line.count('"') >= 2:
        end = line.index('"', 1)
        rest = _unquoted(line[end + 1 :].strip().removeprefix(",").strip())
        return ([line[1:end], rest] if rest else [line[1:end]]), True
    if line.endswith('"') and line.count('"') >= 2:
        start = line.rindex('"', 0, len(line) - 1)
        return [line[:start].strip().removesuffix(",").strip(), line[start + 1 : -1]], True
    if "," in line:
        return [part.strip() for part in line.rsplit(",", 1)], True
    parts = line.rsplit(None, 1)
    head = parts[0]
    clear = len(head.split()) == 1 or Path(head).suffix.lower() in (*VIDEO_EXTENSIONS, ".npy")
    return parts, clear


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
    ambiguous: tuple[int, str] | None = None
    for k, (number, line) in enumerate(read_lines(path)):
        parts, clear = _split_path_label(line)
        if k == 0 and parts[0].lower() in CSV_HEADER_WORDS:
            continue
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise DatasetFormatError(path, number, f"expected 'path label', got {line!r}")
        if not clear and ambiguous is None:
            ambiguous = (number, line)
        written.append(parts[0])
        raw.append(parts[1])
        numbers.append(number)
    _check_label_kinds(raw, path, numbers)
    if ambiguous is not None:
        raise DatasetFormatError(
            path,
            ambiguous[0],
            f"{ambiguous[1]!r} is ambiguous: a label with spaces, or a path with spaces that "
            'does not end in a video file name; quote the label (v1.mp4 "class a") or the path '
            '("my clip",3)',
        )
    labels, class_names = _labels_to_indices(raw, path, numbers)
    names_file = path.parent / CLASSES_FILE
    if names_file.is_file() and class_names == [str(i) for i in range(len(class_names))]:
        # integer labels with their names beside the list (e.g. `scalevid make-dataset`)
        names = [line for _, line in read_lines(names_file)]
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
