"""One shard folder: its shard.json, and its .npy files opened with every structural check.

A shard is ``shards/<name>/`` holding features.npy (memory-mapped by readers), boxes.npy,
num_clips.npy, labels.npy, optionally targets.npy, and shard.json (count, video ids, paths and
every file's size and crc32). Loading checks presence, sizes, shapes and dtypes; the values
and checksums are checked by `scalevid.store.check`.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalevid.store.errors import CorruptShardError
from scalevid.store.files import npy_header
from scalevid.store.layout import (
    BOX_DIM,
    BOXES_FILE,
    FEATURES_FILE,
    LABELS_FILE,
    NUM_CLIPS_FILE,
    OPTIONAL_SHARD_FILES,
    REQUIRED_SHARD_FILES,
    SHARD_FILE,
    SHARDS_DIR,
    TARGETS_FILE,
)
from scalevid.store.manifest import Manifest


def shard_dirs(root: Path) -> list[Path]:
    """Complete shards, sorted by name; hidden dirs (writers' temp dirs) are not shards."""
    shards = root / SHARDS_DIR
    if not shards.is_dir():
        return []
    return sorted(
        (p for p in shards.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _fix(shard_dir: Path) -> str:
    return f"delete {shard_dir} and re-run extraction (it rewrites only the missing videos)"


def read_shard_json(shard_dir: Path) -> dict[str, Any]:
    """Parse and check a shard's shard.json; CorruptShardError when it is missing or malformed."""
    path = shard_dir / SHARD_FILE
    fix = _fix(shard_dir)
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
    if not isinstance(meta, dict):
        raise CorruptShardError(
            f"shard {shard_dir.name}: {SHARD_FILE} is not a JSON object; {fix}", path=path
        )
    problems = _shard_json_problems(meta)
    if problems:
        raise CorruptShardError(
            f"shard {shard_dir.name}: {SHARD_FILE}: {'; '.join(problems)}; {fix}", path=path
        )
    return meta


def _shard_json_problems(meta: dict[str, Any]) -> list[str]:
    problems = []
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
    return problems


def shard_json_crc32(shard_dir: Path) -> int:
    """crc32 of a shard's shard.json as the manifest records it; -1 when it cannot be read."""
    try:
        return zlib.crc32((shard_dir / SHARD_FILE).read_bytes())
    except OSError:
        return -1


@dataclass
class Shard:
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


def load_shard(shard_dir: Path, manifest: Manifest) -> Shard:
    """Open one shard, checking files, sizes, shapes and dtypes; raise CorruptShardError."""
    meta = read_shard_json(shard_dir)
    n, k, d = meta["count"], manifest.clips_per_video, manifest.dim
    expected: dict[str, tuple[tuple[int, ...], str]] = {
        FEATURES_FILE: ((n, k, d), "float16"),
        BOXES_FILE: ((n, k, BOX_DIM), "float32"),
        NUM_CLIPS_FILE: ((n,), "integer"),
        LABELS_FILE: ((n,), "integer"),
        TARGETS_FILE: ((n,), "float32"),
    }
    names = list(REQUIRED_SHARD_FILES) + [
        f for f in OPTIONAL_SHARD_FILES if (shard_dir / f).exists() or f in meta["files"]
    ]
    sizes = f"count={n}, K={k}, D={d}"
    arrays = {
        name: _load_shard_file(shard_dir / name, meta["files"], expected[name], sizes)
        for name in names
    }
    return Shard(
        name=shard_dir.name,
        path=shard_dir,
        video_ids=list(meta["video_ids"]),
        paths=list(meta["paths"]),
        files=meta["files"],
        features=arrays[FEATURES_FILE],
        boxes=arrays[BOXES_FILE],
        num_clips=arrays[NUM_CLIPS_FILE].astype(np.int64),
        labels=arrays[LABELS_FILE].astype(np.int64),
        targets=arrays.get(TARGETS_FILE),
    )


def _load_shard_file(
    path: Path, files: dict[str, Any], expected: tuple[tuple[int, ...], str], sizes: str
) -> np.ndarray:
    """Check one .npy file against shard.json's ``files`` and its expected (shape, dtype), then
    load it (features.npy memory-mapped). ``sizes`` ("count=n, K=k, D=d") explains the shape."""
    shard_dir = path.parent

    def fail(what: str) -> CorruptShardError:
        return CorruptShardError(
            f"shard {shard_dir.name}: {path.name} {what}; {_fix(shard_dir)}", path=path
        )

    if not path.is_file():
        raise fail("is missing")
    if path.name not in files:
        raise fail(f"is not listed in {SHARD_FILE} 'files'")
    size = path.stat().st_size
    recorded = files[path.name]["bytes"]
    try:
        shape, dtype, offset, fortran = npy_header(path)
    except (OSError, ValueError, SyntaxError) as e:
        raise fail(f"has no valid .npy header ({e})") from None
    data_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != recorded or size != data_bytes:
        state = "truncated" if size < max(recorded, data_bytes) else "has extra bytes"
        raise fail(
            f"is {state}: {size} bytes on disk, {recorded} recorded in {SHARD_FILE}, "
            f"{data_bytes} implied by its header"
        )
    want_shape, want_dtype = expected
    if shape != want_shape:
        raise fail(f"has shape {shape}, expected {want_shape} ({sizes})")
    dtype_ok = dtype.kind in "iu" if want_dtype == "integer" else dtype == np.dtype(want_dtype)
    if not dtype_ok:
        raise fail(f"has dtype {dtype}, expected {want_dtype}")
    if fortran and len(shape) > 1:
        raise fail("is stored in Fortran order; save a C-contiguous array")
    try:
        # Only the features are big; the small per-video arrays are read into RAM.
        mmap_mode = "r" if path.name == FEATURES_FILE else None
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise fail(f"cannot be read ({e})") from None
