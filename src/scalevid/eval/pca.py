"""The raw-feature set and attentive probes' reduced input: clip features projected onto the
first k principal components of the train split's clips (``EvalConfig.input_pca``).

A probe that reads D = 1024 backbone features of a few hundred videos can fit every training
video by its appearance in the input projection's D x H weights long before it finds the few
directions that carry the label; on a 480-video order-of-events store the Transformer did so in
50 steps and never learned the order, and on the demo's stores it sat on a plateau for hundreds
of steps (docs/evaluation.md, "Reduced input"). Projected onto the components that hold most of
the clips' variance, the same probe learns quickly. The projection is fitted without labels on
the train split's clips (at most 2,048 of its videos), as SCALE is pretrained on the train
store, so it reads nothing that selection may not; whether a row reads it or the raw features
is chosen on validation.

Shapes: N videos, K stored clips per video, D feature dim, k components.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from scalevid.eval.clip_sets import SetData


@dataclass(frozen=True)
class Projection:
    """x -> (x - mean) @ components: mean (D,), components (D, k) orthonormal columns in order
    of decreasing variance, variance (k,) the clips' variance along each."""

    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(..., D) -> (..., k) float32."""
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.components


def _chunks(data: SetData, size: int):
    for start in range(0, len(data), size):
        yield data.read(np.arange(start, min(start + size, len(data))))


def fit_pca(
    data: SetData, dims: int, *, max_videos: int | None = 2048, seed: int = 0, chunk: int = 256
) -> Projection:
    """The first `dims` principal components of the valid clips of `data`'s videos (labels are
    not read): the eigenvectors of their covariance, accumulated in float64 chunk by chunk, from
    at most `max_videos` videos (a seeded random subset; None = all). 2,048 videos of 16 clips
    are 32k clips, ample for a 64-dim subspace, and keep the fit to seconds on a large store."""
    d = data.dim
    if not 1 <= dims <= d:
        raise ValueError(f"input_pca {dims} must be in [1, {d}] for {d}-wide clip vectors")
    if max_videos is not None and len(data) > max_videos:
        pick = np.random.default_rng(seed).choice(len(data), size=max_videos, replace=False)
        data = data.subset(np.sort(pick))
    total, outer, count = np.zeros(d), np.zeros((d, d)), 0
    for feats, _, num_valid in _chunks(data, chunk):
        keep = np.arange(feats.shape[1])[None, :] < num_valid[:, None]  # (B, K)
        x = np.asarray(feats, dtype=np.float64)[keep]  # (M, D) the valid clips
        total += x.sum(axis=0)
        outer += x.T @ x
        count += len(x)
    if count <= dims:
        raise ValueError(f"{count} clips cannot fit {dims} principal components (input_pca)")
    mean = total / count
    covariance = outer / count - np.outer(mean, mean)  # (D, D)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    top = np.argsort(values)[::-1][:dims]
    # fix each component's sign (its largest coordinate positive), so a fit is reproducible
    comps = vectors[:, top]
    comps *= np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(dims)])
    return Projection(
        mean=mean.astype(np.float32),
        components=comps.astype(np.float32),
        variance=values[top].clip(min=0.0),
    )


def project(data: SetData, projection: Projection, *, chunk: int = 256) -> SetData:
    """`data` with its clip vectors replaced by their projections, held in memory as an
    (N, K, k) float32 array over the same N videos (every video of `data`'s source, so its
    `rows` and `labels` and any later subset keep their meaning)."""
    source = dataclasses.replace(data, rows=None, labels=None)
    out = np.empty((len(source), source.num_views, projection.dims), dtype=np.float32)
    start = 0
    for feats, _, _ in _chunks(source, chunk):
        out[start : start + len(feats)] = projection(feats)
        start += len(feats)
    return dataclasses.replace(data, features=out)
