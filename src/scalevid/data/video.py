"""Video decoding and clip sampling.

The pipeline stage "videos -> clips". Three layers, each usable alone:

1. ``probe`` reads a video's metadata (:class:`VideoInfo`); ``iter_frames`` is the one decode
   entry point: upright RGB frames for given frame indices, frame-accurate by timestamp.
2. ``sample_train_clips`` / ``sample_test_clips`` are pure index and box maths: from a
   :class:`VideoInfo` and a seeded ``np.random.Generator`` they return :class:`ClipSpec`\\ s
   (frame indices + spatial crop + flip + normalised box). No decoding.
3. ``read_clips`` decodes, crops, resizes, flips (and optionally colour-jitters) the specs;
   ``sample_and_read`` chains probe -> sample -> read.

Conventions
-----------
Frame index ``i`` is the frame displayed at time ``start + (i + 0.5) / fps``: the centre of the
i-th period of the stream's nominal (average) frame rate. For constant frame rate this is
exactly the i-th decoded frame; for variable frame rate it resamples the video onto a regular
grid by presentation timestamp, and it tolerates timestamps rounded to milliseconds.

Rotation metadata (the display matrix) is honoured: frames, heights and widths are upright.

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
:class:`VideoTooShortError`). A video with no decodable frame always raises
:class:`VideoTooShortError`. The same clamping applies when a container over-estimates its frame
count (by up to ``MAX_MISSING_FRAMES``): indices past the last decodable frame get the last
frame. A stream that ends earlier than that, before the end its own header declares, is a
truncated file and raises :class:`VideoDecodeError`.

Errors
------
Every failure is a :class:`VideoError` subclass whose message starts with the file name:
:class:`VideoMissingError` (no file), :class:`VideoEmptyError` (0 bytes),
:class:`VideoOpenError` (not a media file, or a header FFmpeg cannot parse, e.g. an mp4 cut
before its index), :class:`NoVideoStreamError` (audio only), :class:`VideoTooShortError` (no
decodable frame, or fewer than ``min_frames``), :class:`VideoDecodeError` (corrupt or truncated
stream).

Decoding strategy
-----------------
Frames are decoded in one forward pass; the decoder seeks (to the keyframe before the target)
only when the next wanted frame lies more than ``seek_gap`` frames ahead. Short videos are thus
decoded whole, once, and long videos are read by seeking per clip. The default
:data:`SEEK_GAP_FRAMES` was measured with ``benchmarks/decode_cutover.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".avi",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
)

# Seek when the next wanted frame is more than this many frames ahead; else decode through.
# Measured with benchmarks/decode_cutover.py (340x256 H.264 at 30 fps, CPU time, 2 shared cores):
# one seek costs as much as decoding 24 / 41 / 80 / 145 frames straight through for a keyframe
# every 1 / 2 / 4 / 8.3 s (GOP 30 / 60 / 120 / 250). 80 is the middle of that range; a wrong
# choice costs |gap - break-even| frames of decoding per jump. With 16 train clips of 16 x 4
# frames (GOP 2 s), seeking per clip beats one whole-video pass from ~10-16 s of video; at 64 s
# the whole pass takes 0.61 CPU s, seeking per clip 0.33, this default 0.31; at 128 s 1.05 / 0.38
# / 0.43. Below ~8 s the three cost the same (the clips cover the whole video).
SEEK_GAP_FRAMES: int = 80

# A stream that ends more than this many frames before the frames asked of it, and before the end
# it declares, is reported as truncated; shorter gaps (a frame count estimated from a rounded
# duration) are clamped to the last frame.
MAX_MISSING_FRAMES = 5

REFERENCE_CROP_SIZE = 224
REFERENCE_SCALE_RANGE: tuple[float, float] = (256.0, 320.0)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class VideoError(Exception):
    """A video that cannot be turned into clips. ``path`` names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[VideoError], tuple[Path, str]]:
        # Picklable, so errors cross DataLoader worker processes intact.
        return type(self), (self.path, self.reason)


class VideoMissingError(VideoError):
    """The file does not exist."""


class VideoEmptyError(VideoError):
    """The file has zero bytes."""


class VideoOpenError(VideoError):
    """FFmpeg cannot open the file as a media container (not a video, or a damaged header)."""


class NoVideoStreamError(VideoError):
    """The container has no video stream (e.g. an audio-only file)."""


class VideoTooShortError(VideoError):
    """The video has no decodable frame, or fewer frames than the caller requires."""


class VideoDecodeError(VideoError):
    """Decoding failed after the container was opened (truncated file, corrupt stream)."""


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What the samplers need to know about a video.

    Attributes:
        num_frames: frames at the nominal rate; exact for mp4/mov/avi, estimated from the
            duration for containers without a frame count (mkv, webm).
        fps: nominal frame rate (the stream's average rate), frames per second.
        duration: seconds.
        height, width: upright size in pixels (after applying ``rotation``).
        rotation: counter-clockwise degrees the stored frames are rotated for display
            (0, 90, 180 or -90).
        codec: FFmpeg decoder name, e.g. ``"h264"``.
    """

    num_frames: int
    fps: float
    duration: float
    height: int
    width: int
    rotation: int = 0
    codec: str = ""


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise VideoMissingError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoEmptyError(path, "file is empty (0 bytes)")


def _open(path: Path) -> av.container.InputContainer:
    _check_file(path)
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoOpenError(path, f"cannot open as a video ({e})") from e


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    # Cover art in audio files is a one-picture "video" stream; it is not a video.
    streams = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        raise NoVideoStreamError(path, "no video stream")
    stream = streams[0]
    stream.thread_type = "AUTO"
    return stream


def _nominal_fps(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return 0.0


def _start_time(stream: av.VideoStream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _count_packets(path: Path) -> int:
    with _open(path) as container:
        stream = _video_stream(container, path)
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _declared_end(stream: av.VideoStream, fps: float) -> float | None:
    """End time (s) the video stream itself declares, or None (container-wide durations are not
    used: an audio track may outlast the video)."""
    if stream.duration is not None and stream.time_base is not None:
        return _start_time(stream) + float(stream.duration * stream.time_base)
    if stream.frames > 0:
        return _start_time(stream) + stream.frames / fps
    return None


def _rotation_k(rotation: int) -> int:
    """Quarter turns (counter-clockwise) that make a stored frame upright."""
    return round(rotation / 90) % 4


def _first_frame(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path
) -> av.VideoFrame:
    for frame in _decoded(container, stream, path):
        return frame
    raise VideoTooShortError(path, "no decodable video frame")


def probe(path: str | Path) -> VideoInfo:
    """Read a video's metadata, decoding its first frame (for the rotation).

    Raises:
        VideoError: a subclass naming the file if it cannot be used.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = _nominal_fps(stream)
        if fps <= 0:
            raise VideoOpenError(path, "video stream has no frame rate")
        duration = _duration(container, stream)
        if stream.frames > 0:
            num_frames = stream.frames
        elif duration is not None and duration > 0:
            num_frames = round(duration * fps)
        else:
            num_frames = 0
        first = _first_frame(container, stream, path)
        rotation = int(first.rotation)
        height, width = first.height, first.width
        codec = stream.codec_context.name
    if _rotation_k(rotation) % 2 == 1:
        height, width = width, height
    if num_frames == 0:
        num_frames = _count_packets(path)
    num_frames = max(num_frames, 1)
    return VideoInfo(
        num_frames=num_frames,
        fps=fps,
        duration=duration if duration else num_frames / fps,
        height=height,
        width=width,
        rotation=rotation,
        codec=codec,
    )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decoded(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    """Frames in presentation order; FFmpeg failures become :class:`VideoDecodeError`."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"decoding failed ({e})") from e


def _to_rgb(frame: av.VideoFrame, k: int) -> np.ndarray:
    """(H, W, 3) uint8 upright RGB."""
    array = frame.to_ndarray(format="rgb24")
    if k:
        array = np.ascontiguousarray(np.rot90(array, k))
    return array


def _plan_segments(wanted: np.ndarray, seek_gap: int | None) -> list[np.ndarray]:
    """Split sorted unique indices where the jump is large enough to be worth a seek.

    The first segment is decoded from the start of the stream when its first index is within
    ``seek_gap`` frames of frame 0; every later segment starts with a seek.
    """
    if seek_gap is None or len(wanted) == 0:
        return [wanted]
    cuts = np.flatnonzero(np.diff(wanted) > seek_gap) + 1
    return np.split(wanted, cuts)


def iter_frames(
    path: str | Path,
    indices: Sequence[int] | np.ndarray,
    *,
    seek_gap: int | None = SEEK_GAP_FRAMES,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the frames at ``indices`` (at the nominal frame rate, see the module docstring).

    The one decode entry point. Duplicates are decoded once; indices past the last decodable
    frame get the last frame.

    Args:
        path: the video file.
        indices: frame indices, any order, >= 0.
        seek_gap: seek when the next wanted frame is more than this many frames ahead of the
            decoder; ``None`` never seeks (one pass over the whole video), 0 seeks at every jump.

    Yields:
        ``(index, frame)`` for each unique index in ascending order, ``frame`` an upright RGB
        uint8 array of shape (H, W, 3).

    Raises:
        VideoError: a subclass naming the file.
    """
    path = Path(path)
    wanted = np.unique(np.asarray(indices, dtype=np.int64))
    if wanted.size and wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = _nominal_fps(stream)
        if fps <= 0:
            raise VideoOpenError(path, "video stream has no frame rate")
        start = _start_time(stream)
        for number, segment in enumerate(_plan_segments(wanted, seek_gap)):
            seek = seek_gap is not None and (number > 0 or segment[0] > seek_gap)
            yield from _decode_segment(
                container,
                stream,
                path,
                segment,
                fps=fps,
                start=start,
                position="seek" if seek else "continue",
            )


def _seek(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, seconds: float
) -> None:
    """Seek to the keyframe at or before ``seconds`` (stream time) and flush the decoder."""
    try:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
    except av.FFmpegError as e:
        raise VideoDecodeError(path, f"cannot seek to {seconds:.3f}s ({e})") from e


def _decode_segment(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    path: Path,
    segment: np.ndarray,
    *,
    fps: float,
    start: float,
    position: Literal["continue", "seek", "rewind"],
) -> Iterator[tuple[int, np.ndarray]]:
    """Assign to each index of ``segment`` the frame displayed at the centre of its period.

    ``position`` says where decoding starts: where the decoder is ("continue", only for a fresh
    container), at the keyframe before the segment ("seek"), or at the start ("rewind", the
    fallback when a seek lands past its target or after the end).
    """
    targets = start + (segment + 0.5) / fps  # (N,) seconds
    if position == "seek":
        _seek(container, stream, path, start + segment[0] / fps)
    elif position == "rewind":
        _seek(container, stream, path, start)
    n = len(segment)
    j = 0
    prev: av.VideoFrame | None = None
    prev_t = start
    prev_rgb: np.ndarray | None = None
    k = 0
    for frame in _decoded(container, stream, path):
        # A frame without a timestamp is assumed to last one nominal period.
        t = frame.time if frame.time is not None else prev_t + (1 / fps if prev is not None else 0)
        if prev is None:
            k = _rotation_k(frame.rotation)
            if position == "seek" and t > targets[0]:
                logger.debug(
                    "%s: seek for %.3fs landed at %.3fs; decoding from the start",
                    path,
                    targets[0],
                    t,
                )
                yield from _decode_segment(
                    container, stream, path, segment, fps=fps, start=start, position="rewind"
                )
                return
        while prev is not None and j < n and targets[j] < t:
            if prev_rgb is None:
                prev_rgb = _to_rgb(prev, k)
            yield int(segment[j]), prev_rgb
            j += 1
        if j == n:
            return
        prev, prev_t, prev_rgb = frame, t, None
    if prev is None:
        if position == "seek":
            logger.debug(
                "%s: nothing decoded after seeking for %.3fs; decoding from the start",
                path,
                targets[0],
            )
            yield from _decode_segment(
                container, stream, path, segment, fps=fps, start=start, position="rewind"
            )
            return
        raise VideoTooShortError(path, "no decodable video frame")
    tolerance = MAX_MISSING_FRAMES / fps
    if targets[-1] - prev_t > tolerance:
        # Frame-threaded decoders drop undecodable packets silently, so truncation shows up
        # as a stream that ends early.
        declared = _declared_end(stream, fps)
        if declared is not None and declared - prev_t > tolerance:
            raise VideoDecodeError(
                path, f"stream ends at {prev_t:.2f}s but declares {declared:.2f}s (truncated?)"
            )
        logger.warning(
            "%s: stream ends at %.2fs; frames %d.. repeat the last frame", path, prev_t, segment[j]
        )
    last = _to_rgb(prev, k) if prev_rgb is None else prev_rgb
    for index in segment[j:]:
        yield int(index), last


# --------------------------------------------------------------------------------------------
# Clip sampling (pure)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Reading clips
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColourJitter:
    """Per-clip colour jitter; each factor is drawn uniformly from ``[1 - a, 1 + a]``.

    Applied to whole clips (one set of factors per clip) in the order brightness, contrast,
    saturation.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4


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
