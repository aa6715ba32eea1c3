"""Reading clips: decode the frames of sampled clips, then crop, resize, flip, colour-jitter.

The end of the pipeline stage "videos -> clips": ``read_clips`` turns :class:`ClipSpec`\\ s
(`scalevid.data.clips`) into uint8 clips using `scalevid.data.decode`; ``sample_and_read`` chains
probe -> sample -> read for one video.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from scalevid.data.clips import ClipSpec, ColourJitter, SamplingConfig, boxes_of, sample_clips
from scalevid.data.decode import SEEK_GAP_FRAMES, VideoTooShortError, iter_frames, probe


def apply_colour_jitter(
    clip: np.ndarray, *, jitter: ColourJitter, rng: np.random.Generator
) -> np.ndarray:
    """Jitter a (T, H, W, 3) uint8 RGB clip; returns a new uint8 array of the same shape."""
    b, c, s = (
        rng.uniform(1 - a, 1 + a) for a in (jitter.brightness, jitter.contrast, jitter.saturation)
    )
    x = torch.from_numpy(clip).float()  # (T, H, W, 3)
    weights = torch.tensor([0.299, 0.587, 0.114])
    x = x * b
    mean = (x @ weights).mean()
    x = (x - mean) * c + mean
    gray = (x @ weights).unsqueeze(-1)  # (T, H, W, 1)
    x = (x - gray) * s + gray
    return x.round_().clamp_(0, 255).to(torch.uint8).numpy()


def _crop_resize(frames: list[np.ndarray], spec: ClipSpec, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 clip from (H, W, 3) frames."""
    y0, x0, h, w = spec.crop
    clip = np.stack([frame[y0 : y0 + h, x0 : x0 + w] for frame in frames])  # (T, h, w, 3)
    if (h, w) != (size, size):
        x = torch.from_numpy(clip).permute(0, 3, 1, 2)  # (T, 3, h, w), channels-last in memory
        # uint8 channels-last is the fast CPU path for antialiased bilinear resizing.
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        clip = x.permute(0, 2, 3, 1).contiguous().numpy()
    if spec.flip:
        clip = np.ascontiguousarray(clip[:, :, ::-1])
    return clip


def read_clips(
    path: str | Path,
    specs: Sequence[ClipSpec],
    *,
    size: int,
    colour_jitter: ColourJitter | None = None,
    rng: np.random.Generator | None = None,
    seek_gap: int | None = SEEK_GAP_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and crop the clips of ``specs``.

    Frames are decoded in one ascending pass (see ``iter_frames``) and each clip is cropped and
    resized as soon as its last frame arrives, so only frames of unfinished clips are held.

    Args:
        path: the video file.
        specs: K clips, all with the same number of frames T.
        size: output side in pixels.
        colour_jitter: optional per-clip colour jitter (needs ``rng``).
        rng: generator for the colour jitter.
        seek_gap: see ``iter_frames``.

    Returns:
        clips: (K, T, size, size, 3) uint8 RGB.
        boxes: (K, 7) float32 ``[flip, t0, y0, x0, t1, y1, x1]``.
    """
    if not specs:
        raise ValueError("no clips to read")
    lengths = {len(spec.indices) for spec in specs}
    if len(lengths) != 1:
        raise ValueError(f"all clips must have the same number of frames, got {sorted(lengths)}")
    if colour_jitter is not None and rng is None:
        raise ValueError("colour_jitter needs an rng")
    clips = np.empty((len(specs), lengths.pop(), size, size, 3), dtype=np.uint8)
    pending = sorted(range(len(specs)), key=lambda k: int(specs[k].indices.max()))
    held: dict[int, np.ndarray] = {}
    wanted = np.concatenate([spec.indices for spec in specs])
    for index, frame in iter_frames(path, wanted, seek_gap=seek_gap):
        held[index] = frame
        while pending and int(specs[pending[0]].indices.max()) <= index:
            k = pending.pop(0)
            clips[k] = _crop_resize([held[int(i)] for i in specs[k].indices], specs[k], size)
        if pending:
            oldest = min(int(specs[k].indices.min()) for k in pending)
            held = {i: f for i, f in held.items() if i >= oldest}
    if colour_jitter is not None:
        for k in range(len(clips)):
            clips[k] = apply_colour_jitter(clips[k], jitter=colour_jitter, rng=rng)
    return clips, boxes_of(specs)


def sample_and_read(
    path: str | Path,
    *,
    mode: Literal["train", "test"],
    config: SamplingConfig | None = None,
    rng: np.random.Generator | None = None,
    min_frames: int = 1,
    seek_gap: int | None = SEEK_GAP_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """Probe, sample and read the clips of one video.

    Colour jitter (``config.colour_jitter``) is applied in train mode only.

    Returns:
        clips: (K, T, crop_size, crop_size, 3) uint8 RGB.
        boxes: (K, 7) float32.

    Raises:
        VideoError: a subclass naming the file; :class:`VideoTooShortError` when the video has
            fewer than ``min_frames`` frames.
    """
    config = config if config is not None else SamplingConfig()
    info = probe(path)
    if info.num_frames < min_frames:
        raise VideoTooShortError(path, f"{info.num_frames} frame(s), need at least {min_frames}")
    specs = sample_clips(info, mode=mode, config=config, rng=rng)
    return read_clips(
        path,
        specs,
        size=config.crop_size,
        colour_jitter=config.colour_jitter if mode == "train" else None,
        rng=rng,
        seek_gap=seek_gap,
    )
