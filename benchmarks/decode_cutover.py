"""Where does seeking per clip beat decoding the whole video? Sets ``video.SEEK_GAP_FRAMES``.

Writes synthetic H.264 videos (moving gradient + noise, Kinetics-like 340x256 at 30 fps) and
measures, on this machine (CPU time of the process by default; ``--wall`` for wall time):

1. Calibration, per keyframe interval (GOP): the cost of decoding one frame straight through and
   of one seek (seek + decode from the keyframe up to a random target). Their ratio is the
   break-even gap: jumping further ahead than this many frames is cheaper by seeking.
2. Validation: time to decode the frames of 16 random train clips of 16 x 4 frames from videos
   of increasing length with ``seek_gap=None`` (whole video, one pass), ``seek_gap=stride``
   (seek before every clip) and the library default.

Usage::

    python benchmarks/decode_cutover.py [--lengths 4 8 16 32 64 128] [--gops 30 60 120 250] [--wall]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from scalevid.data.clips import sample_train_clips
from scalevid.data.decode import SEEK_GAP_FRAMES, iter_frames, probe

FPS = 30
Clock = Callable[[], float]
WIDTH, HEIGHT = 340, 256


def write_video(path: Path, *, seconds: float, gop: int, seed: int = 0) -> None:
    """A 340x256 H.264 video whose content moves, so P/B frames carry real residuals."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(int(seconds * FPS)):
            base = 127 + 60 * np.sin((xx + 3 * i) / 23.0) * np.cos((yy - 2 * i) / 31.0)
            rgb = np.stack([base, np.roll(base, i, axis=1), 255 - base], axis=-1)
            rgb += rng.normal(0, 6, rgb.shape)
            frame = av.VideoFrame.from_ndarray(rgb.clip(0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def per_frame_decode_s(path: Path, *, clock: Clock, repeats: int = 3) -> float:
    """Seconds to decode one frame in a straight pass (no RGB conversion), best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = clock()
            n = sum(1 for _ in container.decode(stream))
            best = min(best, (clock() - t0) / n)
    return best


def seek_cost_s(path: Path, *, clock: Clock, trials: int = 40, seed: int = 0) -> float:
    """Median seconds for a seek plus decoding up to a random target frame (no RGB conversion)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = float(stream.duration * stream.time_base)
        costs = []
        for _ in range(trials):
            target = rng.uniform(0.1 * duration, 0.9 * duration)
            t0 = clock()
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time >= target:
                    break
            costs.append(clock() - t0)
        return float(np.median(costs))


def read_s(
    path: Path,
    indices: np.ndarray,
    *,
    seek_gaps: list[int | None],
    clock: Clock,
    repeats: int = 5,
) -> list[float]:
    """Best-of-``repeats`` seconds per seek gap, the strategies interleaved so that load from
    other processes hits them alike."""
    best = [float("inf")] * len(seek_gaps)
    for _ in range(repeats):
        for k, seek_gap in enumerate(seek_gaps):
            t0 = clock()
            for _index, _frame in iter_frames(path, indices, seek_gap=seek_gap):
                pass
            best[k] = min(best[k], clock() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--gops", type=int, nargs="+", default=[30, 60, 120, 250])
    parser.add_argument("--calibration-seconds", type=float, default=30.0)
    parser.add_argument("--wall", action="store_true", help="time wall clock, not CPU time")
    args = parser.parse_args(argv)
    # CPU seconds of this process (all its threads) by default: robust to other load on a shared
    # machine, and the cost that matters when many extraction workers share the CPUs.
    clock = time.perf_counter if args.wall else time.process_time
    print(f"timing: {'wall' if args.wall else 'CPU'} seconds")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        print(f"1. Break-even gap, {WIDTH}x{HEIGHT} H.264 at {FPS} fps")
        print(f"{'GOP':>5} {'decode ms/frame':>16} {'seek ms':>8} {'break-even frames':>18}")
        for gop in args.gops:
            path = tmp_dir / f"gop{gop}.mp4"
            write_video(path, seconds=args.calibration_seconds, gop=gop)
            frame_s = per_frame_decode_s(path, clock=clock)
            seek_s = seek_cost_s(path, clock=clock)
            print(f"{gop:>5} {1e3 * frame_s:>16.2f} {1e3 * seek_s:>8.1f} {seek_s / frame_s:>18.0f}")

        gop = 2 * FPS
        print(f"\n2. Decoding 16 train clips of 16x4 frames, GOP {gop}, seconds (best of 5)")
        print(
            f"{'length s':>8} {'whole':>8} {'seek/clip':>10} {f'default ({SEEK_GAP_FRAMES})':>14}"
        )
        for seconds in args.lengths:
            path = tmp_dir / f"len{seconds:g}.mp4"
            write_video(path, seconds=seconds, gop=gop)
            specs = sample_train_clips(probe(path), rng=np.random.default_rng(0))
            indices = np.concatenate([spec.indices for spec in specs])
            whole, per_clip, default = read_s(
                path, indices, seek_gaps=[None, 4, SEEK_GAP_FRAMES], clock=clock
            )
            print(f"{seconds:>8g} {whole:>8.3f} {per_clip:>10.3f} {default:>14.3f}")


if __name__ == "__main__":
    main()
