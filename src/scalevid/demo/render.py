"""Drawing the synthetic videos: the scene of one video, its frames, and the mp4 encoding.

What a video shows (its label and events) is decided in `scalevid.demo.synthetic`; this module
turns that schedule into pixels.

Nuisances
---------
Random background (flat, linear gradient, smooth value noise, soft stripes), actor shape
(disc, square, diamond, ring), colour (kept apart from the background's brightness), size and
home position; motion amplitude, speed (1 or 2 cycles per ``order`` event) and direction; event
durations and start times (the free frames are split at random between the gaps); 1-3
distractors drifting at constant velocity and reflecting off the frame edges, some in front of
the actor; a smooth camera shake (global integer shift of up to ``camera_jitter`` pixels);
luminance noise of ``noise_std`` grey levels.

The encoder runs single-threaded and without x264's macroblock-tree rate control (which made
run-to-run different streams), so the same config gives byte-identical files. Speed: about 0.3 s
per default video (256 frames of 160 x 128) on one CPU core, 0.18 s of it rendering; about 42 kB
per video.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import av
import numpy as np

from scalevid.demo.synthetic import (
    Codec,
    DatasetConfig,
    Event,
    Split,
    SyntheticDatasetError,
    class_sequences,
    sample_events,
    video_label,
    video_streams,
)

Shape = Literal["disc", "square", "diamond", "ring"]

TMP_SUFFIX = ".tmp.mp4"

_SHAPES: tuple[Shape, ...] = get_args(Shape)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sprite:
    shape: Shape
    colour: np.ndarray  # (3,) float32, 0..255
    radius: float  # pixels


@dataclass(frozen=True)
class _Scene:
    background: np.ndarray  # (H + 2m, W + 2m, 3) float32
    margin: int  # m: the canvas border that camera shifts move into
    actor: _Sprite
    actor_path: np.ndarray  # (T, 3) float32: y, x, radius scale
    distractors: tuple[_Sprite, ...]
    distractor_paths: np.ndarray  # (K, T, 2) float32: y, x
    in_front: np.ndarray  # (K,) bool: drawn over the actor
    camera: np.ndarray  # (T, 2) int64: y, x shift of the view


def _luminance(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) bilinearly interpolated random grid in [0, 1]: soft blobs."""
    gh, gw = (int(v) for v in rng.integers(3, 8, size=2))
    grid = rng.random((gh, gw))
    ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    y0 = np.minimum(ys.astype(np.int64), gh - 2)
    x0 = np.minimum(xs.astype(np.int64), gw - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _background(config: DatasetConfig, rng: np.random.Generator, margin: int) -> np.ndarray:
    h, w = config.height + 2 * margin, config.width + 2 * margin
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    base = rng.uniform(20, 235, size=3)
    other = np.clip(base + rng.uniform(-70, 70, size=3), 0, 255)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    along = yy * np.sin(angle) + xx * np.cos(angle)
    if kind == "flat":
        mix = np.zeros((h, w))
    elif kind == "gradient":
        mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "noise":
        mix = _smooth_noise(rng, h, w)
    else:  # stripes: textured, so that camera shake is visible
        period = rng.uniform(8, 24)
        mix = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * along / period))
    image = base + mix[..., None] * (other - base)
    return image.astype(np.float32)


def _contrasting_colour(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    colour = rng.uniform(0, 255, size=3)
    for _ in range(50):
        if abs(_luminance(colour) - background_luma) > 70:
            break
        colour = rng.uniform(0, 255, size=3)
    else:  # a grey that stands out is always available
        colour = np.full(3, 235.0 if background_luma < 128 else 20.0)
    return colour.astype(np.float32)


def _actor_path(
    config: DatasetConfig, events: Sequence[Event], home: tuple[float, float]
) -> np.ndarray:
    """(T, 3): actor centre y, x in pixels and radius scale for every frame."""
    path = np.empty((config.frames, 3), dtype=np.float64)
    path[:] = (home[0], home[1], 1.0)
    short = min(config.height, config.width)
    for e in events:
        u = (np.arange(e.start, e.stop) - e.start) / (e.stop - e.start)  # phase in [0, 1)
        turn = 2 * np.pi * e.cycles * u
        rows = path[e.start : e.stop]
        if e.kind == "sweep":
            rows[:, 1] += e.direction * e.amplitude * config.width * np.sin(turn)
        elif e.kind == "bounce":
            rows[:, 0] -= e.amplitude * config.height * np.abs(np.sin(turn / 2))
        elif e.kind == "orbit":
            radius = e.amplitude * short
            rows[:, 1] += e.direction * radius * np.sin(turn)
            rows[:, 0] -= radius * (1 - np.cos(turn))
        else:  # pulse
            rows[:, 2] += e.amplitude * np.sin(turn / 2) ** 2
    return path.astype(np.float32)


def _reflect(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions of a point moving freely, folded into [low, high] as if bouncing off walls."""
    span = max(high - low, 1e-6)
    x = np.mod((p - low) / span, 2.0)
    return low + span * (1.0 - np.abs(x - 1.0))


def _camera(config: DatasetConfig, rng: np.random.Generator, margin: int) -> np.ndarray:
    """(T, 2) integer view shifts: a slow sway plus a faster shake."""
    t = np.arange(config.frames)[:, None]
    strength = rng.uniform(0, config.camera_jitter)
    slow = rng.uniform(0.004, 0.02, size=2)
    fast = rng.uniform(0.05, 0.12, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=(2, 2))
    wave = 0.6 * np.sin(2 * np.pi * slow * t + phase[0]) + 0.4 * np.sin(
        2 * np.pi * fast * t + phase[1]
    )
    return np.clip(np.rint(strength * wave), -margin, margin).astype(np.int64)


def _scene(config: DatasetConfig, events: Sequence[Event], rng: np.random.Generator) -> _Scene:
    h, w, frames = config.height, config.width, config.frames
    short = min(h, w)
    margin = math.ceil(config.camera_jitter) + 1
    # the scene's look: the video's own draw, or one draw per dataset seed ("shared")
    look = rng if config.look == "varied" else np.random.default_rng([config.seed, 8101])
    background = _background(config, look, margin)
    luma = _luminance(background.reshape(-1, 3).mean(axis=0))
    actor = _Sprite(
        shape=_SHAPES[int(look.integers(len(_SHAPES)))],
        colour=_contrasting_colour(look, luma),
        radius=float(look.uniform(*config.actor_size) * short),
    )
    home = (float(look.uniform(0.58, 0.70) * h), float(look.uniform(0.40, 0.60) * w))

    count = int(rng.integers(config.distractors[0], config.distractors[1] + 1))
    sprites, paths = [], []
    t = np.arange(frames)
    for _ in range(count):
        radius = float(rng.uniform(0.03, 0.055) * short)
        sprites.append(
            _Sprite(
                shape=_SHAPES[int(rng.integers(len(_SHAPES)))],
                colour=rng.uniform(0, 255, size=3).astype(np.float32),
                radius=radius,
            )
        )
        start = rng.uniform([radius, radius], [h - radius, w - radius])
        heading = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.4, 1.5)  # pixels per frame
        y = _reflect(start[0] + speed * np.sin(heading) * t, radius, h - radius)
        x = _reflect(start[1] + speed * np.cos(heading) * t, radius, w - radius)
        paths.append(np.stack([y, x], axis=-1))
    in_front = rng.random(count) < 0.3
    return _Scene(
        background=background,
        margin=margin,
        actor=actor,
        actor_path=_actor_path(config, events, home),
        distractors=tuple(sprites),
        distractor_paths=np.asarray(paths, dtype=np.float32).reshape(count, frames, 2),
        in_front=in_front,
        camera=_camera(config, rng, margin),
    )


def _coverage(shape: Shape, dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a sprite of radius ``r`` at offsets (dy, dx).

    Coverage is ``clip(0.5 - signed_distance, 0, 1)``: a one-pixel anti-aliased edge. The
    arrays broadcast, e.g. dy (F, H, 1), dx (F, 1, W), r (F, 1, 1) -> (F, H, W).
    """
    if shape == "disc":
        distance = np.hypot(dy, dx) - r
    elif shape == "square":
        distance = np.maximum(np.abs(dy), np.abs(dx)) - 0.85 * r
    elif shape == "diamond":
        distance = (np.abs(dy) + np.abs(dx) - 1.15 * r) / np.float32(np.sqrt(2.0))
    else:  # ring
        distance = np.abs(np.hypot(dy, dx) - 0.7 * r) - 0.3 * r
    return np.clip(0.5 - distance, 0.0, 1.0)


def _draw(
    images: np.ndarray, sprite: _Sprite, cy: np.ndarray, cx: np.ndarray, scale: np.ndarray
) -> None:
    """Blend ``sprite`` into ``images`` (F, H, W, 3) float32 in place, centred at (cy[f], cx[f])
    pixels with radius ``sprite.radius * scale[f]`` in frame f (cy, cx, scale: (F,)).

    Vectorised over frames; only the rows and columns that some frame's sprite can touch are
    computed.
    """
    f, h, w = images.shape[:3]
    r = (sprite.radius * scale).astype(np.float32)
    reach = r * 1.2 + 2  # every shape's extent along an axis (diamond: 1.15 r) plus the edge
    y0 = int(max(np.floor((cy - reach).min()), 0))
    y1 = int(min(np.ceil((cy + reach).max()) + 1, h))
    x0 = int(max(np.floor((cx - reach).min()), 0))
    x1 = int(min(np.ceil((cx + reach).max()) + 1, w))
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[None, :, None] + 0.5 - cy[:, None, None]
    dx = np.arange(x0, x1, dtype=np.float32)[None, None, :] + 0.5 - cx[:, None, None]
    alpha = _coverage(sprite.shape, dy, dx, r[:, None, None])[..., None]  # (F, h', w', 1)
    region = images[:, y0:y1, x0:x1]
    region += alpha * (sprite.colour - region)


# Frames rendered per vectorised step: bounds memory at (chunk, H, W, 3) float32.
_CHUNK_FRAMES = 32


def iter_video_frames(config: DatasetConfig, split: Split, index: int) -> Iterator[np.ndarray]:
    """The frames of video ``index`` of ``split``, each (height, width, 3) uint8 RGB.

    Rendered in vectorised chunks of frames: the camera view is a gather from the background
    canvas, each sprite one broadcast over the chunk.
    """
    schedule_rng, scene_rng, noise_rng = video_streams(config, split, index)
    label = video_label(config, split, index)
    events = sample_events(config, class_sequences(config)[label], schedule_rng)
    scene = _scene(config, events, scene_rng)
    h, w, m = config.height, config.width, scene.margin
    # (2m + 1, 2m + 1, 3, H, W): every camera position's view of the canvas, without copying.
    views = np.lib.stride_tricks.sliding_window_view(scene.background, (h, w), axis=(0, 1))
    ones = np.ones(_CHUNK_FRAMES, dtype=np.float32)
    for t0 in range(0, config.frames, _CHUNK_FRAMES):
        t = np.arange(t0, min(t0 + _CHUNK_FRAMES, config.frames))
        oy, ox = scene.camera[t, 0], scene.camera[t, 1]  # (F,)
        # (F, H, W, 3): each frame's view of the canvas, shifted by the camera.
        images = np.ascontiguousarray(views[m + oy, m + ox].transpose(0, 2, 3, 1))
        # Objects live in the world; the view moves by (oy, ox), so they appear shifted back.
        for front in (False, True):
            if front:
                y, x, s = scene.actor_path[t].T
                _draw(images, scene.actor, y - oy, x - ox, s)
            for k, sprite in enumerate(scene.distractors):
                if bool(scene.in_front[k]) == front:
                    y, x = scene.distractor_paths[k, t].T
                    _draw(images, sprite, y - oy, x - ox, ones[: len(t)])
        if config.noise_std > 0:
            noise = noise_rng.standard_normal((len(t), h, w, 1), dtype=np.float32)
            images += config.noise_std * noise
        images += 0.5  # round, not truncate, in the cast below
        yield from np.clip(images, 0, 255, out=images).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def resolve_codec(codec: Codec) -> str:
    """The encoder ``codec`` names: ``"auto"`` is libx264 when PyAV has it, else mpeg4."""
    if codec == "auto":
        return "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if codec not in av.codecs_available:
        raise SyntheticDatasetError(f"PyAV's FFmpeg has no {codec} encoder")
    return codec


def _encode(frames: Iterator[np.ndarray], path: Path, config: DatasetConfig, codec: str) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=config.fps)
        stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
        # One thread: x264's output depends on its thread count, and workers parallelise anyway.
        stream.codec_context.thread_count = 1
        keyframe_every = str(2 * config.fps)
        if codec == "libx264":
            # Without mbtree: x264's macroblock-tree rate control made run-to-run different
            # streams from identical frames (about 1 video in 4 at 120x160, PyAV 18).
            stream.options = {
                "crf": str(config.crf),
                "preset": "veryfast",
                "g": keyframe_every,
                "x264-params": "mbtree=0",
            }
        else:
            stream.bit_rate = 30 * config.width * config.height
            stream.options = {"g": keyframe_every}
        for t, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(
    path: Path, config: DatasetConfig, split: Split, index: int, *, codec: str | None = None
) -> Path:
    """Render and encode one video to ``path`` atomically (temporary file, then rename)."""
    codec = codec or resolve_codec(config.codec)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)  # a link planted there is removed, never written through
    try:
        _encode(iter_video_frames(config, split, index), tmp, config, codec)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
