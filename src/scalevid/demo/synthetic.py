"""The design of the synthetic videos: a label that needs the whole video, and its events.

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

Determinism
-----------
Video ``i`` of a split depends only on ``(config, split, i)``: its label comes from a
permutation of the class indices seeded by ``(seed, split, i // num_classes)`` (so every block of
``num_classes`` consecutive videos has each class once: balanced splits), and its content from
``(seed, split, i)``. The encoder is deterministic too (see `scalevid.demo.render`), so the same
config gives byte-identical files, whatever ``workers`` is.

The pixels are drawn by `scalevid.demo.render` (see there for the nuisances) and the dataset
folder is written by `scalevid.demo.dataset`.

:func:`quick_config` is a shorter preset for 8 x 4 clips.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import numpy as np

Task = Literal["order", "count", "permutation"]
Motion = Literal["sweep", "bounce", "orbit", "pulse"]
Background = Literal["flat", "gradient", "noise", "stripes"]
Codec = Literal["auto", "libx264", "mpeg4"]
Look = Literal["varied", "shared"]
Split = Literal["train", "val", "test"]

SPLITS: tuple[Split, ...] = ("train", "val", "test")
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
        look: ``"varied"``: every video draws its own background, actor shape, colour, size
            and resting place; ``"shared"``: every video of the dataset (seed) shows the same
            ones, so videos differ only in what happens in them (events, distractors, noise).
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
    look: Look = "varied"
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
        if self.look not in get_args(Look):
            raise ValueError(f"look must be one of {get_args(Look)}, got {self.look!r}")
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


def video_streams(config: DatasetConfig, split: Split, index: int) -> list[np.random.Generator]:
    """Independent generators for (schedule, scene, pixel noise) of one video."""
    seq = np.random.SeedSequence([config.seed, _TAG_VIDEO, _split_number(split), index])
    return [np.random.default_rng(child) for child in seq.spawn(3)]


def sample_events(
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
    rng = video_streams(config, split, index)[0]
    events = sample_events(config, class_sequences(config)[label], rng)
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
