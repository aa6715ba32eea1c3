"""Writing a store: `StoreWriter` appends videos as complete shards and commits each to the
manifest; `reconcile_shards` repairs the shard list after a crash; `upgrade_store` gives a
format-1 store its shard list.

A shard is built in ``shards/.tmp-<name>-<pid>``, every file fsynced, renamed into place when
complete, then committed to manifest.json's shard list, so a reader never trusts half a shard.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalevid.config import ConfigError
from scalevid.outfiles import create_new, is_full, make_folder, reraise_if_full, save_npy
from scalevid.store.check import box_problems, checksum_problems
from scalevid.store.errors import IncompatibleStoreError, StoreDataError, StoreError
from scalevid.store.files import file_crc32, fsync_path
from scalevid.store.layout import (
    BOX_DIM,
    BOXES_FILE,
    FEATURES_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    NUM_CLIPS_FILE,
    SHARD_FILE,
    SHARDS_DIR,
    TARGETS_FILE,
    is_temp_shard,
    shard_name,
    shard_seq,
    temp_shard_name,
)
from scalevid.store.lock import StoreLock
from scalevid.store.manifest import (
    FORMAT_VERSION,
    Manifest,
    manifest_differences,
    read_manifest,
    update_manifest_shards,
    write_manifest_if_absent,
)
from scalevid.store.shards import load_shard, read_shard_json, shard_dirs, shard_json_crc32

logger = logging.getLogger(__name__)

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def complete_ids(root: Path) -> dict[str, str]:
    """video id -> shard name, over the committed shards (reads shard.json files only)."""
    manifest = read_manifest(root)
    ids: dict[str, str] = {}
    for shard_dir in shard_dirs(root):
        if manifest.shards is not None and shard_dir.name not in manifest.shards:
            continue
        for vid in read_shard_json(shard_dir)["video_ids"]:
            ids[vid] = shard_dir.name
    return ids


def _shard_entry(shard_dir: Path) -> dict[str, int]:
    """The manifest entry of a complete shard: its video count and its shard.json's crc32."""
    return {
        "videos": int(read_shard_json(shard_dir)["count"]),
        "crc32": shard_json_crc32(shard_dir),
    }


def reconcile_shards(path: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """Bring manifest.json's shard list in line with the disk, for a writer that holds the lock.

    A listed shard that is gone is dropped (with a warning; its videos count as not done, so
    the writer extracts them again). A complete shard folder that is not listed (a writer
    killed between publishing and committing it) is adopted when its files pass their
    checksums, else left for ``store check`` to report. A format-1 manifest gets its list
    here (``scalevid store upgrade``). Returns the manifest as committed.
    """
    root = Path(path)
    manifest = read_manifest(root)
    dirs = shard_dirs(root)
    listed = manifest.shards or {}
    missing = [name for name in listed if not (root / SHARDS_DIR / name).is_dir()]
    for name in missing:
        logger.warning(
            "shard %s (%d videos) is listed in %s but gone from disk: dropping it from the "
            "manifest; its videos will be written again",
            name,
            listed[name]["videos"],
            root / MANIFEST_FILE,
        )
    adopt: dict[str, dict[str, int]] = {}
    for d in dirs:
        if d.name in listed:
            continue
        problems: list[StoreError] = []
        try:
            shard = load_shard(d, manifest)
            if verify:
                problems.extend(checksum_problems(shard))
        except StoreError as e:
            problems.append(e)
        if problems:
            logger.warning("not adopting %s into the manifest: %s", d, problems[0])
            continue
        if manifest.shards is not None:
            logger.warning("adopting %s, published by an interrupted writer", d)
        adopt[d.name] = _shard_entry(d)
    if missing or adopt or manifest.shards is None:
        manifest = update_manifest_shards(root, add=adopt, remove=missing)
    return manifest


def upgrade_store(path: str | os.PathLike[str]) -> Manifest:
    """``scalevid store upgrade``: give a format-1 store its shard list (verifying every shard
    first), under the writer lock. Harmless on a current store (it only reconciles)."""
    root = Path(path)
    read_manifest(root)  # a clear error when there is no store
    with StoreLock(root):
        return reconcile_shards(root, verify=True)


@dataclass
class _PendingVideo:
    """A checked video waiting in the writer's buffer for the next shard."""

    video_id: str
    path: str
    features: np.ndarray  # (k, D) float16
    boxes: np.ndarray  # (k, 7) float32
    label: int
    target: float | None


def _float16_features(features: np.ndarray, bad: Callable[[str], StoreDataError]) -> np.ndarray:
    """(k, D) features as float16; ``bad(...)`` is raised on NaN/Inf or float16 overflow."""
    with np.errstate(over="ignore"):  # overflow is reported just below
        half = features.astype(np.float16)
    if not np.isfinite(half).all():
        if np.isfinite(features).all():
            top = float(np.abs(features).max())
            raise bad(f"features overflow float16 (max |x| = {top:g} > 65504); rescale them")
        raise bad("features contain NaN/Inf")
    return half


def _check_label(label: int, num_classes: int, bad: Callable[[str], StoreDataError]) -> None:
    """Raise ``bad(...)`` unless label is an int in [-1, num_classes) (>= -1 if classes unknown)."""
    if (
        isinstance(label, bool)
        or not isinstance(label, (int, np.integer))
        or label < -1
        or (num_classes and label >= num_classes)
    ):
        allowed = f"[-1, {num_classes})" if num_classes else ">= -1"
        raise bad(f"label {label!r} must be an int in {allowed}")


def _shard_arrays(videos: Sequence[_PendingVideo], k: int, d: int) -> dict[str, np.ndarray]:
    """The .npy files of one shard, by file name: each video padded to K clips with zeros."""
    n = len(videos)
    features = np.zeros((n, k, d), np.float16)  # (n, K, D)
    boxes = np.zeros((n, k, BOX_DIM), np.float32)  # (n, K, 7)
    for i, video in enumerate(videos):
        features[i, : len(video.features)] = video.features
        boxes[i, : len(video.boxes)] = video.boxes
    arrays = {
        FEATURES_FILE: features,
        BOXES_FILE: boxes,
        NUM_CLIPS_FILE: np.array([len(v.features) for v in videos], np.int64),
        LABELS_FILE: np.array([v.label for v in videos], np.int64),
    }
    if any(v.target is not None for v in videos):
        arrays[TARGETS_FILE] = np.array(
            [np.nan if v.target is None else v.target for v in videos], np.float32
        )
    return arrays


def _save_npy(path: Path, array: np.ndarray) -> dict[str, int]:
    """np.save + fsync; returns the {"bytes", "crc32"} entry for shard.json."""
    try:
        with create_new(path) as f:
            save_npy(f, array)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        reraise_if_full(e, path)
        raise
    return {"bytes": path.stat().st_size, "crc32": file_crc32(path)}


class StoreWriter:
    """Appends videos to a store as complete shards; one writer per process.

    One job writes a store at a time: the writer takes the store's `StoreLock` (a second
    writing process gets StoreLockedError at once). The ranks of one torchrun job write at once,
    each with its own ``shard_prefix`` and ``lock=False``, while their launcher holds the lock;
    shards are named ``<prefix>-<6-digit number>``. The first writer creates manifest.json;
    later ones check theirs is compatible (IncompatibleStoreError). Every flushed shard is
    committed to manifest.json's shard list. Re-opening a writer reconciles that list with the
    disk (`reconcile_shards`), continues numbering after its own shards and removes its stale
    temp dirs. Videos buffered but not flushed are lost if the process dies, so use
    ``with StoreWriter(...) as w:`` or call `close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        manifest: Manifest,
        *,
        shard_prefix: str = "r0",
        shard_size: int = 1024,
        lock: bool = True,
    ) -> None:
        if not _PREFIX_RE.match(shard_prefix):
            raise ValueError(f"shard_prefix must match {_PREFIX_RE.pattern}, got {shard_prefix!r}")
        if shard_size < 1:
            raise ConfigError(f"shard_size (--shard-size) must be >= 1, got {shard_size}")
        self.path = Path(path)
        self.shard_prefix = shard_prefix
        self.shard_size = shard_size
        self.written = 0  # videos flushed by this writer
        self._lock = StoreLock(self.path).acquire() if lock else None
        try:
            self._open(manifest)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def _open(self, manifest: Manifest) -> None:
        make_folder(self.path / SHARDS_DIR)
        fresh = dataclasses.replace(manifest, shards={}, format_version=FORMAT_VERSION)
        if write_manifest_if_absent(self.path, fresh):
            self.manifest = fresh
        else:
            existing = reconcile_shards(self.path)
            diffs = manifest_differences(existing, manifest)
            if diffs:
                raise IncompatibleStoreError(
                    f"{self.path / MANIFEST_FILE}: cannot add to this store, its manifest differs "
                    f"({'; '.join(diffs)}); write to a new store directory, or delete this one to "
                    "start over",
                    path=self.path / MANIFEST_FILE,
                )
            self.manifest = existing
        self._remove_stale_temp_dirs()
        self._next_seq = self._first_free_seq()
        self._known = set(complete_ids(self.path))
        self._buffer: list[_PendingVideo] = []
        self._closed = False

    def done_ids(self) -> set[str]:
        """Ids of the videos in complete shards of the store (any writer's), for resuming."""
        return set(complete_ids(self.path))

    def add(
        self,
        *,
        video_id: str,
        path: str,
        features: np.ndarray,
        boxes: np.ndarray,
        label: int = -1,
        target: float | None = None,
    ) -> None:
        """Buffer one video; flushes a shard every ``shard_size`` videos.

        Args:
            features: (k, D) with 1 <= k <= K, any float dtype; stored as float16 (padded to K).
            boxes: (k, 7) [flip, t0, y0, x0, t1, y1, x1], coordinates normalised to [0, 1].
            label: class index, -1 = unlabelled.
            target: optional regression target.
        Raises:
            StoreDataError: wrong shapes, NaN/Inf (or float16 overflow), bad boxes or label,
                or a video id already in the store.
        """
        if self._closed:
            raise StoreError(f"writer for {self.path} is closed")
        video = self._checked_video(video_id, path, features, boxes, label, target)
        self._buffer.append(video)
        self._known.add(video_id)
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def _checked_video(
        self,
        video_id: str,
        path: str,
        features: np.ndarray,
        boxes: np.ndarray,
        label: int,
        target: float | None,
    ) -> _PendingVideo:
        """The video as `flush` will store it, or the StoreDataError `add` documents."""
        k_max, d = self.manifest.clips_per_video, self.manifest.dim
        if not isinstance(video_id, str) or not video_id:
            raise StoreDataError(f"video_id must be a non-empty string, got {video_id!r}")

        def bad(what: str) -> StoreDataError:
            return StoreDataError(f"video {video_id!r} ({path}): {what}")

        if video_id in self._known:
            raise bad("is already in the store; skip the ids in done_ids()")
        features = np.asarray(features)
        boxes = np.asarray(boxes, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != d or not 1 <= features.shape[0] <= k_max:
            raise bad(
                f"features have shape {features.shape}, expected (k, {d}) with 1 <= k <= {k_max}"
            )
        k = features.shape[0]
        if boxes.shape != (k, BOX_DIM):
            raise bad(f"boxes have shape {boxes.shape}, expected ({k}, {BOX_DIM})")
        half = _float16_features(features, bad)
        problems = box_problems(boxes[None], np.array([k]), [video_id])
        if problems:
            raise bad("; ".join(problems))
        _check_label(label, self.manifest.num_classes, bad)
        return _PendingVideo(
            video_id,
            str(path),
            half,
            boxes,
            int(label),
            None if target is None else float(target),
        )

    def flush(self) -> None:
        """Write the buffered videos as one complete shard (atomic rename into place)."""
        if not self._buffer:
            return
        shards = self.path / SHARDS_DIR
        while (shards / shard_name(self.shard_prefix, self._next_seq)).exists():
            self._next_seq += 1
        name = shard_name(self.shard_prefix, self._next_seq)
        tmp = shards / temp_shard_name(name, os.getpid())
        if tmp.is_symlink():
            tmp.unlink()
        elif tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        videos = self._buffer
        n = len(videos)
        arrays = _shard_arrays(videos, self.manifest.clips_per_video, self.manifest.dim)
        try:
            files = {fname: _save_npy(tmp / fname, array) for fname, array in arrays.items()}
            meta = {
                "count": n,
                "video_ids": [v.video_id for v in videos],
                "paths": [v.path for v in videos],
                "files": files,
            }
            with create_new(tmp / SHARD_FILE) as f:
                f.write(json.dumps(meta).encode())
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, shards / name)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            reraise_if_full(e, shards / name)
            raise
        fsync_path(shards)
        # The commit: a kill before it leaves a complete, unlisted shard that the next writer
        # verifies and adopts (reconcile_shards); readers refuse to guess meanwhile.
        self.manifest = update_manifest_shards(self.path, add={name: _shard_entry(shards / name)})
        self._buffer = []
        self._next_seq += 1
        self.written += n
        logger.debug("wrote shard %s (%d videos)", shards / name, n)

    def close(self) -> None:
        """Flush what is buffered and release the lock; the writer cannot be used afterwards."""
        if not self._closed:
            try:
                self.flush()
            finally:
                self._closed = True
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        if is_full(exc):  # flushing again would fail the same way, and say it twice
            self._buffer = []
            self.close()
            return
        # The buffered videos are complete and valid: keep them, but never mask the error.
        try:
            self.close()
        except Exception as e:  # a full disk, usually: the error being raised says more
            logger.error("could not flush the last shard of %s: %s", self.path, e)

    def _remove_stale_temp_dirs(self) -> None:
        # Temp dirs with our own prefix belong to an earlier, killed run of this writer.
        for p in (self.path / SHARDS_DIR).iterdir():
            if p.is_dir() and is_temp_shard(p.name, self.shard_prefix):
                logger.info("removing %s, left by an interrupted writer", p)
                shutil.rmtree(p, ignore_errors=True)

    def _first_free_seq(self) -> int:
        seqs = [shard_seq(p.name, self.shard_prefix) for p in shard_dirs(self.path)]
        return max((s for s in seqs if s is not None), default=-1) + 1
