"""From a feature store and a SCALE run to the vectors the probes and `scalevid embed` read.

Shapes (N videos, V views, D feature dim, H SCALE hidden dim):
    raw clip vectors       (N, V, D)      the stored clip features;
    SCALE clip vectors     (N, V, D + H)  [clip feature, SET output], the SET output computed by
                                          the pretrained predictor over all valid clips of the
                                          video, or (N, V, 2H) [contextualised token, SET];
    video embeddings       (N, D + H)     mean over a video's valid clips of [clip feature, SET].

Used by the evaluation protocol and by `scalevid embed` / `scalevid search`; imports nothing
above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from scalevid.eval.clip_sets import SetData
from scalevid.eval.probes import video_vectors
from scalevid.hardware import resolve_device
from scalevid.model import ScaleModel
from scalevid.progress import progress_bar
from scalevid.store import FeatureStore


def open_store(store: FeatureStore | str | Path, *, verify_checksums: bool = True) -> FeatureStore:
    """A store path is opened with its checksums verified (unless opted out); an open store is
    returned as is."""
    if isinstance(store, FeatureStore):
        return store
    return FeatureStore.open(store, verify_checksums=verify_checksums)


def load_model(run: ScaleModel | str | Path | None, device: torch.device) -> ScaleModel | None:
    """The SCALE model of a run folder (or a model as is), on `device` in eval mode; None
    without a run."""
    if run is None:
        return None
    model = run if isinstance(run, ScaleModel) else ScaleModel.from_pretrained(run)
    return model.to(device).eval()


# A store's per-clip vectors up to this size are read once and kept in memory: the probes read
# random clips of random videos every step, and assembling them from the memory map each time
# (fp16 -> fp32, the per-video part appended to every view) was a third of the head probes' time.
RESIDENT_BYTES = 1 << 30


class ClipVectors:
    """A lazy (N, V, F) array of per-clip vectors: clip part (N, V, Fc), an optional second
    per-clip part `more` (N, V, Fm) and an optional per-video part `extra` (N, Fe) appended to
    every view, F = Fc + Fm + Fe. Rows are read on demand; the whole array is read once and kept
    when it is at most `RESIDENT_BYTES` (views made by indexing share it). Either way the values
    and dtype are the same: the clip part's dtype alone, float32 with any other part.

    Supports what the probes index with: `x[rows]` (a lazy view of those videos),
    `x[rows[:, None], cols]` (B, S, F) with cols (B, S), and `np.asarray(x)`.
    """

    def __init__(
        self,
        clips: FeatureStore | np.ndarray,
        *,
        more: np.ndarray | None = None,
        extra: np.ndarray | None = None,
        rows: np.ndarray | None = None,
        resident: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.clips = clips
        self.more = more
        self.extra = extra
        n = len(clips)
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        if extra is not None and extra.shape[0] != n:
            raise ValueError(f"extra has {extra.shape[0]} rows, clips {n}")
        if isinstance(clips, FeatureStore):
            views, width = clips.clips_per_video, clips.dim
        else:
            views, width = clips.shape[1], clips.shape[2]
        if more is not None:
            if more.shape[:2] != (n, views):
                raise ValueError(f"more has shape {more.shape}, clips ({n}, {views}, ...)")
            width += more.shape[2]
        self.shape = (len(self.rows), views, width + (0 if extra is None else extra.shape[1]))
        self.ndim = 3
        # {"all": (N, V, F)} once read; shared by every view of the same vectors
        self._resident = {} if resident is None else resident

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            rows, cols = key
            rows = np.asarray(rows).reshape(-1)
            everything = self._all()
            if everything is not None:  # pick just the views asked for
                return everything[self.rows[rows][:, None], np.asarray(cols)]  # (B, S, F)
            block = self._read(rows)  # (B, V, F)
            return block[np.arange(block.shape[0])[:, None], np.asarray(cols)]  # (B, S, F)
        idx = np.arange(len(self))[key]
        return ClipVectors(
            self.clips,
            more=self.more,
            extra=self.extra,
            rows=self.rows[idx],
            resident=self._resident,
        )

    def preload(self) -> None:
        """Read the vectors that are kept in memory (see `RESIDENT_BYTES`) now, not on first
        use: processes forked afterwards share them."""
        self._all()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._read(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def _all(self) -> np.ndarray | None:
        """Every row of the underlying vectors (N, V, F), read on first use; None when they
        are larger than `RESIDENT_BYTES`."""
        if "all" not in self._resident:
            n, (views, width) = len(self.clips), self.shape[1:]
            itemsize = 4 if self._mixed else self._clip_dtype().itemsize
            if n * views * width * itemsize > RESIDENT_BYTES:
                return None
            self._resident["all"] = self._assemble(np.arange(n))
        return self._resident["all"]

    @property
    def _mixed(self) -> bool:
        """Whether parts are concatenated (then the vectors are float32)."""
        return self.more is not None or self.extra is not None

    def _clip_dtype(self) -> np.dtype:
        return np.dtype(np.float16) if isinstance(self.clips, FeatureStore) else self.clips.dtype

    def _read(self, idx: np.ndarray) -> np.ndarray:
        everything = self._all()
        if everything is not None:
            return everything[self.rows[idx]]
        return self._assemble(self.rows[idx])

    def _assemble(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the underlying vectors (B, V, F), read from the clips and the extra part."""
        if isinstance(self.clips, FeatureStore):
            clips = self.clips.features(rows)  # (B, V, Fc) float16
        else:
            clips = np.asarray(self.clips[rows])
        if not self._mixed:
            return clips
        parts = [clips.astype(np.float32)]
        if self.more is not None:
            parts.append(np.asarray(self.more[rows], dtype=np.float32))
        if self.extra is not None:
            parts.append(
                np.broadcast_to(
                    self.extra[rows][:, None, :].astype(np.float32),
                    (len(rows), clips.shape[1], self.extra.shape[1]),
                )
            )
        return np.concatenate(parts, axis=2)


def scale_outputs(
    store: FeatureStore,
    model: ScaleModel,
    *,
    tokens: bool = False,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The predictor over each video's valid clips, in batches of videos.

    Returns SET outputs (N, H) float32 and, with `tokens`, the contextualised clip tokens
    (N, K, H) float16 (padded rows zero), else None.
    """
    n, k = len(store), store.clips_per_video
    h = model.config.hidden
    sets = np.zeros((n, h), dtype=np.float32)
    toks = np.zeros((n, k, h), dtype=np.float16) if tokens else None
    valid = store.clip_mask()  # (N, K)
    bar = progress_bar(total=n, desc="SCALE embed", unit="video", enabled=progress)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        feats = np.asarray(store.features(slice(start, stop)), dtype=np.float32)  # (B, K, D)
        out = model.embed(feats, store.boxes[start:stop], valid=valid[start:stop])
        sets[start:stop] = out.set.float().cpu().numpy()  # (B, H)
        if toks is not None:
            clip_tokens = out.clips.float().cpu().numpy() * valid[start:stop, :, None]
            toks[start:stop] = clip_tokens.astype(np.float16)  # (B, K, H)
        bar.update(stop - start)
    bar.close()
    return sets, toks


@dataclass
class Representations:
    """What the probes of one store read: raw clip features, and the SCALE vectors with a run."""

    raw: ClipVectors  # (N, K, D)
    scale: ClipVectors | None  # (N, K, D + H) or (N, K, 2H)
    sets: SetData  # clip sets for the set and attentive probes
    num_valid: np.ndarray  # (N,)
    # SCALE_attentive's clip sets: [contextualised token, SET output] per clip (N, K, 2H)
    scale_sets: SetData | None = None

    def preload(self) -> None:
        """Read every part that is kept in memory now (`ClipVectors.preload`)."""
        parts = [self.raw, self.scale, self.sets.features]
        if self.scale_sets is not None:
            parts.append(self.scale_sets.features)
        for part in parts:
            if isinstance(part, ClipVectors):  # a store or an array is shared as it is
                part.preload()

    def subset(self, rows: np.ndarray) -> Representations:
        """The same representations restricted to `rows` (lazy: nothing is read)."""
        return Representations(
            raw=self.raw[rows],
            scale=None if self.scale is None else self.scale[rows],
            sets=self.sets.subset(rows),
            num_valid=self.num_valid[rows],
            scale_sets=None if self.scale_sets is None else self.scale_sets.subset(rows),
        )


def representations(
    store: FeatureStore,
    model: ScaleModel | None,
    *,
    clip_vector: Literal["feature", "token"] = "feature",
    tokens: bool = False,
    batch_size: int = 256,
    progress: bool = False,
) -> Representations:
    """Baseline and SCALE per-clip vectors of a store; memory O(N * H) beside the store's
    memmaps (plus O(N * K * H) float16 for contextualised tokens, computed for
    clip_vector="token" and for `tokens`, which also fills `scale_sets`)."""
    scale = scale_sets = None
    if model is not None:
        sets, toks = scale_outputs(
            store,
            model,
            tokens=clip_vector == "token" or tokens,
            batch_size=batch_size,
            progress=progress,
        )
        scale = ClipVectors(store if clip_vector == "feature" else toks, extra=sets)
        if tokens:
            scale_sets = SetData(
                features=ClipVectors(toks, extra=sets), boxes=store.boxes, num_valid=store.num_clips
            )
    return Representations(
        raw=ClipVectors(store),
        scale=scale,
        sets=SetData.from_store(store),
        num_valid=store.num_clips,
        scale_sets=scale_sets,
    )


def video_embeddings(
    store: FeatureStore,
    model: ScaleModel,
    *,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Per-video SCALE embeddings (N, D + H): mean over valid clips of [clip feature, SET]."""
    model = model.to(resolve_device(device))
    sets, _ = scale_outputs(store, model, batch_size=batch_size, progress=progress)
    x = ClipVectors(store, extra=sets)
    return video_vectors(x, store.num_clips, normalize=False, chunk_size=batch_size)
