"""Labelled synthetic videos whose label needs the whole video.

The data for the end-to-end demo and for benchmarks: small mp4 videos in which one *actor*
object performs a few motion events, and the label is a fact about the whole sequence of
events that no single backbone clip can see.

Tasks (``DatasetConfig.task``)
------------------------------
``order`` (default)
    The actor performs two different motions, one after the other; the class is the ordered
    pair, e.g. ``"bounce-then-orbit"``. With the default three motions (``sweep``: left-right
    swing, ``bounce``: vertical hops, ``orbit``: a loop around a circle) there are 6 classes.
``count``
    The actor performs the same motion (``count_motion``, default ``bounce``, one hop per event)
    1, 2 or 3 times (``counts``); the class is the number, e.g. ``"two bounces"``.
``permutation``
    The actor performs every one of ``motions`` once, in one of the ``n!`` orders; the class is
    the order, e.g. ``"pulse-sweep-bounce"`` (6 classes for three motions). Every class shows the
    same motions, so a bag of clips (mean pooling) carries nothing about the label: only the
    order does. This is the demo's task.

Why one clip cannot decide the label
------------------------------------
Consecutive events are at least ``min_gap`` frames apart (default 64 >= the 61-frame span of a
16 x 4 backbone clip), so a window of up to ``min_gap`` frames overlaps at most one event:

* ``order``: a clip sees one motion, or none. Seeing ``bounce`` is consistent with every class
  that contains a bounce (4 of 6 classes). Even knowing where the clip lies in the video (as
  SCALE's boxes do), the *other* motion is unseen, so with three or more motions at least two
  classes remain. Averaging clip features over the video can recover the set {A, B} but
  carries no order, so mean pooling is at chance between A-then-B and B-then-A.
* ``count``: a clip sees at most one event, consistent with every count.
* ``permutation``: a clip sees one motion, consistent with the ``(n - 1)!`` orders that hold it
  in any place; with its position known, the first or last motion can be told, the rest not.

The full schedule determines the label (:func:`label_from_events`). :func:`video_schedule`
gives the ground truth of any video without rendering it, :func:`visible_events` the events a
frame window overlaps, and :func:`consistent_labels` the classes such a view is consistent with.

Every clip still has motion: distractor objects drift across the frame all the time, and events
last 40-56 frames (``order``) or 20-32 frames (``count``).

Nuisances
---------
Random background (flat, linear gradient, smooth value noise, soft stripes), actor shape
(disc, square, diamond, ring), colour (kept apart from the background's brightness), size and
home position; motion amplitude, speed (1 or 2 cycles per ``order`` event) and direction; event
durations and start times (the free frames are split at random between the gaps); 1-3
distractors drifting at constant velocity and reflecting off the frame edges, some in front of
the actor; a smooth camera shake (global integer shift of up to ``camera_jitter`` pixels);
luminance noise of ``noise_std`` grey levels.

Determinism
-----------
Video ``i`` of a split depends only on ``(config, split, i)``: its label comes from a
permutation of the class indices seeded by ``(seed, split, i // num_classes)`` (so every block of
``num_classes`` consecutive videos has each class once: balanced splits), and its content from
``(seed, split, i)``. The encoder runs single-threaded and without x264's macroblock-tree rate
control (which made run-to-run different streams), so the same config gives byte-identical files,
whatever ``workers`` is.

Folder layout and caching
-------------------------
``make_dataset(out, config)`` writes::

    out/videos/<split>/<split>_<i:05d>.mp4
    out/train.csv, out/val.csv, out/test.csv    "videos/train/train_00000.mp4 3" per line
    out/classes.txt                             class names, line k = label k
    out/dataset.json                            config, codec, classes, counts

Each video is encoded to a hidden temporary file and renamed into place when complete, so an
interrupted run never leaves a half video under a final name; leftover temporary files are
deleted by the next run. Re-running with the same config renders only the missing videos and,
when nothing is missing, writes nothing. A folder made with a *different* config (or a different
generator version or resolved codec) is refused with :class:`SyntheticDatasetError`: use a new
folder. One writer per folder at a time.

:func:`quick_config` is a shorter preset for 8 x 4 clips. Speed: about 0.3 s per default video
(256 frames of 160 x 128) on one CPU core, 0.18 s of it rendering; about 42 kB per video.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import av
import numpy as np

from scalevid.progress import progress_bar

logger = logging.getLogger(__name__)

Task = Literal["order", "count", "permutation"]
Motion = Literal["sweep", "bounce", "orbit", "pulse"]
Background = Literal["flat", "gradient", "noise", "stripes"]
Shape = Literal["disc", "square", "diamond", "ring"]
Codec = Literal["auto", "libx264", "mpeg4"]
Split = Literal["train", "val", "test"]

SPLITS: tuple[Split, ...] = ("train", "val", "test")
GENERATOR_VERSION = 2  # 2: vectorised renderer (sprite edges no longer cut at a box)
INFO_FILE = "dataset.json"
CLASSES_FILE = "classes.txt"
VIDEOS_DIR = "videos"
TMP_SUFFIX = ".tmp.mp4"

DEFAULT_EVENT_FRAMES: dict[Task, tuple[int, int]] = {
    "order": (40, 56),
    "count": (20, 32),
    "permutation": (40, 56),
}

# Amplitude ranges, as fractions: of the width (sweep: swing), of the height (bounce: hop
# height), of the shorter side (orbit: radius), of the radius (pulse: extra growth).
_AMPLITUDE: dict[Motion, tuple[float, float]] = {
    "sweep": (0.18, 0.28),
    "bounce": (0.22, 0.32),
    "orbit": (0.10, 0.15),
    "pulse": (0.6, 1.0),
}
_MOTION_TEXT: dict[Motion, str] = {
    "sweep": "swings left and right",
    "bounce": "bounces up and down",
    "orbit": "moves around a circle",
    "pulse": "grows and shrinks",
}
_EVENT_TEXT: dict[Motion, str] = {
    "sweep": "swings left and right",
    "bounce": "hops",
    "orbit": "loops around a circle",
    "pulse": "grows and shrinks",
}
_SHAPES: tuple[Shape, ...] = get_args(Shape)
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Seed-sequence tags: label permutations and video content draw from disjoint streams.
_TAG_LABELS = 1
_TAG_VIDEO = 2


class SyntheticDatasetError(Exception):
    """An output folder that cannot take this dataset (e.g. made with another config)."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetConfig:
    """What to generate. Everything that changes a video's pixels or label lives here.

    Attributes:
        task: ``"order"`` (ordered pairs of distinct ``motions``), ``"count"`` (how many
            times ``count_motion`` happens, one class per entry of ``counts``) or
            ``"permutation"`` (the order in which all ``motions`` happen).
        motions: the motions of the ``order`` and ``permutation`` tasks; ``n`` motions give
            ``n * (n - 1)`` (order) or ``n!`` (permutation) classes.
        counts: the event counts of the ``count`` task.
        count_motion: the motion repeated in the ``count`` task (one cycle per event).
        train, val, test: videos per split.
        frames: frames per video.
        fps: frames per second.
        height, width: frame size in pixels (even numbers, for yuv420p).
        event_frames: (min, max) frames of one event, inclusive; ``None`` picks
            ``DEFAULT_EVENT_FRAMES[task]``.
        min_gap: fewest frames between the end of one event and the start of the next. Keep it
            at least the span of a backbone clip ((frames - 1) * stride + 1) so that no clip
            sees two events.
        edge_frames: fewest frames before the first and after the last event.
        distractors: (min, max) distractor objects per video, inclusive.
        actor_size: (min, max) actor radius as a fraction of the shorter side.
        cycles: (min, max) full periods of the motion per ``order`` / ``permutation`` event
            (``count`` events have one).
        camera_jitter: largest camera shift in pixels (each video draws its own in [0, this]).
        noise_std: standard deviation of the per-pixel luminance noise, in grey levels.
        backgrounds: the background kinds to draw from.
        seed: the dataset seed (>= 0).
        codec: ``"libx264"``, ``"mpeg4"``, or ``"auto"`` (libx264 when PyAV has it).
        crf: libx264 constant rate factor (lower = better quality, bigger files).
    """

    task: Task = "order"
    motions: tuple[Motion, ...] = ("sweep", "bounce", "orbit")
    counts: tuple[int, ...] = (1, 2, 3)
    count_motion: Motion = "bounce"
    train: int = 240
    val: int = 60
    test: int = 60
    frames: int = 256
    fps: int = 25
    height: int = 128
    width: int = 160
    event_frames: tuple[int, int] | None = None
    min_gap: int = 64
    edge_frames: int = 8
    distractors: tuple[int, int] = (1, 3)
    actor_size: tuple[float, float] = (0.07, 0.10)
    cycles: tuple[int, int] = (1, 2)
    camera_jitter: float = 3.0
    noise_std: float = 1.0
    backgrounds: tuple[Background, ...] = ("flat", "gradient", "noise", "stripes")
    seed: int = 0
    codec: Codec = "auto"
    crf: int = 23

    def __post_init__(self) -> None:
        if self.task not in get_args(Task):
            raise ValueError(f"task must be one of {get_args(Task)}, got {self.task!r}")
        for motion in (*self.motions, self.count_motion):
            if motion not in _AMPLITUDE:
                raise ValueError(f"unknown motion {motion!r}; choose from {get_args(Motion)}")
        if self.task != "count" and len(set(self.motions)) != len(self.motions):
            raise ValueError(f"motions must be distinct, got {self.motions}")
        if self.task != "count" and len(self.motions) < 2:
            raise ValueError(f"the {self.task} task needs at least two motions")
        if self.task == "permutation" and len(self.motions) > 5:
            raise ValueError(f"permutation of {len(self.motions)} motions: at most 5 (120 classes)")
        if self.task == "count" and (
            not self.counts
            or len(set(self.counts)) != len(self.counts)
            or min(self.counts) < 1
            or max(self.counts) >= len(_NUMBER_WORDS)
        ):
            raise ValueError(f"counts must be distinct integers in 1..9, got {self.counts}")
        for name in ("train", "val", "test", "min_gap", "edge_frames", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.height < 32 or self.width < 32 or self.height % 2 or self.width % 2:
            raise ValueError(
                f"height and width must be even and >= 32, got {self.height}x{self.width}"
            )
        low, high = self.event_range
        if not 2 <= low <= high:
            raise ValueError(f"event_frames must satisfy 2 <= min <= max, got {self.event_range}")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            raise ValueError(
                f"distractors must be (min, max) with 0 <= min <= max, got {self.distractors}"
            )
        if not 0 < self.actor_size[0] <= self.actor_size[1] <= 0.4:
            raise ValueError(
                f"actor_size must be (min, max) with 0 < min <= max <= 0.4, got {self.actor_size}"
            )
        if not 1 <= self.cycles[0] <= self.cycles[1]:
            raise ValueError(f"cycles must be (min, max) with 1 <= min <= max, got {self.cycles}")
        if self.camera_jitter < 0 or self.noise_std < 0:
            raise ValueError("camera_jitter and noise_std must be >= 0")
        if not self.backgrounds or any(b not in get_args(Background) for b in self.backgrounds):
            raise ValueError(f"backgrounds must be a non-empty subset of {get_args(Background)}")
        if self.codec not in get_args(Codec):
            raise ValueError(f"codec must be one of {get_args(Codec)}, got {self.codec!r}")
        events = self.max_events
        needed = events * high + (events - 1) * self.min_gap + 2 * self.edge_frames
        if needed > self.frames:
            raise ValueError(
                f"{self.frames} frames cannot hold {events} events of up to {high} frames with "
                f"gaps of {self.min_gap} and edges of {self.edge_frames} ({needed} frames needed)"
            )

    @property
    def event_range(self) -> tuple[int, int]:
        """(min, max) frames of one event, inclusive, after applying the task default."""
        low, high = self.event_frames or DEFAULT_EVENT_FRAMES[self.task]
        return int(low), int(high)

    @property
    def max_events(self) -> int:
        """The most events a video of this config has."""
        if self.task == "permutation":
            return len(self.motions)
        return 2 if self.task == "order" else max(self.counts)

    @property
    def num_classes(self) -> int:
        return len(class_sequences(self))

    def split_size(self, split: Split) -> int:
        """Videos in ``split``."""
        return int(getattr(self, split))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetConfig:
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DatasetConfig fields: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def quick_config(task: Task = "order", **overrides: Any) -> DatasetConfig:
    """A small, short dataset for quick demos with 8 x 4 clips (a 29-frame span).

    144 frames (5.8 s), events 1-1.3 s (``order``) or 0.5-0.8 s (``count``) at least 32 frames
    apart; ``permutation``: 176 frames holding three such events. 60 / 24 / 24 videos.
    ``overrides`` replace any field.
    """
    events = {"order": (24, 32), "count": (12, 20), "permutation": (24, 32)}[task]
    frames = 176 if task == "permutation" else 144
    preset = dict(
        task=task, frames=frames, event_frames=events, min_gap=32, train=60, val=24, test=24
    )
    return DatasetConfig(**{**preset, **overrides})


# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------


def class_sequences(config: DatasetConfig) -> list[tuple[Motion, ...]]:
    """The motion sequence that defines each class; index = label."""
    if config.task == "order":
        return [(a, b) for a in config.motions for b in config.motions if a != b]
    if config.task == "permutation":
        return list(itertools.permutations(config.motions))
    return [(config.count_motion,) * n for n in config.counts]


def describe_classes(config: DatasetConfig) -> list[str]:
    """Short class names, index = label: ``"sweep-then-bounce"`` or ``"two bounces"``."""
    if config.task == "order":
        return [f"{a}-then-{b}" for a, b in class_sequences(config)]
    if config.task == "permutation":
        return ["-".join(sequence) for sequence in class_sequences(config)]
    word = _NUMBER_WORDS
    return [f"{word[n]} {config.count_motion}{'' if n == 1 else 's'}" for n in config.counts]


def class_descriptions(config: DatasetConfig) -> list[str]:
    """One sentence per class, index = label."""
    if config.task == "order":
        return [
            f"The object first {_MOTION_TEXT[a]}, later {_MOTION_TEXT[b]}."
            for a, b in class_sequences(config)
        ]
    if config.task == "permutation":
        return [
            "The object " + ", then ".join(_MOTION_TEXT[m] for m in sequence) + "."
            for sequence in class_sequences(config)
        ]
    verb = _EVENT_TEXT[config.count_motion]
    return [
        f"The object {verb} once." if n == 1 else f"The object {verb} {n} times, far apart."
        for n in config.counts
    ]


# --------------------------------------------------------------------------------------------
# Ground truth: labels and event schedules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One motion of the actor, over frames ``[start, stop)``.

    Attributes:
        kind: the motion.
        start, stop: first frame and one past the last frame.
        cycles: full periods of the motion within the event (hops, swings, loops, pulses).
        amplitude: size of the motion as a fraction (see ``_AMPLITUDE``).
        direction: +1 or -1 (sweep: first towards the right or left; orbit: turning sense).
    """

    kind: Motion
    start: int
    stop: int
    cycles: int
    amplitude: float
    direction: int

    def overlaps(self, start: int, stop: int) -> bool:
        """Whether the event shares a frame with the window ``[start, stop)``."""
        return self.start < stop and start < self.stop


@dataclass(frozen=True)
class Schedule:
    """The ground truth of one video: its label and its events in time order."""

    split: Split
    index: int
    label: int
    events: tuple[Event, ...]

    @property
    def video_id(self) -> str:
        return video_id(self.split, self.index)

    @property
    def kinds(self) -> tuple[Motion, ...]:
        return tuple(e.kind for e in self.events)


def video_id(split: Split, index: int) -> str:
    """The file stem of video ``index`` of ``split``: ``"train_00042"``."""
    return f"{split}_{index:05d}"


def _split_number(split: Split) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def video_label(config: DatasetConfig, split: Split, index: int) -> int:
    """The label of video ``index``: a seeded permutation per block of ``num_classes`` videos."""
    n = config.num_classes
    block, position = divmod(index, n)
    rng = np.random.default_rng([config.seed, _TAG_LABELS, _split_number(split), block])
    return int(rng.permutation(n)[position])


def _video_streams(config: DatasetConfig, split: Split, index: int) -> list[np.random.Generator]:
    """Independent generators for (schedule, scene, pixel noise) of one video."""
    seq = np.random.SeedSequence([config.seed, _TAG_VIDEO, _split_number(split), index])
    return [np.random.default_rng(child) for child in seq.spawn(3)]


def _sample_events(
    config: DatasetConfig, kinds: Sequence[Motion], rng: np.random.Generator
) -> tuple[Event, ...]:
    low, high = config.event_range
    durations = rng.integers(low, high + 1, size=len(kinds))
    slack = (
        config.frames
        - 2 * config.edge_frames
        - int(durations.sum())
        - (len(kinds) - 1) * config.min_gap
    )
    # Split the free frames at random between the lead-in, the gaps and the tail.
    cuts = np.sort(rng.integers(0, slack + 1, size=len(kinds)))
    parts = np.diff(np.concatenate([[0], cuts, [slack]]))
    events = []
    t = config.edge_frames + int(parts[0])
    for k, kind in enumerate(kinds):
        cycles = (
            1
            if config.task == "count"
            else int(rng.integers(config.cycles[0], config.cycles[1] + 1))
        )
        amplitude = float(rng.uniform(*_AMPLITUDE[kind]))
        direction = int(rng.choice([-1, 1]))
        stop = t + int(durations[k])
        events.append(Event(kind, t, stop, cycles, amplitude, direction))
        t = stop + config.min_gap + int(parts[k + 1])
    return tuple(events)


def video_schedule(config: DatasetConfig, split: Split, index: int) -> Schedule:
    """The label and event schedule of video ``index`` of ``split`` (no rendering)."""
    label = video_label(config, split, index)
    rng = _video_streams(config, split, index)[0]
    events = _sample_events(config, class_sequences(config)[label], rng)
    return Schedule(split=split, index=index, label=label, events=events)


def label_from_events(config: DatasetConfig, events: Sequence[Event]) -> int:
    """The label that a full event schedule implies. ``ValueError`` if it matches no class."""
    kinds = tuple(e.kind for e in sorted(events, key=lambda e: e.start))
    try:
        return class_sequences(config).index(kinds)
    except ValueError:
        raise ValueError(f"no class has the event sequence {kinds}") from None


def visible_events(events: Sequence[Event], start: int, stop: int) -> list[Event]:
    """The events that overlap the frame window ``[start, stop)`` (even partly), in time order."""
    return sorted((e for e in events if e.overlaps(start, stop)), key=lambda e: e.start)


def consistent_labels(
    config: DatasetConfig, observed: Sequence[Motion], *, whole_video: bool = False
) -> list[int]:
    """Labels whose event sequence could show ``observed``.

    ``observed`` is what a window of the video shows, in time order, e.g. ``[e.kind for e in
    visible_events(...)]``. A window shows a contiguous part of the sequence, so a window that
    sees nothing is consistent with every class; ``whole_video=True`` means ``observed`` is the
    full sequence, which must then match exactly.
    """
    observed = tuple(observed)
    if whole_video:
        return [k for k, sequence in enumerate(class_sequences(config)) if sequence == observed]
    n = len(observed)
    return [
        label
        for label, sequence in enumerate(class_sequences(config))
        if any(sequence[k : k + n] == observed for k in range(len(sequence) - n + 1))
    ]


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
    background = _background(config, rng, margin)
    luma = _luminance(background.reshape(-1, 3).mean(axis=0))
    actor = _Sprite(
        shape=_SHAPES[int(rng.integers(len(_SHAPES)))],
        colour=_contrasting_colour(rng, luma),
        radius=float(rng.uniform(*config.actor_size) * short),
    )
    home = (float(rng.uniform(0.58, 0.70) * h), float(rng.uniform(0.40, 0.60) * w))

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
    schedule_rng, scene_rng, noise_rng = _video_streams(config, split, index)
    label = video_label(config, split, index)
    events = _sample_events(config, class_sequences(config)[label], schedule_rng)
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


def render_video(config: DatasetConfig, split: Split, index: int) -> np.ndarray:
    """All frames of video ``index`` of ``split``: (frames, height, width, 3) uint8 RGB."""
    return np.stack(list(iter_video_frames(config, split, index)))


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
    try:
        _encode(iter_video_frames(config, split, index), tmp, config, codec)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# Dataset folders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`make_dataset` produced.

    Attributes:
        root: the dataset folder.
        config: the config it was made with.
        classes: class names, index = label.
        counts: videos per split.
        label_counts: per split, videos per label.
        codec: the encoder used.
        written: videos rendered by this call.
        skipped: videos that were already complete.
        seconds: wall time of this call.
    """

    root: Path
    config: DatasetConfig
    classes: list[str]
    counts: dict[str, int]
    label_counts: dict[str, list[int]]
    codec: str
    written: int
    skipped: int
    seconds: float

    def list_file(self, split: Split) -> Path:
        """The ``path label`` list of ``split``."""
        return self.root / f"{split}.csv"


def video_path(split: Split, index: int) -> str:
    """Path of a video relative to the dataset folder (``/`` separated)."""
    return f"{VIDEOS_DIR}/{split}/{video_id(split, index)}.mp4"


def _header(config: DatasetConfig, codec: str) -> dict[str, Any]:
    return {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "codec": codec,
        "config": config.to_dict(),
    }


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def _check_same(stored: dict[str, Any], header: dict[str, Any], where: Path) -> None:
    differences = [
        f"{key}: {stored.get(key)!r} here, {header[key]!r} asked"
        for key in ("generator", "version", "codec")
        if stored.get(key) != header[key]
    ]
    old = stored.get("config") or {}
    new = header["config"]
    differences += [
        f"config.{key}: {old.get(key)!r} here, {new.get(key)!r} asked"
        for key in sorted(set(old) | set(new))
        if _canonical(old.get(key)) != _canonical(new.get(key))
    ]
    if differences:
        raise SyntheticDatasetError(
            f"{where} describes a different synthetic dataset ("
            + "; ".join(differences)
            + "); choose another folder or delete this one"
        )


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless ``path`` already holds it; True when written."""
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _read_info(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SyntheticDatasetError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise SyntheticDatasetError(f"{path}: expected a JSON object")
    return data


def _render_job(config: DatasetConfig, split: Split, index: int, root: str, codec: str) -> int:
    write_video(Path(root) / video_path(split, index), config, split, index, codec=codec)
    return index


def _run_jobs(
    jobs: list[tuple[Split, int]],
    out: Path,
    config: DatasetConfig,
    codec: str,
    *,
    progress: bool,
    workers: int,
) -> None:
    bar = progress_bar(total=len(jobs), enabled=progress, desc="synthetic videos", unit="video")
    try:
        if workers <= 1 or len(jobs) <= 1:
            for split, index in jobs:
                _render_job(config, split, index, str(out), codec)
                bar.update(1)
            return
        # spawn: a fork of a process that already runs torch threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_render_job, config, split, index, str(out), codec)
                for split, index in jobs
            ]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()


def _open_folder(out: Path, header: dict[str, Any]) -> None:
    """Start a new dataset folder (an incomplete info file), or check that `out` holds this
    dataset already."""
    info_path = out / INFO_FILE
    stored = _read_info(info_path)
    if stored is not None:
        _check_same(stored, header, info_path)
        return
    if out.exists() and any(out.iterdir()):
        raise SyntheticDatasetError(
            f"{out} is not empty and has no {INFO_FILE}; choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_if_changed(info_path, json.dumps({**header, "complete": False}, indent=2) + "\n")


def _pending_jobs(out: Path, config: DatasetConfig) -> tuple[list[tuple[Split, int]], int]:
    """The (split, index) of every video not yet written, and the number of videos in all;
    removes the temporary files of renders that were interrupted."""
    jobs: list[tuple[Split, int]] = []
    total = 0
    for split in SPLITS:
        folder = out / VIDEOS_DIR / split
        folder.mkdir(parents=True, exist_ok=True)
        stale = sorted(folder.glob(f".*{TMP_SUFFIX}"))
        for tmp in stale:
            tmp.unlink(missing_ok=True)
        if stale:
            logger.info("removed %d unfinished video(s) in %s", len(stale), folder)
        size = config.split_size(split)
        total += size
        jobs += [(split, i) for i in range(size) if not (out / video_path(split, i)).is_file()]
    return jobs, total


def _write_lists(
    out: Path, config: DatasetConfig, header: dict[str, Any]
) -> tuple[list[str], dict[str, int], dict[str, list[int]]]:
    """The `path label` lists, the class names and the completed info file; returns the class
    names, the videos per split and the videos per class per split."""
    classes = describe_classes(config)
    descriptions = class_descriptions(config)
    sequences = class_sequences(config)
    counts: dict[str, int] = {}
    label_counts: dict[str, list[int]] = {}
    for split in SPLITS:
        labels = [video_label(config, split, i) for i in range(config.split_size(split))]
        lines = "".join(f"{video_path(split, i)} {y}\n" for i, y in enumerate(labels))
        _write_if_changed(out / f"{split}.csv", lines)
        counts[split] = len(labels)
        label_counts[split] = np.bincount(labels, minlength=len(classes)).tolist()
    _write_if_changed(out / CLASSES_FILE, "".join(f"{name}\n" for name in classes))
    info = {
        **header,
        "complete": True,
        "classes": [
            {"label": k, "name": name, "description": text, "events": list(sequence)}
            for k, (name, text, sequence) in enumerate(
                zip(classes, descriptions, sequences, strict=True)
            )
        ],
        "counts": counts,
        "label_counts": label_counts,
        "lists": {split: f"{split}.csv" for split in SPLITS},
    }
    _write_if_changed(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return classes, counts, label_counts


def make_dataset(
    out: Path, config: DatasetConfig, *, progress: bool = True, workers: int = 1
) -> DatasetInfo:
    """Generate (or complete) the synthetic dataset ``config`` in folder ``out``.

    See the module docstring for the layout. Videos already present are kept; a folder made
    with another config raises :class:`SyntheticDatasetError`, as does a non-empty folder that
    is not a synthetic dataset.

    Args:
        out: the dataset folder (created if missing).
        config: what to generate.
        progress: show a progress bar.
        workers: processes rendering in parallel (1 = in this process). They are started with
            ``spawn``, so a script that passes ``workers > 1`` needs the usual
            ``if __name__ == "__main__":`` guard. The files do not depend on ``workers``.

    Returns:
        What was produced, with the number of videos written and skipped by this call.
    """
    tick = time.perf_counter()
    out = Path(out)
    codec = resolve_codec(config.codec)
    header = _header(config, codec)
    _open_folder(out, header)
    jobs, total = _pending_jobs(out, config)
    if jobs:
        logger.info("rendering %d of %d synthetic videos into %s", len(jobs), total, out)
    _run_jobs(jobs, out, config, codec, progress=progress, workers=workers)
    classes, counts, label_counts = _write_lists(out, config, header)
    seconds = time.perf_counter() - tick
    if jobs:
        logger.info("wrote %d videos in %.1f s", len(jobs), seconds)
    return DatasetInfo(
        root=out,
        config=config,
        classes=classes,
        counts=counts,
        label_counts=label_counts,
        codec=codec,
        written=len(jobs),
        skipped=total - len(jobs),
        seconds=seconds,
    )
