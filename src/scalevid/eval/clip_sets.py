"""Clip sets: the videos a set or attentive probe reads, each a set of clip vectors with their
boxes; the training batch stream (random views of random videos) and whole-video batches for
validation and prediction.

Shapes: B videos, K stored clips (views) per video, S sampled clips, D clip vector width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from scalevid.eval.probes import fitted_batch, is_regression, steps_per_epoch
from scalevid.pretext import shuffle_valid_first
from scalevid.store import FeatureStore
from scalevid.store.layout import BOX_DIM


@dataclass
class SetData:
    """Clip sets of a selection of videos, read lazily batch by batch.

    features: a FeatureStore, or an (N, K, D) float array; boxes (N, K, 7) float;
    num_valid (N,) int in [1, K] (the first num_valid[i] rows of video i are real clips).
    rows: (M,) indices of the videos this set holds, None = all N.
    labels: (M,) int class ids >= 0 or (M,) / (M, T) float targets, aligned with `rows`;
    None when unknown (prediction only).
    """

    features: FeatureStore | np.ndarray
    boxes: np.ndarray
    num_valid: np.ndarray
    rows: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        self.num_valid = np.asarray(self.num_valid, dtype=np.int64)
        if self.num_valid.shape != (n,) or len(self.features) != n:
            raise ValueError("features, boxes and num_valid must describe the same N videos")
        self.rows = np.arange(n) if self.rows is None else np.asarray(self.rows, dtype=np.int64)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape[0] != len(self.rows):
                raise ValueError(f"{labels.shape[0]} labels for {len(self.rows)} videos")
            if not is_regression(labels):
                labels = labels.astype(np.int64)
            self.labels = labels

    @classmethod
    def from_store(cls, store: FeatureStore, *, labels: np.ndarray | None = None) -> SetData:
        """All videos of `store` (features stay memory-mapped); labels (N,) if given."""
        return cls(features=store, boxes=store.boxes, num_valid=store.num_clips, labels=labels)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        """F, the width of a clip vector."""
        if isinstance(self.features, FeatureStore):
            return self.features.dim
        return int(self.features.shape[2])

    @property
    def num_views(self) -> int:
        """K, stored views per video."""
        return int(self.boxes.shape[1])

    @property
    def task(self) -> str:
        """classification for integer labels, regression for float labels."""
        if self.labels is None:
            raise ValueError("this SetData has no labels")
        return "regression" if is_regression(self.labels) else "classification"

    def subset(self, idx: np.ndarray) -> SetData:
        """The videos at positions `idx` of this selection (nothing is read)."""
        idx = np.asarray(idx, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return dataclasses.replace(self, rows=self.rows[idx], labels=labels)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions idx (B,) -> features (B, K, D), boxes (B, K, 7), num_valid (B,)."""
        rows = self.rows[np.asarray(idx, dtype=np.int64)]
        if isinstance(self.features, FeatureStore):
            feats = self.features.features(rows)
        else:
            feats = np.asarray(self.features[rows])
        return feats, self.boxes[rows], self.num_valid[rows]


def sample_views(
    num_valid: torch.Tensor, *, stored: int, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random subset of up to `count` valid views per video, without replacement.

    num_valid (B,) -> index (B, S) into the K = `stored` views and valid (B, S) bool, with
    S = min(count, K). A video with fewer than S valid views fills the remaining slots with
    padding (valid False). The order is :func:`scalevid.pretext.shuffle_valid_first` of
    noise (B, K) drawn from `generator`.
    """
    noise = torch.rand(num_valid.shape[0], stored, generator=generator)  # (B, K)
    width = min(count, stored)
    index = shuffle_valid_first(noise, num_valid)[:, :width]  # (B, S)
    valid = torch.arange(width)[None, :] < num_valid[:, None]  # (B, S)
    return index, valid


class ClipSetBatches:
    """The batch stream of one training set: a seeded permutation per pass, full batches only,
    and a random view subset per video; the same stream a probe would see when trained alone."""

    def __init__(self, data: SetData, *, batch_size: int, num_views: int, seed: int) -> None:
        self.data = data
        self.n = len(data)
        self.batch = fitted_batch(batch_size, self.n)
        self.per_pass = steps_per_epoch(self.n, batch_size)
        self.num_views = num_views
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        if data.task == "classification":
            self.targets = torch.as_tensor(data.labels)  # (N,)
        else:
            self.targets = torch.as_tensor(data.labels, dtype=torch.float32).reshape(self.n, -1)

    def next(self, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The batch of `step`: features (B, S, D), boxes (B, S, 7), valid (B, S), targets."""
        b = step % self.per_pass
        if b == 0:
            self.perm = torch.randperm(self.n, generator=self.generator)
        pos = self.perm[b * self.batch : (b + 1) * self.batch]  # (B,)
        feats, boxes, num_valid = self.data.read(pos.numpy())
        index, valid = sample_views(
            torch.as_tensor(num_valid),
            stored=self.data.num_views,
            count=self.num_views,
            generator=self.generator,
        )  # (B, S) each
        x = torch.from_numpy(np.ascontiguousarray(feats)).float()  # (B, K, D)
        x = x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))  # (B, S, D)
        bx = torch.from_numpy(np.ascontiguousarray(boxes)).float()  # (B, K, 7)
        bx = bx.gather(1, index[..., None].expand(-1, -1, bx.shape[-1]))  # (B, S, 7)
        y = self.targets[pos]
        return x.to(device), bx.to(device), valid.to(device), y.to(device)


# Validation batches up to this size are read once and kept (they are scored every few steps);
# larger validation sets are read from the store at every validation.
RESIDENT_VAL_BYTES = 512 << 20


class VideoBatches:
    """Every video of `data` as one set of all its valid views, in batches on `device`:
    iterating yields (features (B, K, D), boxes (B, K, 7), valid (B, K)). Kept in memory after
    the first pass when the whole fits in `RESIDENT_VAL_BYTES`."""

    def __init__(self, data: SetData, *, batch_size: int, device: torch.device) -> None:
        self.data, self.batch_size, self.device = data, batch_size, device
        size = len(data) * data.num_views * (data.dim + BOX_DIM) * 4
        self.keep = size <= RESIDENT_VAL_BYTES
        self.kept: list[tuple[torch.Tensor, ...]] | None = None  # set after a whole pass

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.kept is not None:
            yield from self.kept
            return
        read = []
        for start in range(0, len(self.data), self.batch_size):
            stop = min(start + self.batch_size, len(self.data))
            feats, boxes, num_valid = self.data.read(np.arange(start, stop))
            x = torch.from_numpy(np.ascontiguousarray(feats)).to(self.device).float()  # (B, K, D)
            bx = torch.from_numpy(np.ascontiguousarray(boxes)).to(self.device).float()
            valid = torch.arange(x.shape[1])[None, :] < torch.as_tensor(num_valid)[:, None]
            batch = (x, bx, valid.to(self.device))  # (B, K, D), (B, K, 7), (B, K)
            if self.keep:
                read.append(batch)
            yield batch
        if self.keep:  # only a pass read to its end is kept: a partial one would cut the data
            self.kept = read


def video_batches(data: SetData, *, batch_size: int, device: torch.device) -> VideoBatches:
    """Every video of `data` as one set of all its valid views, in batches (see VideoBatches)."""
    return VideoBatches(data, batch_size=batch_size, device=device)
