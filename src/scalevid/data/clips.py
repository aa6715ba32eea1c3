"""Clip sampling: pure index and box maths, no decoding.

The second half of the pipeline stage "videos -> clips". From a :class:`VideoInfo` (see
`scalevid.data.decode`) and a seeded ``np.random.Generator``, ``sample_train_clips`` /
``sample_test_clips`` (or ``sample_clips`` with a :class:`SamplingConfig`) return
:class:`ClipSpec`\\ s: frame indices + spatial crop + flip + normalised box.
`scalevid.data.read` decodes and crops them.

The normalised box of a clip is ``[flip, t0, y0, x0, t1, y1, x1]`` (float32): ``flip`` is +1 for
an unflipped clip and -1 for a horizontally flipped one; ``t0 = first_index / num_frames`` and
``t1 = (last_index + 1) / num_frames`` are fractions of the video duration; ``y``/``x`` are the
crop's region in the upright original frame, as fractions of its height and width (the region
before any flip).

Short videos (the rule)
-----------------------
A clip spans ``(frames - 1) * stride + 1`` frames. When a video is shorter than that, the clip
starts at frame 0 and indices past the end are clamped to the last frame, i.e. the last frame is
repeated; the clip is never dropped. A single-frame video is therefore a clip of one repeated
frame (pass ``min_frames=2`` to ``sample_and_read`` to reject stills with
:class:`~scalevid.data.decode.VideoTooShortError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scalevid.data.decode import VideoInfo

REFERENCE_CROP_SIZE = 224
REFERENCE_SCALE_RANGE: tuple[float, float] = (256.0, 320.0)


@dataclass(frozen=True, eq=False)
class ClipSpec:
    """One clip to read.

    Attributes:
        indices: (T,) int64 frame indices at the nominal rate, clamped to the video.
        crop: ``(y0, x0, height, width)`` in pixels of the upright original frame.
        flip: mirror horizontally after cropping.
        box: (7,) float32 ``[flip, t0, y0, x0, t1, y1, x1]`` (see the module docstring).
    """

    indices: np.ndarray
    crop: tuple[int, int, int, int]
    flip: bool
    box: np.ndarray


def clip_indices(start: int, *, frames: int, stride: int, num_frames: int) -> np.ndarray:
    """(frames,) int64 indices ``start, start + stride, ...`` clamped to ``num_frames - 1``."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    indices = start + stride * np.arange(frames, dtype=np.int64)
    return np.minimum(indices, num_frames - 1)


def clip_span(*, frames: int, stride: int) -> int:
    """Frames covered by a clip, first to last inclusive."""
    return (frames - 1) * stride + 1


def _box(
    indices: np.ndarray, crop: tuple[int, int, int, int], flip: bool, info: VideoInfo
) -> np.ndarray:
    y0, x0, h, w = crop
    n = info.num_frames
    return np.array(
        [
            -1.0 if flip else 1.0,
            indices[0] / n,
            y0 / info.height,
            x0 / info.width,
            (indices[-1] + 1) / n,
            (y0 + h) / info.height,
            (x0 + w) / info.width,
        ],
        dtype=np.float32,
    )


def _spec(
    indices: np.ndarray, crop: tuple[int, int, int, int], flip: bool, info: VideoInfo
) -> ClipSpec:
    return ClipSpec(indices=indices, crop=crop, flip=flip, box=_box(indices, crop, flip, info))


def scale_range_for(crop_size: int) -> tuple[float, float]:
    """The train short-side scale range [256, 320] * crop_size / 224."""
    lo, hi = REFERENCE_SCALE_RANGE
    return lo * crop_size / REFERENCE_CROP_SIZE, hi * crop_size / REFERENCE_CROP_SIZE


def sample_train_clips(
    info: VideoInfo,
    *,
    rng: np.random.Generator,
    num_clips: int = 16,
    passes: int = 1,
    frames: int = 16,
    stride: int = 4,
    crop_size: int = 224,
    scale_range: tuple[float, float] | None = None,
    flip: bool = True,
) -> list[ClipSpec]:
    """Random clips for training: ``passes * num_clips`` specs.

    Each clip: a uniform random temporal start in ``[0, num_frames - span]`` (0 if the video is
    shorter than the span), a random short-side scale ``s`` in ``scale_range`` (default
    [256, 320] * crop_size / 224) followed by a random ``crop_size`` square crop, and a random
    horizontal flip with probability 1/2 when ``flip``. The crop is expressed in the original
    frame: a square of side ``crop_size * short_side / s`` pixels, which ``read_clips`` resizes
    to ``crop_size``.
    """
    lo, hi = scale_range if scale_range is not None else scale_range_for(crop_size)
    short = min(info.height, info.width)
    max_start = max(info.num_frames - clip_span(frames=frames, stride=stride), 0)
    specs = []
    for _ in range(passes * num_clips):
        start = int(rng.integers(0, max_start + 1))
        indices = clip_indices(start, frames=frames, stride=stride, num_frames=info.num_frames)
        scale = rng.uniform(lo, hi)
        side = int(np.clip(round(crop_size * short / scale), 1, short))
        y0 = int(rng.integers(0, info.height - side + 1))
        x0 = int(rng.integers(0, info.width - side + 1))
        flipped = bool(flip and rng.random() < 0.5)
        specs.append(_spec(indices, (y0, x0, side, side), flipped, info))
    return specs


def sample_test_clips(
    info: VideoInfo,
    *,
    temporal_views: int = 5,
    spatial_views: int = 3,
    frames: int = 16,
    stride: int = 4,
) -> list[ClipSpec]:
    """Deterministic test views: ``temporal_views * spatial_views`` specs, temporal-major.

    Temporal starts are evenly spaced from 0 to ``num_frames - span`` (the centre for one view).
    The short side is resized to the crop size, so each crop is a square of the short side,
    placed evenly along the long side: for 3 views left (top) / centre / right (bottom), for
    1 view the centre. Spec ``t * spatial_views + s`` is temporal view t, spatial view s.
    """
    max_start = max(info.num_frames - clip_span(frames=frames, stride=stride), 0)
    if temporal_views == 1:
        starts = [max_start // 2]
    else:
        starts = np.round(np.linspace(0, max_start, temporal_views)).astype(int).tolist()
    short = min(info.height, info.width)
    if spatial_views == 1:
        offsets = [(max(info.height, info.width) - short) // 2]
    else:
        offsets = np.round(np.linspace(0, max(info.height, info.width) - short, spatial_views))
        offsets = offsets.astype(int).tolist()
    specs = []
    for start in starts:
        indices = clip_indices(start, frames=frames, stride=stride, num_frames=info.num_frames)
        for offset in offsets:
            y0, x0 = (offset, 0) if info.height > info.width else (0, offset)
            specs.append(_spec(indices, (y0, x0, short, short), False, info))
    return specs


def boxes_of(specs: Sequence[ClipSpec]) -> np.ndarray:
    """(K, 7) float32 boxes of the specs."""
    return np.stack([spec.box for spec in specs]).astype(np.float32)


@dataclass(frozen=True)
class ColourJitter:
    """Per-clip colour jitter; each factor is drawn uniformly from ``[1 - a, 1 + a]``.

    Applied to whole clips (one set of factors per clip) in the order brightness, contrast,
    saturation.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4


@dataclass(frozen=True)
class SamplingConfig:
    """Clip sampling settings for one dataset and backbone.

    ``crop_size`` is the backbone's input size; the train scale range follows it.
    """

    frames: int = 16
    stride: int = 4
    crop_size: int = 224
    num_clips: int = 16
    passes: int = 1
    flip: bool = True
    scale_range: tuple[float, float] | None = None
    temporal_views: int = 5
    spatial_views: int = 3
    colour_jitter: ColourJitter | None = None

    @classmethod
    def preset(
        cls, dataset: Literal["default", "ssv2"] = "default", *, crop_size: int = 224
    ) -> SamplingConfig:
        """Defaults; ``"ssv2"`` (direction matters): stride 2, no flip, 2 x 3 test views."""
        if dataset == "ssv2":
            return cls(crop_size=crop_size, stride=2, flip=False, temporal_views=2)
        return cls(crop_size=crop_size)


def sample_clips(
    info: VideoInfo,
    *,
    mode: Literal["train", "test"],
    config: SamplingConfig,
    rng: np.random.Generator | None = None,
) -> list[ClipSpec]:
    """Train (``config.passes * config.num_clips`` random) or test (T x S) clip specs."""
    if mode == "train":
        if rng is None:
            raise ValueError("train sampling needs an rng")
        return sample_train_clips(
            info,
            rng=rng,
            num_clips=config.num_clips,
            passes=config.passes,
            frames=config.frames,
            stride=config.stride,
            crop_size=config.crop_size,
            scale_range=config.scale_range,
            flip=config.flip,
        )
    if mode == "test":
        return sample_test_clips(
            info,
            temporal_views=config.temporal_views,
            spatial_views=config.spatial_views,
            frames=config.frames,
            stride=config.stride,
        )
    raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
