"""`scalevid import`: build a feature store from per-video `.npy` features and a label list."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np

from scalevid.data.lists import VideoList, parse_csv
from scalevid.outfiles import open_truncate
from scalevid.progress import progress_bar
from scalevid.store.errors import IncompatibleStoreError, StoreDataError, StoreError
from scalevid.store.files import npy_header
from scalevid.store.layout import BOX_DIM, BOX_FIELDS, FAILURES_FILE, MANIFEST_FILE, SHARDS_DIR
from scalevid.store.lock import StoreLock
from scalevid.store.manifest import Manifest
from scalevid.store.shards import read_shard_json
from scalevid.store.writer import StoreWriter, complete_ids, reconcile_shards

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportFailure:
    """A video the importer skipped, and why."""

    video_id: str
    path: str
    reason: str


# Where a video's clip boxes come from, looked up in this order beside its features file (or in
# `boxes_dir`): its own boxes, its clips' times, else uniform positions (`_uniform_boxes`).
BoxSource = Literal["boxes", "timestamps", "uniform"]
BOXES_SUFFIX = ".boxes.npy"  # (K, 7) [flip, t0, y0, x0, t1, y1, x1], normalised
TIMESTAMPS_SUFFIX = ".timestamps.npy"  # (K, 2) [start, end] seconds
DURATION_SUFFIX = ".json"  # {"duration": seconds}, for the timestamps


@dataclass
class ImportReport:
    """Outcome of `import_npy_folder`."""

    store: Path
    listed: int  # entries in the list file
    imported: int  # videos written by this run
    skipped_existing: int  # already in the store (resume)
    failures: list[ImportFailure] = field(default_factory=list)
    boxes_dir: Path | None = None  # where <id>.boxes.npy / <id>.timestamps.npy were looked for
    box_sources: Counter[BoxSource] = field(default_factory=Counter)  # of the imported videos

    @property
    def failed(self) -> int:
        """Number of videos skipped because of a problem."""
        return len(self.failures)

    def summary(self) -> str:
        """For the log and the CLI: one line of counts (and where the failures are listed), and
        one saying where the imported videos' boxes came from."""
        text = (
            f"imported {self.imported} of {self.listed} listed videos into {self.store} "
            f"({self.skipped_existing} already there, {self.failed} failed)"
        )
        if self.failures:
            text += f"; failures are listed in {self.store / FAILURES_FILE}"
        if self.imported:
            text += "\n" + self.boxes_summary()
        return text

    def boxes_summary(self) -> str:
        """Where the imported videos' boxes came from, and where they were looked for."""
        count = self.box_sources
        text = (
            f"boxes: {count['boxes']} from <id>{BOXES_SUFFIX}, {count['timestamps']} from "
            f"<id>{TIMESTAMPS_SUFFIX}, {count['uniform']} uniform"
        )
        if count["uniform"]:
            text += (
                f" (neither file in {self.boxes_dir}: clip i of n spans [i/n, (i+1)/n] of the "
                "video, full frame, unflipped)"
            )
        return text


def _feature_candidates(video_id: str, features_dir: Path) -> list[Path]:
    """Where a video's features may be: <relative path>.npy, then <stem>.npy."""
    candidates = [features_dir / f"{video_id}.npy"]
    stem = features_dir / f"{Path(video_id).name}.npy"
    return candidates if stem == candidates[0] else [*candidates, stem]


def _uniform_boxes(k: int) -> np.ndarray:
    """(k, 7): consecutive equal temporal segments over the full, unflipped frame."""
    i = np.arange(k, dtype=np.float32)
    boxes = np.zeros((k, BOX_DIM), np.float32)
    boxes[:, 0] = 1.0
    boxes[:, 1] = i / k
    boxes[:, 4] = (i + 1) / k
    boxes[:, 5:] = 1.0
    return boxes


def _clip_boxes(side: Path, k: int) -> tuple[np.ndarray, BoxSource]:
    """(k, 7) boxes of a video with k clips and where they came from. `side` is where the
    video's features file would be in the boxes folder: <id>.boxes.npy beside it, else
    <id>.timestamps.npy, else uniform boxes. Raises ValueError when a file is unusable or both
    are there (which one was meant is the user's to say)."""
    base = side.name[: -len(".npy")]
    boxes_file = side.with_name(base + BOXES_SUFFIX)
    ts_file = side.with_name(base + TIMESTAMPS_SUFFIX)
    if boxes_file.is_file() and ts_file.is_file():
        raise ValueError(f"both {boxes_file.name} and {ts_file.name} are there; keep one")
    if boxes_file.is_file():
        boxes = np.load(boxes_file, allow_pickle=False)
        if boxes.shape != (k, BOX_DIM) or boxes.dtype.kind not in "fiu":
            raise ValueError(
                f"{boxes_file.name} holds {boxes.dtype} {boxes.shape}, expected ({k}, {BOX_DIM}) "
                f"numbers [{', '.join(BOX_FIELDS)}]"
            )
        return boxes.astype(np.float32), "boxes"  # ranges: checked by the writer
    if ts_file.is_file():
        return _timestamp_boxes(ts_file, side.with_name(base + DURATION_SUFFIX), k), "timestamps"
    return _uniform_boxes(k), "uniform"


def _timestamp_boxes(ts_file: Path, meta_file: Path, k: int) -> np.ndarray:
    """(k, 7) boxes from `ts_file` (k, 2) [start, end] seconds over the full, unflipped frame.

    The duration comes from `meta_file` {"duration": seconds} when it exists, else the largest
    end time. Raises ValueError when the timestamps are unusable.
    """
    ts = np.load(ts_file, allow_pickle=False).astype(np.float64)
    if ts.shape != (k, 2):
        raise ValueError(f"{ts_file.name} has shape {ts.shape}, expected ({k}, 2)")
    if not np.isfinite(ts).all() or (ts < 0).any() or (ts[:, 0] > ts[:, 1]).any():
        raise ValueError(f"{ts_file.name} needs finite 0 <= start <= end per clip")
    duration = float(ts[:, 1].max())
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("duration"), (int, float)):
            raise ValueError(f'{meta_file.name} must hold {{"duration": seconds}}')
        duration = float(meta["duration"])
    if duration <= 0:
        raise ValueError(f"video duration is {duration} s; cannot normalise timestamps")
    boxes = _uniform_boxes(k)
    boxes[:, 1] = np.clip(ts[:, 0] / duration, 0.0, 1.0)
    boxes[:, 4] = np.clip(ts[:, 1] / duration, 0.0, 1.0)
    return boxes


@dataclass(frozen=True)
class _Candidate:
    """A listed video whose features file has a usable (clips, D) header."""

    video_id: str
    path: str
    label: int
    feature_file: Path
    clips: int
    dim: int


def import_npy_folder(
    *,
    features_dir: str | os.PathLike[str],
    list_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    dataset_name: str = "imported",
    backbone: str = "imported",
    clip_frames: int | None = None,
    clip_stride: int | None = None,
    boxes_dir: str | os.PathLike[str] | None = None,
    shard_size: int = 1024,
    progress: bool = True,
) -> ImportReport:
    """Build (or resume) a store from per-video ``.npy`` feature arrays of shape (clips, D).

    The list is read by `scalevid.data.lists.parse_csv` (``path label`` lines; -1 = unlabelled).
    The video id is the list path without its extension; a video's features are looked up as
    ``features_dir/<video id>.npy``, then ``features_dir/<file stem>.npy``. K is the largest
    clip count (or the existing store's K when resuming). A video whose features are missing
    or broken is recorded in the report and in ``out/failures.jsonl`` and skipped. Videos
    already in the store are skipped.

    A video's boxes come from ``<name>.boxes.npy`` (clips, 7), else ``<name>.timestamps.npy``
    (clips, 2) seconds (with ``<name>.json`` {"duration": seconds}), else are uniform in time;
    they are looked for where the features file is, or at the same relative place under
    ``boxes_dir``. The report counts each kind.

    Raises:
        DatasetFormatError: a malformed list line (names file and line number).
        IncompatibleStoreError: ``out`` holds a store with another D/backbone/classes.
        StoreLockedError: another process is writing ``out``.
        StoreError: no listed video could be read at all (and no store exists yet).
    """
    features_dir, list_file, out = Path(features_dir), Path(list_file), Path(out)
    root_dir = Path(root) if root is not None else None
    side_dir = features_dir if boxes_dir is None else Path(boxes_dir)
    videos = parse_csv(list_file, root=root_dir)
    with StoreLock(out):  # before anything is written, failures.jsonl included
        existing = reconcile_shards(out) if (out / MANIFEST_FILE).exists() else None
        done = set(complete_ids(out)) if existing else set()
        if existing is not None:
            _check_already_there(videos, features_dir, out, existing)
        report = ImportReport(
            store=out, listed=len(videos), imported=0, skipped_existing=0, boxes_dir=side_dir
        )
        with open_truncate(out / FAILURES_FILE) as failures_log:
            failures = _FailureLog(report, failures_log)
            # Pass 1 reads every header, to fix K and D before anything is written.
            candidates = _find_features(videos, features_dir, done, report, failures, progress)
            if existing is not None:
                k, d = existing.clips_per_video, existing.dim
            elif candidates:
                k, d = _common_shape(candidates)
            else:
                raise _nothing_readable(len(videos), list_file, features_dir, out)
            manifest = Manifest(
                dim=d,
                clips_per_video=k,
                backbone=backbone,
                sampling={"mode": "imported"},
                dataset=dataset_name,
                clip_frames=clip_frames,
                clip_stride=clip_stride,
                class_names=list(videos.class_names),
            )
            # Pass 2: load, derive boxes, write.
            boxes = _BoxFolder(features_dir, side_dir)
            _write_videos(out, manifest, candidates, boxes, shard_size, report, failures, progress)
        logger.info(report.summary())
        return report


class _FailureLog:
    """Records a skipped video in the report, in failures.jsonl (flushed at once, so the file
    is complete even if the import is killed) and as a warning."""

    def __init__(self, report: ImportReport, log: IO[str]) -> None:
        self.report = report
        self.log = log

    def __call__(self, video_id: str, path: str, reason: str) -> None:
        self.report.failures.append(ImportFailure(video_id, path, reason))
        self.log.write(json.dumps({"video_id": video_id, "path": path, "reason": reason}) + "\n")
        self.log.flush()
        logger.warning("skipping %s: %s", video_id, reason)


def _find_features(
    videos: VideoList,
    features_dir: Path,
    done: set[str],
    report: ImportReport,
    fail: _FailureLog,
    progress: bool,
) -> list[_Candidate]:
    """Pass 1: the listed videos not yet in the store whose features file has a usable header.

    Counts the videos already there in ``report``; every other video left out goes to ``fail``.
    """
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    for item in progress_bar(videos.items, desc="scan", unit="video", enabled=progress):
        video_id, label, stored_path = item.video_id, item.label, str(item.path)
        if video_id in done:
            report.skipped_existing += 1
            continue
        if video_id in seen:
            fail(video_id, stored_path, "listed twice")
            continue
        seen.add(video_id)
        looked = _feature_candidates(video_id, features_dir)
        try:
            found = next((p for p in looked if p.is_file()), None)
        except OSError as e:  # a name too long for the file system, a folder without access
            fail(video_id, stored_path, f"cannot look up its features file: {e.strerror}")
            continue
        if found is None:
            fail(
                video_id,
                stored_path,
                f"no features file (looked for {[str(p) for p in looked]})",
            )
            continue
        try:
            clips, dim = _features_shape(found)
        except (OSError, ValueError, SyntaxError) as e:
            fail(video_id, stored_path, f"unreadable {found}: {e}")
            continue
        candidates.append(_Candidate(video_id, stored_path, label, found, clips, dim))
    return candidates


def _stored_videos(out: Path) -> dict[str, tuple[int, int]]:
    """video id -> (label, clip count) of every committed video of the store at `out`."""
    by_shard: dict[str, list[str]] = {}
    for vid, shard in complete_ids(out).items():
        by_shard.setdefault(shard, []).append(vid)
    stored: dict[str, tuple[int, int]] = {}
    for shard, ids in by_shard.items():
        folder = out / SHARDS_DIR / shard
        order = read_shard_json(folder)["video_ids"]
        labels = np.load(folder / "labels.npy", allow_pickle=False)
        clips = np.load(folder / "num_clips.npy", allow_pickle=False)
        row = {vid: i for i, vid in enumerate(order)}
        stored.update({vid: (int(labels[row[vid]]), int(clips[row[vid]])) for vid in ids})
    return stored


def _check_already_there(
    videos: VideoList, features_dir: Path, out: Path, manifest: Manifest
) -> None:
    """A video already in the store is skipped on a re-run, so a re-run that would change it
    (another label, features of another size) is an error naming the ids, not a silent no-op."""
    stored = _stored_videos(out)
    names = manifest.class_names or []
    relabelled, resized = [], []
    for item in videos.items:
        if item.video_id not in stored:
            continue
        label, clips = stored[item.video_id]
        old = names[label] if 0 <= label < len(names) else str(label)
        new = videos.class_names[item.label] if item.label >= 0 else "-1"
        if old != new:
            relabelled.append(f"{item.video_id} ({old!r} -> {new!r})")
        looked = _feature_candidates(item.video_id, features_dir)
        try:
            found = next((p for p in looked if p.is_file()), None)
            shape = None if found is None else _features_shape(found)
        except (OSError, ValueError, SyntaxError):
            continue  # a file it would not import anyway
        if shape is None:
            continue
        if shape != (clips, manifest.dim):
            resized.append(f"{item.video_id} ({clips}x{manifest.dim} -> {shape[0]}x{shape[1]})")
    for problem, ids in (("another label", relabelled), ("features of another size", resized)):
        if ids:
            raise IncompatibleStoreError(
                f"{out} already holds {len(ids)} listed video(s) with {problem}: "
                f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}; a re-run never changes a "
                "stored video: import into a new --out (or delete the store to import it again)",
                path=out,
            )


def _features_shape(path: Path) -> tuple[int, int]:
    """(clips, D) from a features file's .npy header (a 1-D array is one clip); ValueError
    when it is not a complete numeric (clips, D) array."""
    shape, dtype, offset, _ = npy_header(path)
    if dtype.hasobject:
        raise ValueError(
            f"holds Python objects (dtype {dtype}), which scalevid never unpickles; "
            "save the features as a numeric (clips, D) array"
        )
    if path.stat().st_size < offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError("file is truncated")
    if dtype.kind not in "fiu" or len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(f"expected a (clips, D) numeric array, got {dtype} {shape}")
    clips, dim = (1, shape[0]) if len(shape) == 1 else shape
    return clips, dim


def _nothing_readable(listed: int, list_file: Path, features_dir: Path, out: Path) -> StoreError:
    return StoreError(
        f"none of the {listed} videos in {list_file} has a readable features file "
        f"in {features_dir}; see {out / FAILURES_FILE}",
        path=out / FAILURES_FILE,
    )


def _common_shape(candidates: list[_Candidate]) -> tuple[int, int]:
    """(K, D) of a new store: the most common D, and the most clips among videos of that D."""
    d = Counter(c.dim for c in candidates).most_common(1)[0][0]
    k = max(c.clips for c in candidates if c.dim == d)
    return k, d


@dataclass(frozen=True)
class _BoxFolder:
    """The folder of the boxes and timestamps files, laid out as the features folder."""

    features_dir: Path
    boxes_dir: Path

    def side(self, feature_file: Path) -> Path:
        """Where `feature_file` would be in the boxes folder."""
        return self.boxes_dir / feature_file.relative_to(self.features_dir)


def _write_videos(
    out: Path,
    manifest: Manifest,
    candidates: list[_Candidate],
    box_folder: _BoxFolder,
    shard_size: int,
    report: ImportReport,
    fail: _FailureLog,
    progress: bool,
) -> None:
    """Pass 2: load each candidate's features, derive its boxes and add it to the store."""
    k, d = manifest.clips_per_video, manifest.dim
    with StoreWriter(
        out, manifest, shard_prefix="import", shard_size=shard_size, lock=False
    ) as writer:  # the caller holds the lock
        for c in progress_bar(candidates, desc="import", unit="video", enabled=progress):
            if c.dim != d or c.clips > k:
                fail(
                    c.video_id,
                    c.path,
                    f"features have {c.clips} clips x {c.dim} dims; the store has K={k}, D={d}",
                )
                continue
            try:
                array = np.load(c.feature_file, allow_pickle=False).reshape(c.clips, c.dim)
                boxes, source = _clip_boxes(box_folder.side(c.feature_file), c.clips)
            except (OSError, ValueError, json.JSONDecodeError) as e:
                fail(c.video_id, c.path, f"unreadable {c.feature_file} or its boxes: {e}")
                continue
            try:
                writer.add(
                    video_id=c.video_id, path=c.path, features=array, boxes=boxes, label=c.label
                )
            except StoreDataError as e:
                fail(c.video_id, c.path, str(e))
                continue
            report.imported += 1
            report.box_sources[source] += 1
