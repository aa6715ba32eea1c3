"""FeatureStore: the read-only view of a store that training and evaluation use.

Opening runs every check of `scalevid.store.check` and raises the first problem; then the
features stay memory-mapped shard by shard, and the small per-video arrays sit in RAM.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalevid.store.check import scan_store, valid_clip_mask
from scalevid.store.errors import StoreError
from scalevid.store.layout import BOX_DIM, FEATURES_FILE
from scalevid.store.manifest import Manifest
from scalevid.store.shards import Shard

logger = logging.getLogger(__name__)

# What `FeatureStore.features` accepts: one video, a slice, indices, a bool mask, or all.
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

    def __init__(self, path: Path, manifest: Manifest, shards: list[Shard]) -> None:
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
            or [np.zeros((0, k, BOX_DIM), np.float32)]
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
        manifest, shards = scan_store(
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
        return valid_clip_mask(self.num_clips, self.clips_per_video)

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
            np.load(d / FEATURES_FILE, mmap_mode="r", allow_pickle=False) for d in self._shard_dirs
        ]
