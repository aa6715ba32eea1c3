"""Tests for the synthetic dataset generator (`scalevid.demo` synthetic, render, dataset)."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest

from scalevid.data.lists import parse_csv
from scalevid.demo import dataset as D
from scalevid.demo import render as R
from scalevid.demo import synthetic as S

# Small and short, so that rendering and encoding a video takes a few milliseconds.
TINY = S.DatasetConfig(
    train=6,
    val=3,
    test=0,
    frames=48,
    height=48,
    width=64,
    event_frames=(8, 12),
    min_gap=12,
    edge_frames=2,
)
CLIP_WINDOWS = (64, 29)  # 16 x 4 and 8 x 4 backbone clips, in frames (64 rounds 61 up)


def render(config: S.DatasetConfig, split: S.Split, index: int) -> np.ndarray:
    """Every frame of one generated video: (frames, height, width, 3) uint8."""
    return np.stack(list(R.iter_video_frames(config, split, index)))


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def file_times(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


# ------------------------------------------------------------------------------------- config


def test_config_rejects_videos_too_short_for_the_events() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        S.DatasetConfig(frames=100)
    with pytest.raises(ValueError, match="cannot hold 3 events"):
        S.DatasetConfig(task="count", frames=200)
    with pytest.raises(ValueError, match="task"):
        S.DatasetConfig(task="colour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even"):
        S.DatasetConfig(height=121)


def test_config_round_trips_through_json() -> None:
    config = dataclasses.replace(TINY, motions=("orbit", "pulse", "sweep", "bounce"))
    data = json.loads(json.dumps(config.to_dict()))
    assert S.DatasetConfig.from_dict(data) == config


def test_class_names() -> None:
    order = S.DatasetConfig()
    assert S.describe_classes(order) == [
        "sweep-then-bounce",
        "sweep-then-orbit",
        "bounce-then-sweep",
        "bounce-then-orbit",
        "orbit-then-sweep",
        "orbit-then-bounce",
    ]
    count = S.DatasetConfig(task="count")
    assert S.describe_classes(count) == ["one bounce", "two bounces", "three bounces"]
    assert len(S.class_descriptions(count)) == count.num_classes == 3


# --------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("task", ["order", "count"])
def test_schedules_respect_the_config_and_determine_the_label(task: S.Task) -> None:
    config = S.DatasetConfig(task=task)
    low, high = config.event_range
    for i in range(300):
        schedule = S.video_schedule(config, "train", i)
        events = schedule.events
        assert schedule.label == S.video_label(config, "train", i)
        assert S.label_from_events(config, events) == schedule.label
        assert S.consistent_labels(config, schedule.kinds, whole_video=True) == [schedule.label]
        assert schedule.label in S.consistent_labels(config, schedule.kinds)
        assert events[0].start >= config.edge_frames
        assert events[-1].stop <= config.frames - config.edge_frames
        assert all(low <= e.stop - e.start <= high for e in events)
        assert all(
            b.start - a.stop >= config.min_gap for a, b in zip(events[:-1], events[1:], strict=True)
        )


@pytest.mark.parametrize("task", ["order", "count"])
@pytest.mark.parametrize("window", CLIP_WINDOWS)
def test_no_single_clip_window_decides_the_label(task: S.Task, window: int) -> None:
    """What one clip shows is consistent with at least two classes, for every window."""
    config = S.DatasetConfig(task=task)
    rng = np.random.default_rng(0)
    seen_event = 0
    for i in range(200):
        schedule = S.video_schedule(config, "test", i)
        for start in rng.integers(0, config.frames - window + 1, size=10):
            kinds = [e.kind for e in S.visible_events(schedule.events, start, start + window)]
            assert len(kinds) <= 1
            labels = S.consistent_labels(config, kinds)
            assert schedule.label in labels
            assert len(labels) >= 2
            seen_event += bool(kinds)
    # ...while most windows do show the actor moving.
    assert seen_event / 2000 > 0.4


@pytest.mark.parametrize("task", ["order", "count"])
def test_clip_window_with_its_position_still_leaves_two_classes(task: S.Task) -> None:
    """Knowing where a window lies (as SCALE's boxes do) still does not decide the label.

    For each window start, the classes that produced a given view in 1500 reference videos are
    collected; views of held-out videos must match at least two classes.
    """
    config = S.DatasetConfig(task=task)
    window, step = 64, 8
    starts = range(0, config.frames - window + 1, step)

    def views(schedule: S.Schedule) -> list[tuple[int, tuple[str, ...]]]:
        return [
            (s, tuple(e.kind for e in S.visible_events(schedule.events, s, s + window)))
            for s in starts
        ]

    producers: dict[tuple[int, tuple[str, ...]], set[int]] = collections.defaultdict(set)
    for i in range(1500):
        schedule = S.video_schedule(config, "train", i)
        for view in views(schedule):
            producers[view].add(schedule.label)
    matched = [
        len(producers[view])
        for i in range(100)
        for view in views(S.video_schedule(config, "val", i))
        if view in producers
    ]
    assert len(matched) > 0.95 * 100 * len(starts)
    assert min(matched) >= 2


def test_the_window_check_detects_a_decisive_clip() -> None:
    """Control: with no gap between events, windows over the change decide the order."""
    config = S.DatasetConfig(min_gap=0, edge_frames=0, frames=120)
    decisive = 0
    for i in range(50):
        schedule = S.video_schedule(config, "train", i)
        for start in range(0, config.frames - 64 + 1, 4):
            kinds = [e.kind for e in S.visible_events(schedule.events, start, start + 64)]
            decisive += S.consistent_labels(config, kinds) == [schedule.label]
    assert decisive > 0


def test_labels_are_balanced_and_independent_of_split_size() -> None:
    config = S.DatasetConfig()
    labels = [S.video_label(config, "train", i) for i in range(60)]
    assert np.bincount(labels).tolist() == [10] * 6
    assert labels != sorted(labels)  # shuffled within each block of 6
    assert S.video_label(config, "val", 5) == S.video_label(
        dataclasses.replace(config, val=1), "val", 5
    )


# ------------------------------------------------------------------------------ rendering


def test_rendering_is_deterministic_by_seed() -> None:
    first = render(TINY, "train", 1)
    assert first.shape == (48, 48, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, render(TINY, "train", 1))
    assert not np.array_equal(first, render(dataclasses.replace(TINY, seed=1), "train", 1))
    assert not np.array_equal(first, render(TINY, "train", 2))
    assert not np.array_equal(first, render(TINY, "val", 1))


def test_the_actor_moves_exactly_during_its_events() -> None:
    still = dataclasses.replace(TINY, distractors=(0, 0), camera_jitter=0.0, noise_std=0.0)
    for i in range(6):
        frames = render(still, "train", i).astype(np.int16)
        changed = np.abs(np.diff(frames, axis=0)).reshape(len(frames) - 1, -1).max(axis=1) > 0
        inside = np.zeros(len(frames), dtype=bool)
        for e in S.video_schedule(still, "train", i).events:
            inside[e.start : e.stop] = True
        # changed[t - 1] compares frames t - 1 and t.
        both_inside = inside[1:] & inside[:-1]
        both_outside = ~inside[1:] & ~inside[:-1]
        assert not changed[both_outside].any()
        assert changed[both_inside].mean() > 0.8


def test_a_shared_look_leaves_only_what_happens_to_tell_videos_apart() -> None:
    still = dataclasses.replace(TINY, distractors=(0, 0), camera_jitter=0.0, noise_std=0.0)
    shared = dataclasses.replace(still, look="shared")
    # before any event (frame 0) every video of a shared look shows the same picture ...
    first = [render(shared, "train", i)[0] for i in range(4)]
    assert all(np.array_equal(first[0], f) for f in first[1:])
    # ... and another dataset seed another one; a varied look differs from video to video
    assert not np.array_equal(first[0], render(dataclasses.replace(shared, seed=1), "train", 0)[0])
    assert not np.array_equal(render(still, "train", 0)[0], render(still, "train", 1)[0])
    # what happens still differs
    assert not np.array_equal(render(shared, "train", 0), render(shared, "train", 1))
    with pytest.raises(ValueError, match="look"):
        dataclasses.replace(TINY, look="same")


# -------------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> D.DatasetInfo:
    return D.make_dataset(tmp_path_factory.mktemp("synthetic") / "tiny", TINY, progress=False)


def test_lists_parse_as_path_label_with_balanced_labels(tiny_dataset: D.DatasetInfo) -> None:
    root = tiny_dataset.root
    assert tiny_dataset.written == 9 and tiny_dataset.skipped == 0
    classes = (root / "classes.txt").read_text().splitlines()
    assert classes == S.describe_classes(TINY)
    for split, size in (("train", 6), ("val", 3)):
        lines = (root / f"{split}.csv").read_text().splitlines()
        assert len(lines) == size
        for i, line in enumerate(lines):
            path, label = line.split(" ")
            assert path == f"videos/{split}/{split}_{i:05d}.mp4"
            assert (root / path).is_file()
            assert int(label) == S.video_schedule(TINY, split, i).label
        counts = np.bincount([int(line.split()[1]) for line in lines], minlength=6)
        assert counts.max() - counts.min() <= 1
        videos = parse_csv(root / f"{split}.csv")
        assert [item.path for item in videos] == [root / line.split()[0] for line in lines]
    assert (root / "test.csv").read_text() == ""
    info = json.loads((root / "dataset.json").read_text())
    assert info["complete"] is True
    assert S.DatasetConfig.from_dict(info["config"]) == TINY
    assert info["counts"] == {"train": 6, "val": 3, "test": 0}
    assert [c["name"] for c in info["classes"]] == classes
    assert tiny_dataset.label_counts["train"] == [1] * 6


def test_videos_decode_to_the_rendered_frames(tiny_dataset: D.DatasetInfo) -> None:
    decoded = decode(tiny_dataset.root / "videos/train/train_00002.mp4")
    rendered = render(TINY, "train", 2)
    assert decoded.shape == rendered.shape
    error = np.abs(decoded.astype(np.float32) - rendered).mean()
    assert error < 6.0  # lossy yuv420p coding, not a different video


def test_same_seed_gives_identical_videos_and_other_seeds_differ(
    tiny_dataset: D.DatasetInfo, tmp_path: Path
) -> None:
    # Fewer videos in the second copy: video i must not depend on the split sizes.
    fewer = dataclasses.replace(TINY, train=3, val=1)
    again = D.make_dataset(tmp_path / "again", fewer, progress=False)
    other = D.make_dataset(tmp_path / "other", dataclasses.replace(fewer, seed=7), progress=False)
    for name in ("videos/train/train_00002.mp4", "videos/val/val_00000.mp4"):
        a = decode(tiny_dataset.root / name)
        np.testing.assert_array_equal(a, decode(again.root / name))
        assert (tiny_dataset.root / name).read_bytes() == (again.root / name).read_bytes()
        assert not np.array_equal(a, decode(other.root / name))


def test_second_run_writes_nothing(tiny_dataset: D.DatasetInfo) -> None:
    before = file_times(tiny_dataset.root)
    again = D.make_dataset(tiny_dataset.root, TINY, progress=False)
    assert again.written == 0 and again.skipped == 9
    assert file_times(tiny_dataset.root) == before
    assert again.seconds < 1.0


def test_other_config_or_foreign_folder_is_refused(
    tiny_dataset: D.DatasetInfo, tmp_path: Path
) -> None:
    with pytest.raises(S.SyntheticDatasetError, match=r"config\.seed: 0 here, 3 asked"):
        D.make_dataset(tiny_dataset.root, dataclasses.replace(TINY, seed=3), progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(S.SyntheticDatasetError, match="not empty"):
        D.make_dataset(tmp_path, TINY, progress=False)


def test_interrupted_run_is_completed_and_its_temp_file_ignored(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, train=3, val=0)
    root = tmp_path / "data"
    D.make_dataset(root, config, progress=False)
    # What a killed run leaves: one video missing, a half-written temporary file.
    video = root / "videos/train/train_00001.mp4"
    reference = video.read_bytes()
    video.unlink()
    leftover = video.with_name(f".train_00001.12345{R.TMP_SUFFIX}")
    leftover.write_bytes(reference[: len(reference) // 2])

    info = D.make_dataset(root, config, progress=False)
    assert info.written == 1 and info.skipped == 2
    assert not leftover.exists()
    assert video.read_bytes() == reference
    assert sorted(p.name for p in video.parent.iterdir()) == [
        f"train_{i:05d}.mp4" for i in range(3)
    ]
    assert "tmp" not in (root / "train.csv").read_text()


def test_a_failed_encode_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(frames: object, path: Path, *args: object) -> None:
        path.write_bytes(b"half a video")
        raise RuntimeError("killed")

    monkeypatch.setattr(R, "_encode", broken)
    with pytest.raises(RuntimeError, match="killed"):
        D.make_dataset(tmp_path / "d", dataclasses.replace(TINY, val=0), progress=False)
    assert not list((tmp_path / "d/videos/train").iterdir())
    assert json.loads((tmp_path / "d/dataset.json").read_text())["complete"] is False


@pytest.mark.slow
def test_workers_give_the_same_files(tiny_dataset: D.DatasetInfo, tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, train=4, val=0)
    info = D.make_dataset(tmp_path / "parallel", config, progress=False, workers=2)
    assert info.written == 4
    for i in range(4):
        name = f"videos/train/train_{i:05d}.mp4"
        assert (info.root / name).read_bytes() == (tiny_dataset.root / name).read_bytes()


@pytest.mark.skipif("mpeg4" not in av.codecs_available, reason="no mpeg4 encoder")
def test_mpeg4_fallback_codec(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, train=1, val=0, codec="mpeg4")
    info = D.make_dataset(tmp_path / "m", config, progress=False)
    assert info.codec == "mpeg4"
    decoded = decode(tmp_path / "m/videos/train/train_00000.mp4")
    assert np.abs(decoded.astype(np.float32) - render(config, "train", 0)).mean() < 8.0


@pytest.mark.parametrize("task", ["order", "count"])
def test_quick_config_hides_the_label_from_8x4_clips(task: S.Task) -> None:
    config = S.quick_config(task, seed=3)
    assert config.seed == 3 and config.frames == 144
    for i in range(50):
        events = S.video_schedule(config, "train", i).events
        for start in range(0, config.frames - 29 + 1, 3):
            assert len(S.visible_events(events, start, start + 29)) <= 1


def test_permutation_task_shows_every_motion_once_in_the_labelled_order() -> None:
    config = S.DatasetConfig(
        task="permutation", frames=192, event_frames=(32, 40), min_gap=30, edge_frames=4
    )
    assert config.num_classes == 6 and S.describe_classes(config)[0] == "sweep-bounce-orbit"
    labels = []
    for i in range(60):
        schedule = S.video_schedule(config, "train", i)
        # the same motions in every class: a bag of clips carries nothing about the label
        assert sorted(schedule.kinds) == sorted(config.motions)
        assert S.class_sequences(config)[schedule.label] == schedule.kinds
        assert all(
            b.start - a.stop >= 30
            for a, b in zip(schedule.events, schedule.events[1:], strict=False)
        )
        for start in range(0, config.frames - 29 + 1, 7):  # 8 x 4 clips see one motion at most
            kinds = [e.kind for e in S.visible_events(schedule.events, start, start + 29)]
            assert len(kinds) <= 1 and len(S.consistent_labels(config, kinds)) >= 2
        labels.append(schedule.label)
    assert np.bincount(labels).tolist() == [10] * 6
    with pytest.raises(ValueError, match="cannot hold 3 events"):
        dataclasses.replace(config, frames=150)
    with pytest.raises(ValueError, match="actor_size"):
        dataclasses.replace(config, actor_size=(0.2, 0.1))
