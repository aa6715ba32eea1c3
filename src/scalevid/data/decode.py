"""Video decoding: a video file -> its metadata and upright RGB frames.

The first half of the pipeline stage "videos -> clips" (clip sampling is `scalevid.data.clips`,
reading the sampled clips `scalevid.data.read`). ``probe`` reads a video's metadata
(:class:`VideoInfo`); ``iter_frames`` is the one decode entry point: upright RGB frames for given
frame indices, frame-accurate by timestamp.

Conventions
-----------
Frame index ``i`` is the frame displayed at time ``start + (i + 0.5) / fps``: the centre of the
i-th period of the stream's nominal (average) frame rate. For constant frame rate this is
exactly the i-th decoded frame; for variable frame rate it resamples the video onto a regular
grid by presentation timestamp, and it tolerates timestamps rounded to milliseconds.

Rotation metadata (the display matrix) is honoured: frames, heights and widths are upright.

Indices past the end
--------------------
A video with no decodable frame always raises :class:`VideoTooShortError`. When a container
over-estimates its frame count (by up to ``MAX_MISSING_FRAMES``), indices past the last
decodable frame get the last frame. A stream that ends earlier than that, before the end its own
header declares, is a truncated file and raises :class:`VideoDecodeError`.

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

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

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
# One seek costs as much as decoding 24 to 145 frames straight through, for a keyframe every 1 to
# 8 s (benchmarks/decode_cutover.py); 80 sits in the middle of that range, and a wrong choice
# costs only |gap - break-even| frames of decoding per jump.
SEEK_GAP_FRAMES: int = 80

# A stream that ends more than this many frames before the frames asked of it, and before the end
# it declares, is reported as truncated; shorter gaps (a frame count estimated from a rounded
# duration) are clamped to the last frame.
MAX_MISSING_FRAMES = 5


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
    frames = _decoded(container, stream, path)
    first = next(frames, None)
    landed = None if first is None else _frame_time(first, None, start, fps)
    if position == "seek" and (landed is None or landed > targets[0]):
        if landed is None:
            logger.debug(
                "%s: nothing decoded after seeking for %.3fs; decoding from the start",
                path,
                targets[0],
            )
        else:
            logger.debug(
                "%s: seek for %.3fs landed at %.3fs; decoding from the start",
                path,
                targets[0],
                landed,
            )
        yield from _decode_segment(
            container, stream, path, segment, fps=fps, start=start, position="rewind"
        )
        return
    if first is None:
        raise VideoTooShortError(path, "no decodable video frame")
    yield from _match_frames(
        itertools.chain([first], frames), stream, path, segment, targets, fps=fps, start=start
    )


def _frame_time(frame: av.VideoFrame, prev_t: float | None, start: float, fps: float) -> float:
    """Presentation time (s) of ``frame``; one without a timestamp is assumed to come one
    nominal period after the previous frame (at ``start`` when it is the first)."""
    if frame.time is not None:
        return frame.time
    return start if prev_t is None else prev_t + 1 / fps


def _match_frames(
    frames: Iterator[av.VideoFrame],
    stream: av.VideoStream,
    path: Path,
    segment: np.ndarray,
    targets: np.ndarray,
    *,
    fps: float,
    start: float,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for ``segment``: each target time gets the last frame shown at
    or before it; targets past the stream's end get its last frame (see ``_check_stream_end``).
    ``frames`` is not empty."""
    n, j = len(segment), 0
    prev: av.VideoFrame | None = None
    prev_t: float | None = None
    prev_rgb: np.ndarray | None = None
    k = 0
    for frame in frames:
        t = _frame_time(frame, prev_t, start, fps)
        if prev is None:
            k = _rotation_k(frame.rotation)
        while prev is not None and j < n and targets[j] < t:
            if prev_rgb is None:
                prev_rgb = _to_rgb(prev, k)
            yield int(segment[j]), prev_rgb
            j += 1
        if j == n:
            return
        prev, prev_t, prev_rgb = frame, t, None
    _check_stream_end(stream, path, fps, last_time=prev_t, target=targets[-1], index=segment[j])
    last = _to_rgb(prev, k) if prev_rgb is None else prev_rgb
    for index in segment[j:]:
        yield int(index), last


def _check_stream_end(
    stream: av.VideoStream, path: Path, fps: float, *, last_time: float, target: float, index: int
) -> None:
    """The stream's last frame (at ``last_time``) comes before ``target``, the time of frame
    ``index`` onwards: a few frames short is a rounded frame count (warn, repeat the last frame);
    more, before the end the stream declares, is a truncated file."""
    tolerance = MAX_MISSING_FRAMES / fps
    if target - last_time <= tolerance:
        return
    # Frame-threaded decoders drop undecodable packets silently, so truncation shows up as a
    # stream that ends early.
    declared = _declared_end(stream, fps)
    if declared is not None and declared - last_time > tolerance:
        raise VideoDecodeError(
            path, f"stream ends at {last_time:.2f}s but declares {declared:.2f}s (truncated?)"
        )
    logger.warning(
        "%s: stream ends at %.2fs; frames %d.. repeat the last frame", path, last_time, index
    )
