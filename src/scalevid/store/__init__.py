"""The feature store: the contract between extraction, training and evaluation.

One directory holds one split (docs/feature-store.md is the full format)::

    STORE/
      manifest.json                  Manifest: D, K, backbone, sampling, classes, ...,
                                     and the committed shards with their video counts
      shards/<name>/features.npy     (n, K, D) float16, memory-mapped by readers
      shards/<name>/boxes.npy        (n, K, 7) float32  [flip, t0, y0, x0, t1, y1, x1] in [0, 1]
      shards/<name>/num_clips.npy    (n,) int64          valid clips are rows [0, num_clips)
      shards/<name>/labels.npy       (n,) int64          -1 = unlabelled
      shards/<name>/targets.npy      (n,) float32        optional, NaN = missing
      shards/<name>/shard.json       count, video_ids, paths, per-file bytes + crc32
      failures.jsonl                 videos the importer had to skip (importer only)

Writers (one per process, each with its own shard prefix) build a shard in
``shards/.tmp-<name>-<pid>``, rename it into place when it is complete, then commit it to the
manifest's shard list, so a reader never trusts half a shard and notices a deleted one. One
writing job at a time holds an OS lock on ``STORE/.writer.lock`` (`StoreLock`); the ranks of one
torchrun job share their launcher's lock. The global video order is shards sorted by name, rows
in order. Opening a store verifies every file's crc32 unless the caller opts out
(docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalevid import __version__
from scalevid.progress import progress_bar

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: manifest.json lists the committed shards; 1 is still read
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"
SHARD_FILE = "shard.json"
FAILURES_FILE = "failures.jsonl"
LOCK_FILE = ".writer.lock"  # held (flock) by the one job writing the store
COMMIT_LOCK_FILE = ".commit.lock"  # held briefly by a writer updating manifest.json's shard list
BOX_FIELDS = ("flip", "t0", "y0", "x0", "t1", "y1", "x1")
REQUIRED_SHARD_FILES = ("features.npy", "boxes.npy", "num_clips.npy", "labels.npy")
OPTIONAL_SHARD_FILES = ("targets.npy",)

_CHUNK_BYTES = 64 * 2**20  # bounded memory for streamed NaN scans
_HASH_CHUNK_BYTES = 8 * 2**20  # per checksum thread
_HASH_THREADS = min(8, os.cpu_count() or 1)
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_MAX_EXAMPLES = 3  # offending items quoted in one error message


# ----------------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of all feature-store errors. ``path`` names the offending file or directory."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class StoreNotFoundError(StoreError):
    """No store at the path: the directory or its manifest.json is missing."""


class StoreFormatError(StoreError):
    """manifest.json is unreadable, lacks a key, or has an unknown format version."""


class CorruptShardError(StoreError):
    """A shard file is missing, truncated, has the wrong shape/dtype, or fails its checksum."""


class StoreDataError(StoreError):
    """Invalid values: NaN/Inf features, boxes out of range, bad labels, duplicate video ids."""


class IncompatibleStoreError(StoreError):
    """A writer's manifest disagrees with the manifest already in the store."""


class StoreLockedError(StoreError):
    """Another process (another `extract` or `import` job) is writing the store."""


@dataclass(frozen=True)
class StoreProblem:
    """One problem found by `check_store`: the file it concerns and what is wrong + the fix."""

    path: Path
    message: str
    kind: str  # the StoreError subclass name, e.g. "CorruptShardError"


# --------------------------------------------------------------------------------- manifest


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """What every shard of a store shares; saved as manifest.json.

    ``sampling`` says how clips were drawn, e.g. ``{"mode": "train", "passes": 1}`` or
    ``{"mode": "test", "temporal_views": 4, "spatial_views": 3}``. An empty ``class_names``
    means the class names are unknown (labels are then only checked to be >= -1).

    ``shards`` is the store's commit record: shard name -> ``{"videos": n, "crc32": c}`` (c is
    the crc32 of its shard.json). Writers maintain it; a writer's own manifest leaves it None.
    Stores of format version 1 have none (None): they open, but a deleted shard cannot be
    noticed until ``scalevid store upgrade`` (or the next extract/import into them) lists them.
    """

    dim: int  # D, feature size
    clips_per_video: int  # K, rows per video (padded)
    backbone: str
    sampling: dict[str, Any]
    dataset: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    clip_frames: int | None = None
    clip_stride: int | None = None
    class_names: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    scalevid_version: str = __version__
    format_version: int = FORMAT_VERSION
    shards: dict[str, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.shards is not None and not (
            isinstance(self.shards, dict)
            and all(
                isinstance(v, dict)
                and {"videos", "crc32"} <= set(v)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in v.values())
                for v in self.shards.values()
            )
        ):
            problems.append('shards must map shard names to {"videos": int, "crc32": int}')
        for name in ("dim", "clips_per_video"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive int, got {value!r}")
        for name in ("clip_frames", "clip_stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"{name} must be an int or null, got {value!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            problems.append(f"backbone must be a non-empty string, got {self.backbone!r}")
        if not isinstance(self.sampling, dict) or not isinstance(self.sampling.get("mode"), str):
            problems.append(f'sampling must be a dict with a "mode" string, got {self.sampling!r}')
        if not isinstance(self.preprocessing, dict):
            problems.append(f"preprocessing must be a dict, got {self.preprocessing!r}")
        if not isinstance(self.dataset, str):
            problems.append(f"dataset must be a string, got {self.dataset!r}")
        names = self.class_names
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append("class_names must be a list of strings")
        elif len(set(names)) != len(names):
            problems.append("class_names has duplicates")
        if problems:
            raise StoreFormatError("invalid manifest: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        """Number of class names (0 when unknown)."""
        return len(self.class_names)

    @property
    def num_videos(self) -> int | None:
        """Videos in the committed shards (None for a format-1 store, which does not record it)."""
        return None if self.shards is None else sum(v["videos"] for v in self.shards.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field (the manifest.json content), format_version first."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_dict(cls, data: Any, *, source: str | os.PathLike[str] | None = None) -> Manifest:
        """Parse a manifest dict; raise StoreFormatError on a missing key or wrong version."""
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict):
            raise StoreFormatError(f"{where}manifest must be a JSON object", path=source)
        if "format_version" not in data:
            raise StoreFormatError(
                f"{where}missing key 'format_version'; this is not a scalevid feature store "
                "manifest (see docs/feature-store.md)",
                path=source,
            )
        if data["format_version"] not in READABLE_VERSIONS:
            raise StoreFormatError(
                f"{where}store format version {data['format_version']!r}, but scalevid "
                f"{__version__} reads versions {list(READABLE_VERSIONS)}; use the scalevid "
                "version that wrote it or re-extract the features",
                path=source,
            )
        keys = [f.name for f in dataclasses.fields(cls)]
        optional = {"shards"} if data["format_version"] == 1 else set()
        missing = [k for k in keys if k not in data and k not in optional]
        if missing:
            raise StoreFormatError(
                f"{where}manifest lacks key(s) {missing}; every key of docs/feature-store.md "
                "is required",
                path=source,
            )
        unknown = sorted(set(data) - set(keys))
        if unknown:
            logger.debug("%signoring unknown manifest keys %s", where, unknown)
        try:
            return cls(**{k: data[k] for k in keys if k in data})
        except StoreFormatError as e:
            raise StoreFormatError(f"{where}{e}", path=source) from None


# Fields that must agree between a store and a writer adding to it.
_COMPATIBLE_FIELDS = (
    "format_version",
    "dim",
    "clips_per_video",
    "backbone",
    "preprocessing",
    "clip_frames",
    "clip_stride",
    "sampling",
    "dataset",
    "class_names",
)


def _manifest_differences(store: Manifest, writer: Manifest) -> list[str]:
    a, b = store.to_dict(), writer.to_dict()
    return [
        f"{k}: store has {a[k]!r}, writer has {b[k]!r}" for k in _COMPATIBLE_FIELDS if a[k] != b[k]
    ]


def _read_manifest(root: Path) -> Manifest:
    if not root.is_dir():
        raise StoreNotFoundError(f"no feature store at {root}: directory does not exist", path=root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise StoreNotFoundError(
            f"{root} is not a feature store: {MANIFEST_FILE} is missing (write one with "
            "`scalevid extract` / `scalevid store import`, or see docs/feature-store.md)",
            path=path,
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreFormatError(
            f"{path}: cannot parse ({e}); restore it or re-run extraction into a fresh store",
            path=path,
        ) from None
    return Manifest.from_dict(data, source=path)


def _write_manifest_if_absent(root: Path, manifest: Manifest) -> bool:
    """Atomically create root/manifest.json unless it exists; True when this call created it."""
    target = root / MANIFEST_FILE
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    tmp = root / f".{MANIFEST_FILE}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    try:
        os.link(tmp, target)  # fails if target exists: atomic create-if-absent, complete content
        return True
    except FileExistsError:
        return False
    except OSError:  # file systems without hard links
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


class StoreLock:
    """The one-writing-job lock of a store: an exclusive ``fcntl.flock`` on STORE/.writer.lock.

    `acquire` fails at once (StoreLockedError naming the holder's pid) when another process
    holds it, so a second ``extract`` or ``import`` on the same store stops before touching
    anything. The OS drops the lock when the holder exits, also on ``kill -9``: a stale lock
    never needs deleting. Under torchrun one process takes it for the whole job and the ranks
    write with ``StoreWriter(..., lock=False)``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StoreLock:
        if self._fd is not None:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        lock_file = self.path / LOCK_FILE
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"{self.path} is being written by another process (pid {holder}, lock "
                f"{lock_file}); wait for it to finish, or write to another --out. Two writers "
                "on one store would store videos twice and remove each other's work",
                path=lock_file,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _update_manifest_shards(
    root: Path, *, add: dict[str, dict[str, int]] | None = None, remove: Sequence[str] = ()
) -> Manifest:
    """Commit shards to (or drop them from) manifest.json's shard list, atomically.

    Writers of one job (torchrun ranks) commit concurrently, so the read-modify-write runs under
    a short flock on STORE/.commit.lock; manifest.json is replaced by rename, so a reader sees
    the old or the new list, never half of one. A format-1 manifest becomes format 2 here.
    """
    fd = os.open(root / COMMIT_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        manifest = _read_manifest(root)
        shards = dict(manifest.shards or {})
        for name in remove:
            shards.pop(name, None)
        shards.update(add or {})
        manifest = dataclasses.replace(
            manifest, shards=dict(sorted(shards.items())), format_version=FORMAT_VERSION
        )
        target = root / MANIFEST_FILE
        tmp = root / f".{MANIFEST_FILE}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(manifest.to_dict(), indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(root)
        return manifest
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ files on disk


def _file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_HASH_CHUNK_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """(shape, dtype, data offset in bytes, fortran order) from a .npy header, not reading data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(shape), np.dtype(dtype), f.tell(), bool(fortran)


def _save_npy(path: Path, array: np.ndarray) -> dict[str, int]:
    """np.save + fsync; returns the {"bytes", "crc32"} entry for shard.json."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": path.stat().st_size, "crc32": _file_crc32(path)}


def _shard_dirs(root: Path) -> list[Path]:
    """Complete shards, sorted by name; hidden dirs (writers' temp dirs) are not shards."""
    shards = root / SHARDS_DIR
    if not shards.is_dir():
        return []
    return sorted(
        (p for p in shards.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _read_shard_json(shard_dir: Path) -> dict[str, Any]:
    path = shard_dir / SHARD_FILE
    fix = f"delete {shard_dir} and re-run extraction (it rewrites only the missing videos)"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptShardError(
            f"shard {shard_dir.name}: {SHARD_FILE} is missing; {fix}", path=path
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptShardError(
            f"shard {shard_dir.name}: cannot parse {SHARD_FILE} ({e}); {fix}", path=path
        ) from None
    problems = []
    if not isinstance(meta, dict):
        raise CorruptShardError(
            f"shard {shard_dir.name}: {SHARD_FILE} is not a JSON object; {fix}", path=path
        )
    count = meta.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        problems.append(f"'count' must be a positive int, got {count!r}")
    for key in ("video_ids", "paths"):
        value = meta.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{key!r} must be a list of strings")
        elif isinstance(count, int) and len(value) != count:
            problems.append(f"{key!r} has {len(value)} entries, count is {count}")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("crc32"), int)
        for v in files.values()
    ):
        problems.append('\'files\' must map file names to {"bytes": int, "crc32": int}')
    if problems:
        raise CorruptShardError(
            f"shard {shard_dir.name}: {SHARD_FILE}: {'; '.join(problems)}; {fix}", path=path
        )
    return meta


@dataclass
class _Shard:
    """One loaded shard: features memory-mapped, everything else in RAM."""

    name: str
    path: Path
    video_ids: list[str]
    paths: list[str]
    files: dict[str, dict[str, int]]  # shard.json "files"
    features: np.ndarray  # (n, K, D) float16 memmap
    boxes: np.ndarray  # (n, K, 7) float32
    num_clips: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) int64
    targets: np.ndarray | None  # (n,) float32

    def __len__(self) -> int:
        return len(self.video_ids)


def _load_shard(shard_dir: Path, manifest: Manifest) -> _Shard:
    """Open one shard, checking files, sizes, shapes and dtypes; raise CorruptShardError."""
    meta = _read_shard_json(shard_dir)
    n, k, d = meta["count"], manifest.clips_per_video, manifest.dim
    fix = f"delete {shard_dir} and re-run extraction (it rewrites only the missing videos)"
    expected: dict[str, tuple[tuple[int, ...], str]] = {
        "features.npy": ((n, k, d), "float16"),
        "boxes.npy": ((n, k, 7), "float32"),
        "num_clips.npy": ((n,), "integer"),
        "labels.npy": ((n,), "integer"),
        "targets.npy": ((n,), "float32"),
    }
    names = list(REQUIRED_SHARD_FILES) + [
        f for f in OPTIONAL_SHARD_FILES if (shard_dir / f).exists() or f in meta["files"]
    ]
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        path = shard_dir / name

        def fail(what: str, path: Path = path) -> CorruptShardError:
            return CorruptShardError(
                f"shard {shard_dir.name}: {path.name} {what}; {fix}", path=path
            )

        if not path.is_file():
            raise fail("is missing")
        if name not in meta["files"]:
            raise fail(f"is not listed in {SHARD_FILE} 'files'")
        size = path.stat().st_size
        recorded = meta["files"][name]["bytes"]
        try:
            shape, dtype, offset, fortran = _npy_header(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise fail(f"has no valid .npy header ({e})") from None
        data_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != recorded or size != data_bytes:
            state = "truncated" if size < max(recorded, data_bytes) else "has extra bytes"
            raise fail(
                f"is {state}: {size} bytes on disk, {recorded} recorded in {SHARD_FILE}, "
                f"{data_bytes} implied by its header"
            )
        want_shape, want_dtype = expected[name]
        if shape != want_shape:
            raise fail(f"has shape {shape}, expected {want_shape} (count={n}, K={k}, D={d})")
        dtype_ok = dtype.kind in "iu" if want_dtype == "integer" else dtype == np.dtype(want_dtype)
        if not dtype_ok:
            raise fail(f"has dtype {dtype}, expected {want_dtype}")
        if fortran and len(shape) > 1:
            raise fail("is stored in Fortran order; save a C-contiguous array")
        try:
            if name == "features.npy":
                arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise fail(f"cannot be read ({e})") from None
    return _Shard(
        name=shard_dir.name,
        path=shard_dir,
        video_ids=list(meta["video_ids"]),
        paths=list(meta["paths"]),
        files=meta["files"],
        features=arrays["features.npy"],
        boxes=arrays["boxes.npy"],
        num_clips=arrays["num_clips.npy"].astype(np.int64),
        labels=arrays["labels.npy"].astype(np.int64),
        targets=arrays.get("targets.npy"),
    )


# ------------------------------------------------------------------------------- validation


def _valid_clip_mask(num_clips: np.ndarray, clips_per_video: int) -> np.ndarray:
    """(n, K) bool: True on the first num_clips rows of each video."""
    return np.arange(clips_per_video)[None, :] < num_clips[:, None]


def _box_problems(boxes: np.ndarray, num_clips: np.ndarray, video_ids: Sequence[str]) -> list[str]:
    """Range problems of the boxes on valid clips. boxes (n, K, 7), num_clips (n,)."""
    valid = _valid_clip_mask(num_clips, boxes.shape[1])  # (n, K)
    flip, t0, y0, x0, t1, y1, x1 = np.moveaxis(boxes, -1, 0)  # each (n, K)
    coords = boxes[..., 1:]  # (n, K, 6)
    checks = {
        "flip not +1/-1": ~np.isin(flip, (1.0, -1.0)),
        "coordinate outside [0, 1] or not finite": ~((coords >= 0) & (coords <= 1)).all(axis=-1),
        "t0 > t1": t0 > t1,
        "y0 >= y1": y0 >= y1,
        "x0 >= x1": x0 >= x1,
    }
    problems = []
    for what, bad in checks.items():
        bad = bad & valid
        if bad.any():
            rows, cols = np.nonzero(bad)
            examples = ", ".join(
                f"{video_ids[r]!r} clip {c} {boxes[r, c].tolist()}"
                for r, c in zip(rows[:_MAX_EXAMPLES], cols[:_MAX_EXAMPLES], strict=True)
            )
            problems.append(f"{len(rows)} valid clip box(es) with {what} (e.g. {examples})")
    return problems


def _nonfinite_videos(features: np.memmap, num_clips: np.ndarray) -> np.ndarray:
    """Row indices of videos with NaN/Inf in a valid clip.

    Reads the (n, K, D) features file in bounded chunks with plain reads rather than through the
    memmap, so a full scan does not leave the whole file resident in this process.
    """
    n, k, d = features.shape
    rows = max(1, _CHUNK_BYTES // (k * d * features.dtype.itemsize))
    buffer = np.empty((min(rows, n), k, d), features.dtype)
    bad = []
    with open(features.filename, "rb") as f:
        f.seek(features.offset)
        for start in range(0, n, rows):
            chunk = buffer[: min(rows, n - start)]  # (r, K, D)
            if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                raise CorruptShardError(
                    f"{features.filename} shrank while being read", path=features.filename
                )
            finite = np.isfinite(chunk).all(axis=-1)  # (r, K)
            valid = _valid_clip_mask(num_clips[start : start + len(chunk)], k)
            bad.append(start + np.flatnonzero((valid & ~finite).any(axis=1)))
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def _shard_value_problems(
    shard: _Shard, manifest: Manifest, *, check_values: bool
) -> Iterator[StoreError]:
    """Content problems of a structurally sound shard (boxes, labels, num_clips, NaN)."""
    fix = f"delete {shard.path} and re-run extraction"
    k = manifest.clips_per_video
    bad_n = np.flatnonzero((shard.num_clips < 1) | (shard.num_clips > k))
    if bad_n.size:
        examples = [(shard.video_ids[i], int(shard.num_clips[i])) for i in bad_n[:_MAX_EXAMPLES]]
        yield StoreDataError(
            f"shard {shard.name}: num_clips.npy has {bad_n.size} value(s) outside [1, K={k}] "
            f"(e.g. {examples}); {fix}",
            path=shard.path / "num_clips.npy",
        )
        return  # box and NaN checks depend on num_clips
    for problem in _box_problems(shard.boxes, shard.num_clips, shard.video_ids):
        yield StoreDataError(
            f"shard {shard.name}: boxes.npy: {problem}; boxes are [flip, t0, y0, x0, t1, y1, x1] "
            f"with coordinates normalised to [0, 1]; {fix}",
            path=shard.path / "boxes.npy",
        )
    num_classes = manifest.num_classes
    low = shard.labels < -1
    high = shard.labels >= num_classes if num_classes else np.zeros_like(low)
    bad_labels = np.flatnonzero(low | high)
    if bad_labels.size:
        allowed = f"[-1, {num_classes})" if num_classes else ">= -1"
        examples = [(shard.video_ids[i], int(shard.labels[i])) for i in bad_labels[:_MAX_EXAMPLES]]
        yield StoreDataError(
            f"shard {shard.name}: labels.npy has {bad_labels.size} label(s) outside {allowed} "
            f"(e.g. {examples}); fix the labels or class_names in {MANIFEST_FILE} and re-extract",
            path=shard.path / "labels.npy",
        )
    if check_values:
        bad_rows = _nonfinite_videos(shard.features, shard.num_clips)
        if bad_rows.size:
            examples = [shard.video_ids[i] for i in bad_rows[:_MAX_EXAMPLES]]
            yield StoreDataError(
                f"shard {shard.name}: features.npy has NaN/Inf in valid clips of {bad_rows.size} "
                f"video(s) (e.g. {examples}); {fix} (if it recurs, run the backbone in float32)",
                path=shard.path / "features.npy",
            )


# Files whose crc32 matched in this process, keyed by (path, size, mtime, inode, crc32): a store
# opened twice in one process (eval opens train and test, recipes open a store per sweep point)
# is hashed once. A rewritten file has a new mtime or inode and is hashed again.
_VERIFIED: set[tuple[str, int, int, int, int]] = set()


def _checksum_problems(shard: _Shard, *, cache: bool = False) -> Iterator[StoreError]:
    for name, info in sorted(shard.files.items()):
        path = shard.path / name
        if not path.is_file():
            continue
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, info["crc32"])
        if cache and key in _VERIFIED:
            continue
        if _file_crc32(path) != info["crc32"]:
            yield CorruptShardError(
                f"shard {shard.name}: {name} fails its crc32 check (the file is corrupted); "
                f"run `scalevid store check {shard.path.parent.parent}` to list every damaged "
                f"shard, then delete {shard.path} and re-run the same extract/import command "
                "(it re-extracts only the videos of deleted shards)",
                path=path,
            )
        elif cache:
            _VERIFIED.add(key)


def _shard_json_crc32(shard_dir: Path) -> int:
    try:
        return zlib.crc32((shard_dir / SHARD_FILE).read_bytes())
    except OSError:
        return -1


def _listing_problems(root: Path, manifest: Manifest, dirs: list[Path]) -> Iterator[StoreError]:
    """Shards listed in manifest.json but gone, and shard folders it does not list."""
    if manifest.shards is None:
        return
    on_disk = {d.name for d in dirs}
    for name, entry in manifest.shards.items():
        if name not in on_disk:
            yield CorruptShardError(
                f"shard {name} ({entry['videos']} videos) is listed in {MANIFEST_FILE} but "
                f"{root / SHARDS_DIR / name} is missing; restore it from a backup, or re-run the "
                "same extract/import command: it drops the shard from the manifest and extracts "
                "its videos again",
                path=root / SHARDS_DIR / name,
            )
    for d in dirs:
        if d.name not in manifest.shards:
            yield CorruptShardError(
                f"shard {d.name} is not listed in {root / MANIFEST_FILE} (a writer was "
                "interrupted before committing it, or it was copied in); re-run the same "
                f"extract/import command (it verifies and adopts complete shards) or delete {d}",
                path=d,
            )


def _entry_problems(shard: _Shard, manifest: Manifest) -> Iterator[StoreError]:
    """A loaded shard against its manifest entry: video count and shard.json checksum."""
    if manifest.shards is None or shard.name not in manifest.shards:
        return
    entry = manifest.shards[shard.name]
    fix = f"delete {shard.path} and re-run the same extract/import command"
    if entry["videos"] != len(shard):
        yield CorruptShardError(
            f"shard {shard.name}: holds {len(shard)} videos, {MANIFEST_FILE} records "
            f"{entry['videos']}; {fix}",
            path=shard.path / SHARD_FILE,
        )
    elif _shard_json_crc32(shard.path) != entry["crc32"]:
        yield CorruptShardError(
            f"shard {shard.name}: {SHARD_FILE} fails the crc32 recorded in {MANIFEST_FILE} "
            f"(it was changed or damaged); {fix}",
            path=shard.path / SHARD_FILE,
        )


def _duplicate_problems(shards: list[_Shard], root: Path) -> Iterator[StoreError]:
    where: dict[str, list[str]] = {}
    for shard in shards:
        for vid in shard.video_ids:
            where.setdefault(vid, []).append(shard.name)
    dups = {vid: names for vid, names in where.items() if len(names) > 1}
    if dups:
        examples = "; ".join(
            f"{vid!r} in {names}" for vid, names in list(dups.items())[:_MAX_EXAMPLES]
        )
        yield StoreDataError(
            f"{root}: {len(dups)} video id(s) appear more than once ({examples}); two writers "
            "wrote the same videos: delete one of the shards named",
            path=root / SHARDS_DIR,
        )


def _scan_store(
    root: Path,
    *,
    check_values: bool,
    verify_checksums: bool,
    report: Callable[[StoreError], None],
    progress: bool = False,
    cache_checksums: bool = False,
) -> tuple[Manifest, list[_Shard]]:
    """Load and validate a store, passing every problem to ``report`` (which may raise).

    Shards that cannot be loaded at all, or that manifest.json does not list, are left out.
    """
    manifest = _read_manifest(root)
    dirs = _shard_dirs(root)
    for problem in _listing_problems(root, manifest, dirs):
        report(problem)
    if manifest.shards is not None:
        dirs = [d for d in dirs if d.name in manifest.shards]
    loaded: list[_Shard | StoreError] = []
    for shard_dir in dirs:  # headers and the small arrays: cheap
        try:
            loaded.append(_load_shard(shard_dir, manifest))
        except StoreError as e:
            loaded.append(e)
    # The checksums run in a thread pool (zlib releases the GIL), overlapping each other and
    # the NaN scan below; problems are still reported shard by shard, in store order.
    pool = ThreadPoolExecutor(max_workers=_HASH_THREADS) if verify_checksums else None
    try:
        sums = [
            pool.submit(lambda s: list(_checksum_problems(s, cache=cache_checksums)), item)
            if pool is not None and isinstance(item, _Shard)
            else None
            for item in loaded
        ]
        shards = []
        for item, crc in progress_bar(
            list(zip(loaded, sums, strict=True)),
            desc="check shards",
            unit="shard",
            enabled=progress,
        ):
            if isinstance(item, StoreError):
                report(item)
                continue
            for problem in _entry_problems(item, manifest):
                report(problem)
            for problem in crc.result() if crc is not None else ():
                report(problem)
            for problem in _shard_value_problems(item, manifest, check_values=check_values):
                report(problem)
            shards.append(item)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    for problem in _duplicate_problems(shards, root):
        report(problem)
    return manifest, shards


# ----------------------------------------------------------------------------------- reader

Index = int | slice | Sequence[int] | np.ndarray | None


class FeatureStore:
    """Read-only view of a store: features memory-mapped, the small per-video arrays in RAM.

    Attributes (N videos, K clips per video):
        manifest: Manifest
        path: the store directory
        video_ids, paths: list[str] of length N
        labels: (N,) int64, -1 = unlabelled
        num_clips: (N,) int64, valid clips are rows [0, num_clips) of each video
        boxes: (N, K, 7) float32 [flip, t0, y0, x0, t1, y1, x1]; padded rows are zeros
        targets: (N,) float32 regression targets (NaN = missing), or None if no shard has any
        shard_names: list[str], in global order
    """

    def __init__(self, path: Path, manifest: Manifest, shards: list[_Shard]) -> None:
        """Use `FeatureStore.open`; this only assembles already validated shards."""
        self.path = path
        self.manifest = manifest
        self.shard_names = [s.name for s in shards]
        self._shard_files = [s.files for s in shards]
        self._shard_dirs = [s.path for s in shards]
        self._features = [s.features for s in shards]  # memmaps, (n_s, K, D) each
        self._offsets = np.cumsum([0] + [len(s) for s in shards], dtype=np.int64)  # (S + 1,)
        k = manifest.clips_per_video
        self.video_ids: list[str] = [v for s in shards for v in s.video_ids]
        self.paths: list[str] = [p for s in shards for p in s.paths]
        self.labels = np.concatenate([s.labels for s in shards] or [np.zeros(0, np.int64)])
        self.num_clips = np.concatenate([s.num_clips for s in shards] or [np.zeros(0, np.int64)])
        self.boxes = np.concatenate(
            [s.boxes.astype(np.float32, copy=False) for s in shards]
            or [np.zeros((0, k, 7), np.float32)]
        )
        self.targets: np.ndarray | None = None
        if any(s.targets is not None for s in shards):
            self.targets = np.concatenate(
                [
                    s.targets.astype(np.float32)
                    if s.targets is not None
                    else np.full(len(s), np.nan, np.float32)
                    for s in shards
                ]
            )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        check_values: bool = True,
        verify_checksums: bool = True,
        progress: bool = False,
    ) -> FeatureStore:
        """Open and validate a store; raise the first problem as a StoreError subclass.

        Every shard manifest.json lists must be there, and no other. The per-file checks (sizes,
        shapes, dtypes, labels, boxes) always run.

        Args:
            check_values: stream through all features looking for NaN/Inf (bounded memory).
            verify_checksums: recompute every file's crc32 (reads the whole store once per
                process: files already verified by this process are not hashed again). False
                is for very large stores that `scalevid store check` verifies on a schedule;
                it is logged as a warning.
            progress: show a progress bar over the shards (the checks above read every byte).
        """
        root = Path(path)

        def raise_it(problem: StoreError) -> None:
            raise problem

        start = time.perf_counter()
        manifest, shards = _scan_store(
            root,
            check_values=check_values,
            verify_checksums=verify_checksums,
            report=raise_it,
            progress=progress,
            cache_checksums=True,
        )
        store = cls(root, manifest, shards)
        if not verify_checksums:
            logger.warning(
                "%s: shard checksums NOT verified (opted out); a damaged shard goes unnoticed "
                "until `scalevid store check %s`",
                root,
                root,
            )
        if manifest.shards is None:
            logger.warning(
                "%s: a format-1 store, whose manifest.json does not list its shards, so a "
                "deleted shard cannot be noticed; run `scalevid store upgrade %s` once",
                root,
                root,
            )
        logger.info(
            "opened %s: %d videos in %d shards (%s in %.1f s)",
            root,
            len(store),
            len(shards),
            "checksums verified" if verify_checksums else "checksums not verified",
            time.perf_counter() - start,
        )
        return store

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hex digest of the store's content: the manifest and every shard's file sizes and
        crc32s (as recorded in shard.json; nothing is read). Two stores with the same
        fingerprint hold the same videos, clips, labels and features. The manifest's
        bookkeeping (creation time, shard list) is left out and the format version counted as
        1, so fingerprints (and the evaluation baseline caches keyed by them) stay those of
        format 1 across `scalevid store upgrade`."""
        manifest = self.manifest.to_dict()
        content = {
            "manifest": {
                **{k: v for k, v in manifest.items() if k not in ("created", "shards")},
                "format_version": 1,
            },
            "shards": [
                [name, files]
                for name, files in zip(self.shard_names, self._shard_files, strict=True)
            ],
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, videos={len(self)}, K={self.clips_per_video}, "
            f"D={self.dim}, backbone={self.manifest.backbone!r})"
        )

    @property
    def dim(self) -> int:
        """D, the feature size."""
        return self.manifest.dim

    @property
    def clips_per_video(self) -> int:
        """K, rows per video (valid + padded)."""
        return self.manifest.clips_per_video

    def clip_mask(self) -> np.ndarray:
        """(N, K) bool, True on valid (non-padded) clips."""
        return _valid_clip_mask(self.num_clips, self.clips_per_video)

    def features(self, index: Index = None) -> np.ndarray:
        """Features of the selected videos, float16, padded rows zero.

        ``index`` is an int -> (K, D); a slice, int array or bool mask -> (n, K, D); None -> all
        (N, K, D), which reads the whole store into RAM. A contiguous slice within one shard is
        returned as a read-only memmap view (no copy); everything else is gathered into a new
        array. Convert with ``np.asarray(x, dtype=np.float32)`` before handing it to torch.
        """
        n = len(self)
        if index is None:
            return self._range(0, n, copy=True)
        if isinstance(index, (int, np.integer)):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"video index {index} out of range for a store of {n} videos")
            return self._range(i, i + 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return self._range(start, max(start, stop))
            return self._gather(np.arange(start, stop, step))
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"bool mask has shape {idx.shape}, expected ({n},)")
            return self._gather(np.flatnonzero(idx))
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise IndexError(f"index must be a 1-D int array, got {idx.dtype} of shape {idx.shape}")
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"video index out of range for a store of {n} videos")
        return self._gather(idx)

    def iter_chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """Stream the store in order: yields (start, features[start:start + chunk]) (n, K, D)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        for start in range(0, len(self), chunk):
            yield start, self.features(slice(start, start + chunk))

    def _range(self, start: int, stop: int, *, copy: bool = False) -> np.ndarray:
        k, d = self.clips_per_video, self.dim
        if stop <= start:
            return np.zeros((0, k, d), np.float16)
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        last = int(np.searchsorted(self._offsets, stop - 1, side="right")) - 1
        pieces = []
        for s in range(first, last + 1):
            lo, hi = int(self._offsets[s]), int(self._offsets[s + 1])
            pieces.append(self._features[s][max(start, lo) - lo : min(stop, hi) - lo])
        if len(pieces) == 1 and not copy:
            return pieces[0]
        return np.concatenate(pieces)

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.clips_per_video, self.dim), np.float16)  # (n, K, D)
        shard_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            local = idx[where] - self._offsets[s]
            order = np.argsort(local, kind="stable")  # sorted reads are kinder to the disk
            out[where[order]] = self._features[s][local[order]]
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its data; DataLoader workers re-map the files instead.
        state = self.__dict__.copy()
        state["_features"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._features = [
            np.load(d / "features.npy", mmap_mode="r", allow_pickle=False) for d in self._shard_dirs
        ]


# ----------------------------------------------------------------------------------- writer


@dataclass
class _PendingVideo:
    video_id: str
    path: str
    features: np.ndarray  # (k, D) float16
    boxes: np.ndarray  # (k, 7) float32
    label: int
    target: float | None


def _complete_ids(root: Path) -> dict[str, str]:
    """video id -> shard name, over the committed shards (reads shard.json files only)."""
    manifest = _read_manifest(root)
    ids: dict[str, str] = {}
    for shard_dir in _shard_dirs(root):
        if manifest.shards is not None and shard_dir.name not in manifest.shards:
            continue
        for vid in _read_shard_json(shard_dir)["video_ids"]:
            ids[vid] = shard_dir.name
    return ids


def _shard_entry(shard_dir: Path) -> dict[str, int]:
    """The manifest entry of a complete shard: its video count and its shard.json's crc32."""
    return {
        "videos": int(_read_shard_json(shard_dir)["count"]),
        "crc32": _shard_json_crc32(shard_dir),
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
    manifest = _read_manifest(root)
    dirs = _shard_dirs(root)
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
            shard = _load_shard(d, manifest)
            if verify:
                problems.extend(_checksum_problems(shard))
        except StoreError as e:
            problems.append(e)
        if problems:
            logger.warning("not adopting %s into the manifest: %s", d, problems[0])
            continue
        if manifest.shards is not None:
            logger.warning("adopting %s, published by an interrupted writer", d)
        adopt[d.name] = _shard_entry(d)
    if missing or adopt or manifest.shards is None:
        manifest = _update_manifest_shards(root, add=adopt, remove=missing)
    return manifest


def upgrade_store(path: str | os.PathLike[str]) -> Manifest:
    """``scalevid store upgrade``: give a format-1 store its shard list (verifying every shard
    first), under the writer lock. Harmless on a current store (it only reconciles)."""
    root = Path(path)
    _read_manifest(root)  # a clear error when there is no store
    with StoreLock(root):
        return reconcile_shards(root, verify=True)


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
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
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
        (self.path / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        fresh = dataclasses.replace(manifest, shards={}, format_version=FORMAT_VERSION)
        if _write_manifest_if_absent(self.path, fresh):
            self.manifest = fresh
        else:
            existing = reconcile_shards(self.path)
            diffs = _manifest_differences(existing, manifest)
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
        self._known = set(_complete_ids(self.path))
        self._buffer: list[_PendingVideo] = []
        self._closed = False

    def done_ids(self) -> set[str]:
        """Ids of the videos in complete shards of the store (any writer's), for resuming."""
        return set(_complete_ids(self.path))

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
        if boxes.shape != (k, 7):
            raise bad(f"boxes have shape {boxes.shape}, expected ({k}, 7)")
        with np.errstate(over="ignore"):  # overflow is reported just below
            half = features.astype(np.float16)
        if not np.isfinite(half).all():
            if np.isfinite(features).all():
                top = float(np.abs(features).max())
                raise bad(f"features overflow float16 (max |x| = {top:g} > 65504); rescale them")
            raise bad("features contain NaN/Inf")
        problems = _box_problems(boxes[None], np.array([k]), [video_id])
        if problems:
            raise bad("; ".join(problems))
        num_classes = self.manifest.num_classes
        if (
            isinstance(label, bool)
            or not isinstance(label, (int, np.integer))
            or label < -1
            or (num_classes and label >= num_classes)
        ):
            allowed = f"[-1, {num_classes})" if num_classes else ">= -1"
            raise bad(f"label {label!r} must be an int in {allowed}")
        self._buffer.append(
            _PendingVideo(
                video_id,
                str(path),
                half,
                boxes,
                int(label),
                None if target is None else float(target),
            )
        )
        self._known.add(video_id)
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered videos as one complete shard (atomic rename into place)."""
        if not self._buffer:
            return
        shards = self.path / SHARDS_DIR
        while (shards / f"{self.shard_prefix}-{self._next_seq:06d}").exists():
            self._next_seq += 1
        name = f"{self.shard_prefix}-{self._next_seq:06d}"
        tmp = shards / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        videos = self._buffer
        n, k, d = len(videos), self.manifest.clips_per_video, self.manifest.dim
        features = np.zeros((n, k, d), np.float16)  # (n, K, D)
        boxes = np.zeros((n, k, 7), np.float32)  # (n, K, 7)
        for i, video in enumerate(videos):
            features[i, : len(video.features)] = video.features
            boxes[i, : len(video.boxes)] = video.boxes
        arrays = {
            "features.npy": features,
            "boxes.npy": boxes,
            "num_clips.npy": np.array([len(v.features) for v in videos], np.int64),
            "labels.npy": np.array([v.label for v in videos], np.int64),
        }
        if any(v.target is not None for v in videos):
            arrays["targets.npy"] = np.array(
                [np.nan if v.target is None else v.target for v in videos], np.float32
            )
        try:
            files = {fname: _save_npy(tmp / fname, array) for fname, array in arrays.items()}
            meta = {
                "count": n,
                "video_ids": [v.video_id for v in videos],
                "paths": [v.path for v in videos],
                "files": files,
            }
            with open(tmp / SHARD_FILE, "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, shards / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_path(shards)
        # The commit: a kill before it leaves a complete, unlisted shard that the next writer
        # verifies and adopts (reconcile_shards); readers refuse to guess meanwhile.
        self.manifest = _update_manifest_shards(self.path, add={name: _shard_entry(shards / name)})
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
        # The buffered videos are complete and valid: keep them, but never mask the error.
        try:
            self.close()
        except Exception:
            logger.exception("could not flush the last shard of %s", self.path)

    def _remove_stale_temp_dirs(self) -> None:
        # Temp dirs with our own prefix belong to an earlier, killed run of this writer.
        pattern = re.compile(rf"^\.tmp-{re.escape(self.shard_prefix)}-\d+-\d+$")
        for p in (self.path / SHARDS_DIR).iterdir():
            if p.is_dir() and pattern.match(p.name):
                logger.info("removing %s, left by an interrupted writer", p)
                shutil.rmtree(p, ignore_errors=True)

    def _first_free_seq(self) -> int:
        pattern = re.compile(rf"^{re.escape(self.shard_prefix)}-(\d+)$")
        seqs = [int(m.group(1)) for p in _shard_dirs(self.path) if (m := pattern.match(p.name))]
        return max(seqs) + 1 if seqs else 0


# --------------------------------------------------------------------- check + summary (CLI)


def check_store(
    path: str | os.PathLike[str],
    *,
    check_values: bool = True,
    verify_checksums: bool = True,
    progress: bool = False,
) -> list[StoreProblem]:
    """All problems of a store (empty list = healthy), for ``scalevid store check``."""
    root = Path(path)
    problems: list[StoreProblem] = []

    def collect(error: StoreError) -> None:
        problems.append(StoreProblem(error.path or root, str(error), type(error).__name__))

    try:
        _scan_store(
            root,
            check_values=check_values,
            verify_checksums=verify_checksums,
            report=collect,
            progress=progress,
        )
    except StoreError as e:  # no usable manifest: nothing else can be checked
        collect(e)
    return problems


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.2f} {unit}"


def format_store_summary(store: FeatureStore) -> str:
    """Multi-line human summary: videos, K, D, backbone, classes, label counts, size on disk."""
    m = store.manifest
    size = sum(f.stat().st_size for d in store._shard_dirs for f in d.iterdir() if f.is_file())
    size += (store.path / MANIFEST_FILE).stat().st_size
    mean_clips = float(store.num_clips.mean()) if len(store) else 0.0
    clip = f", clip {m.clip_frames} frames stride {m.clip_stride}" if m.clip_frames else ""
    lines = [
        f"store      {store.path}",
        f"dataset    {m.dataset or '-'}",
        f"videos     {len(store)} in {len(store.shard_names)} shard(s)",
        f"clips      K={m.clips_per_video} per video (mean {mean_clips:.1f} valid){clip}",
        f"features   D={m.dim} float16 from backbone {m.backbone!r}",
        f"sampling   {json.dumps(m.sampling, sort_keys=True)}",
        f"classes    {m.num_classes or 'unknown'}",
    ]
    counts = Counter(store.labels.tolist())
    unlabelled = counts.pop(-1, 0)

    def label_name(label: int) -> str:
        return m.class_names[label] if label < m.num_classes else str(label)

    ranked = counts.most_common()
    shown = ", ".join(f"{label_name(c)}: {n}" for c, n in ranked[:10])
    more = f", ... ({len(ranked) - 10} more, fewest {ranked[-1][1]})" if len(ranked) > 10 else ""
    lines.append(
        f"labels     {len(store) - unlabelled} labelled in {len(counts)} classes, {unlabelled} unlabelled"
    )
    if ranked:
        lines.append(f"           {shown}{more}")
    if store.targets is not None:
        lines.append(
            f"targets    {int(np.isfinite(store.targets).sum())} videos have a regression target"
        )
    lines.append(f"size       {_human_bytes(size)} on disk")
    lines.append(
        f"format     v{m.format_version}, written by scalevid {m.scalevid_version} at {m.created}"
    )
    return "\n".join(lines)
