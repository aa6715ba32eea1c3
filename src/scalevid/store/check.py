"""Checking a store: every problem finder, `scan_store` that runs them, and `check_store`.

`scan_store` loads the shards manifest.json lists and hands every problem to a callback:
`FeatureStore.open` raises the first, `check_store` (``scalevid store check``) lists them all.
The checks, cheapest first: the shard list against the folders on disk, each shard's structure
(`scalevid.store.shards.load_shard`), its manifest entry, its files' crc32s (in a thread pool),
its values (num_clips, boxes, labels, NaN/Inf features), and duplicate video ids across shards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from scalevid.progress import progress_bar
from scalevid.store.errors import CorruptShardError, StoreDataError, StoreError, StoreProblem
from scalevid.store.files import file_crc32
from scalevid.store.layout import (
    BOX_FIELDS,
    BOXES_FILE,
    FEATURES_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    NUM_CLIPS_FILE,
    SHARD_FILE,
    SHARDS_DIR,
)
from scalevid.store.manifest import Manifest, read_manifest
from scalevid.store.shards import Shard, load_shard, shard_dirs, shard_json_crc32

_CHUNK_BYTES = 64 * 2**20  # bounded memory for streamed NaN scans
# Hashing threads beside the NaN scan, which keeps one core: on 2 cores a second hashing thread
# made verification slower than one (0.81x, benchmarks/run_all.py, docs/performance.md).
_HASH_THREADS = max(1, min(8, (os.cpu_count() or 1) - 1))
_MAX_EXAMPLES = 3  # offending items quoted in one error message


def valid_clip_mask(num_clips: np.ndarray, clips_per_video: int) -> np.ndarray:
    """(n, K) bool: True on the first num_clips rows of each video."""
    return np.arange(clips_per_video)[None, :] < num_clips[:, None]


def box_problems(boxes: np.ndarray, num_clips: np.ndarray, video_ids: Sequence[str]) -> list[str]:
    """Range problems of the boxes on valid clips. boxes (n, K, 7), num_clips (n,)."""
    valid = valid_clip_mask(num_clips, boxes.shape[1])  # (n, K)
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
            valid = valid_clip_mask(num_clips[start : start + len(chunk)], k)
            bad.append(start + np.flatnonzero((valid & ~finite).any(axis=1)))
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def _shard_value_problems(
    shard: Shard, manifest: Manifest, *, check_values: bool
) -> Iterator[StoreError]:
    """Content problems of a structurally sound shard (boxes, labels, num_clips, NaN)."""
    fix = f"delete {shard.path} and re-run extraction"
    k = manifest.clips_per_video
    bad_n = np.flatnonzero((shard.num_clips < 1) | (shard.num_clips > k))
    if bad_n.size:
        examples = [(shard.video_ids[i], int(shard.num_clips[i])) for i in bad_n[:_MAX_EXAMPLES]]
        yield StoreDataError(
            f"shard {shard.name}: {NUM_CLIPS_FILE} has {bad_n.size} value(s) outside [1, K={k}] "
            f"(e.g. {examples}); {fix}",
            path=shard.path / NUM_CLIPS_FILE,
        )
        return  # box and NaN checks depend on num_clips
    for problem in box_problems(shard.boxes, shard.num_clips, shard.video_ids):
        yield StoreDataError(
            f"shard {shard.name}: {BOXES_FILE}: {problem}; boxes are [{', '.join(BOX_FIELDS)}] "
            f"with coordinates normalised to [0, 1]; {fix}",
            path=shard.path / BOXES_FILE,
        )
    num_classes = manifest.num_classes
    low = shard.labels < -1
    high = shard.labels >= num_classes if num_classes else np.zeros_like(low)
    bad_labels = np.flatnonzero(low | high)
    if bad_labels.size:
        allowed = f"[-1, {num_classes})" if num_classes else ">= -1"
        examples = [(shard.video_ids[i], int(shard.labels[i])) for i in bad_labels[:_MAX_EXAMPLES]]
        yield StoreDataError(
            f"shard {shard.name}: {LABELS_FILE} has {bad_labels.size} label(s) outside {allowed} "
            f"(e.g. {examples}); fix the labels or class_names in {MANIFEST_FILE} and re-extract",
            path=shard.path / LABELS_FILE,
        )
    if check_values:
        bad_rows = _nonfinite_videos(shard.features, shard.num_clips)
        if bad_rows.size:
            examples = [shard.video_ids[i] for i in bad_rows[:_MAX_EXAMPLES]]
            yield StoreDataError(
                f"shard {shard.name}: {FEATURES_FILE} has NaN/Inf in valid clips of {bad_rows.size} "
                f"video(s) (e.g. {examples}); {fix} (if it recurs, run the backbone in float32)",
                path=shard.path / FEATURES_FILE,
            )


# Files whose crc32 matched in this process, keyed by (path, size, mtime, inode, crc32): a store
# opened twice in one process (eval opens train and test, recipes open a store per sweep point)
# is hashed once. A rewritten file has a new mtime or inode and is hashed again.
_VERIFIED: set[tuple[str, int, int, int, int]] = set()


def checksum_problems(shard: Shard, *, cache: bool = False) -> Iterator[StoreError]:
    """Files of a loaded shard whose crc32 differs from shard.json's (``cache``: skip, and
    remember, files this process has already verified unchanged)."""
    for name, info in sorted(shard.files.items()):
        path = shard.path / name
        if not path.is_file():
            continue
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, info["crc32"])
        if cache and key in _VERIFIED:
            continue
        if file_crc32(path) != info["crc32"]:
            yield CorruptShardError(
                f"shard {shard.name}: {name} fails its crc32 check (the file is corrupted); "
                f"run `scalevid store check {shard.path.parent.parent}` to list every damaged "
                f"shard, then delete {shard.path} and re-run the same extract/import command "
                "(it re-extracts only the videos of deleted shards)",
                path=path,
            )
        elif cache:
            _VERIFIED.add(key)


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


def _entry_problems(shard: Shard, manifest: Manifest) -> Iterator[StoreError]:
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
    elif shard_json_crc32(shard.path) != entry["crc32"]:
        yield CorruptShardError(
            f"shard {shard.name}: {SHARD_FILE} fails the crc32 recorded in {MANIFEST_FILE} "
            f"(it was changed or damaged); {fix}",
            path=shard.path / SHARD_FILE,
        )


def _duplicate_problems(shards: list[Shard], root: Path) -> Iterator[StoreError]:
    """Video ids stored in more than one shard (two writers wrote the same videos)."""
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


# A healthy writer publishes a shard (rename) and commits it to manifest.json moments later: a
# reader that sees an unlisted shard reads the manifest again for up to this long before
# calling the shard interrupted.
_SETTLE_SECONDS = 1.0


def _settled_listing(root: Path) -> tuple[Manifest, list[Path]]:
    """manifest.json and the shard folders, read again while some folder is not listed yet
    (a writer between publishing and committing it), so a reader opening a store while an
    import appends to it sees one consistent snapshot."""
    deadline = time.monotonic() + _SETTLE_SECONDS
    while True:
        manifest = read_manifest(root)
        dirs = shard_dirs(root)
        listed = manifest.shards
        if listed is None or all(d.name in listed for d in dirs):
            return manifest, dirs
        if time.monotonic() > deadline:
            return manifest, dirs
        time.sleep(0.01)


def scan_store(
    root: Path,
    *,
    check_values: bool,
    verify_checksums: bool,
    report: Callable[[StoreError], None],
    progress: bool = False,
    cache_checksums: bool = False,
) -> tuple[Manifest, list[Shard]]:
    """Load and validate a store, passing every problem to ``report`` (which may raise).

    Shards that cannot be loaded at all, or that manifest.json does not list, are left out.
    """
    manifest, dirs = _settled_listing(root)
    for problem in _listing_problems(root, manifest, dirs):
        report(problem)
    if manifest.shards is not None:
        dirs = [d for d in dirs if d.name in manifest.shards]
    loaded: list[Shard | StoreError] = []
    for shard_dir in dirs:  # headers and the small arrays: cheap
        try:
            loaded.append(load_shard(shard_dir, manifest))
        except StoreError as e:
            loaded.append(e)
    shards = _check_shards(
        loaded,
        manifest,
        check_values=check_values,
        verify_checksums=verify_checksums,
        cache_checksums=cache_checksums,
        report=report,
        progress=progress,
    )
    for problem in _duplicate_problems(shards, root):
        report(problem)
    return manifest, shards


def _check_shards(
    loaded: list[Shard | StoreError],
    manifest: Manifest,
    *,
    check_values: bool,
    verify_checksums: bool,
    cache_checksums: bool,
    report: Callable[[StoreError], None],
    progress: bool,
) -> list[Shard]:
    """Report each shard's load error, or its entry, checksum and value problems; return the
    shards that loaded."""
    # The checksums run in a thread pool (zlib releases the GIL), overlapping each other and
    # the NaN scan below; problems are still reported shard by shard, in store order.
    pool = ThreadPoolExecutor(max_workers=_HASH_THREADS) if verify_checksums else None
    try:
        sums: list[Future[list[StoreError]] | None] = [
            pool.submit(lambda s: list(checksum_problems(s, cache=cache_checksums)), item)
            if pool is not None and isinstance(item, Shard)
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
    return shards


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
        scan_store(
            root,
            check_values=check_values,
            verify_checksums=verify_checksums,
            report=collect,
            progress=progress,
        )
    except StoreError as e:  # no usable manifest: nothing else can be checked
        collect(e)
    return problems
