"""Tests for the feature store: writer/reader round trip, validation, importer, docs example."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalevid.data.lists import DatasetFormatError
from scalevid.store import (
    FAILURES_FILE,
    CorruptShardError,
    FeatureStore,
    IncompatibleStoreError,
    Manifest,
    StoreDataError,
    StoreFormatError,
    StoreLock,
    StoreNotFoundError,
    StoreWriter,
    check_store,
    format_store_summary,
)
from scalevid.store import writer as writer_module
from scalevid.store.importer import import_npy_folder

K, D = 4, 32
DOCS = Path(__file__).resolve().parents[2] / "docs" / "feature-store.md"


def make_manifest(**overrides) -> Manifest:
    fields = dict(
        dim=D,
        clips_per_video=K,
        backbone="toy",
        sampling={"mode": "train", "passes": 1},
        dataset="toy-train",
        class_names=["a", "b", "c"],
        clip_frames=16,
        clip_stride=4,
        preprocessing={"size": 224, "mean": (0.5, 0.5, 0.5)},
    )
    fields.update(overrides)
    return Manifest(**fields)


def uniform_boxes(k: int) -> np.ndarray:
    i = np.arange(k, dtype=np.float32)
    boxes = np.zeros((k, 7), np.float32)
    boxes[:, 0] = 1
    boxes[:, 1], boxes[:, 4] = i / k, (i + 1) / k
    boxes[:, 5:] = 1
    return boxes


def make_video(rng: np.random.Generator, name: str, k: int) -> dict:
    return dict(
        video_id=name,
        path=f"videos/{name}.mp4",
        features=rng.standard_normal((k, D)).astype(np.float32),
        boxes=uniform_boxes(k),
        label=int(rng.integers(-1, 3)),
    )


def write_store(
    root: Path, writers: dict[str, int], *, shard_size: int = 2, seed: int = 0
) -> dict[str, dict]:
    """Write videos with one writer per prefix; returns id -> video dict."""
    rng = np.random.default_rng(seed)
    videos = {}
    for prefix, count in writers.items():
        with StoreWriter(root, make_manifest(), shard_prefix=prefix, shard_size=shard_size) as w:
            for i in range(count):
                video = make_video(rng, f"{prefix}_v{i}", k=1 + (i % K))
                w.add(**video)
                videos[video["video_id"]] = video
    return videos


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    write_store(root, {"r0": 5, "r1": 3})
    return root


def shard(root: Path, name: str) -> Path:
    return root / "shards" / name


# ------------------------------------------------------------------------------ manifest


def test_manifest_round_trip_and_errors() -> None:
    m = make_manifest()
    data = m.to_dict()
    assert json.loads(json.dumps(data)) == data
    back = Manifest.from_dict(data)
    assert back.to_dict() == data
    assert back.num_classes == 3
    missing = dict(data)
    del missing["backbone"]
    with pytest.raises(StoreFormatError, match="backbone"):
        Manifest.from_dict(missing)
    with pytest.raises(StoreFormatError, match="format version 99"):
        Manifest.from_dict({**data, "format_version": 99})
    with pytest.raises(StoreFormatError, match="format_version"):
        Manifest.from_dict({k: v for k, v in data.items() if k != "format_version"})
    with pytest.raises(StoreFormatError, match="dim"):
        Manifest.from_dict({**data, "dim": 0})


# ------------------------------------------------------------------------------ round trip


def test_round_trip_two_writers(tmp_path: Path) -> None:
    root = tmp_path / "store"
    videos = write_store(root, {"r1": 3, "r0": 5})
    store = FeatureStore.open(root, verify_checksums=True)
    assert store.shard_names == ["r0-000000", "r0-000001", "r0-000002", "r1-000000", "r1-000001"]
    expected_ids = [f"r0_v{i}" for i in range(5)] + [f"r1_v{i}" for i in range(3)]
    assert store.video_ids == expected_ids
    assert len(store) == 8 and store.dim == D and store.clips_per_video == K
    assert store.targets is None
    assert store.manifest.to_dict() == make_manifest().to_dict() | {
        "created": store.manifest.created,
        "shards": store.manifest.shards,
    }
    assert list(store.manifest.shards) == store.shard_names and store.manifest.num_videos == 8
    feats = store.features()
    assert feats.shape == (8, K, D) and feats.dtype == np.float16
    for i, vid in enumerate(expected_ids):
        video = videos[vid]
        k = len(video["features"])
        assert store.num_clips[i] == k
        assert store.labels[i] == video["label"]
        assert store.paths[i] == video["path"]
        np.testing.assert_array_equal(feats[i, :k], video["features"].astype(np.float16))
        np.testing.assert_array_equal(feats[i, k:], 0)  # padding
        np.testing.assert_array_equal(store.boxes[i, :k], video["boxes"])
        np.testing.assert_array_equal(store.boxes[i, k:], 0)
        assert store.clip_mask()[i].tolist() == [c < k for c in range(K)]
    # Reopening gives the same order.
    assert FeatureStore.open(root).video_ids == expected_ids
    assert check_store(root) == []


def test_feature_indexing_and_chunks(store_dir: Path) -> None:
    store = FeatureStore.open(store_dir)
    full = store.features()
    in_shard = store.features(slice(2, 4))  # rows of shard r0-000001
    assert isinstance(in_shard, np.memmap) or isinstance(in_shard.base, np.memmap)
    assert not in_shard.flags.writeable
    np.testing.assert_array_equal(in_shard, full[2:4])
    np.testing.assert_array_equal(store.features(slice(1, 7)), full[1:7])  # across shards
    np.testing.assert_array_equal(store.features(slice(None, None, 3)), full[::3])
    np.testing.assert_array_equal(store.features(slice(6, 2)), full[6:2])
    idx = np.array([7, 0, 3, 3, -1])
    np.testing.assert_array_equal(store.features(idx), full[idx])
    np.testing.assert_array_equal(store.features([5, 1]), full[[5, 1]])
    mask = store.labels >= 0
    np.testing.assert_array_equal(store.features(mask), full[mask])
    np.testing.assert_array_equal(store.features(6), full[6])
    with pytest.raises(IndexError):
        store.features(np.array([8]))
    with pytest.raises(IndexError):
        store.features(-9)
    chunks = list(store.iter_chunks(3))
    assert [start for start, _ in chunks] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), full)


def test_store_does_not_hold_features_in_ram(store_dir: Path) -> None:
    store = FeatureStore.open(store_dir)
    feature_bytes = len(store) * K * D * 2
    in_ram = sum(
        v.nbytes
        for v in vars(store).values()
        if isinstance(v, np.ndarray) and not isinstance(v, np.memmap)
    )
    assert in_ram < feature_bytes  # labels, boxes, num_clips only
    assert all(isinstance(f, np.memmap) for f in store._features)
    # Pickling (DataLoader workers) re-maps the files instead of copying the data.
    clone = pickle.loads(pickle.dumps(store))
    assert all(isinstance(f, np.memmap) for f in clone._features)
    np.testing.assert_array_equal(clone.features(), store.features())


def test_targets_optional(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "s", make_manifest(), shard_size=2) as w:
        for i in range(3):
            w.add(**make_video(rng, f"v{i}", 2), target=None if i == 2 else float(i) + 0.5)
    store = FeatureStore.open(tmp_path / "s")
    assert store.targets is not None
    np.testing.assert_array_equal(store.targets, np.array([0.5, 1.5, np.nan], np.float32))


def test_writer_rejects_bad_videos(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "s", make_manifest()) as w:
        good = make_video(rng, "v", 2)
        with pytest.raises(StoreDataError, match="shape"):
            w.add(**{**good, "features": np.zeros((K + 1, D))})
        with pytest.raises(StoreDataError, match="boxes"):
            w.add(**{**good, "boxes": np.zeros((3, 7))})
        with pytest.raises(StoreDataError, match="NaN"):
            w.add(**{**good, "features": np.full((2, D), np.nan)})
        with pytest.raises(StoreDataError, match="overflow float16"):
            w.add(**{**good, "features": np.full((2, D), 1e6)})
        bad_boxes = good["boxes"].copy()
        bad_boxes[1, 5] = 1.5
        with pytest.raises(StoreDataError, match="outside"):
            w.add(**{**good, "boxes": bad_boxes})
        with pytest.raises(StoreDataError, match="label"):
            w.add(**{**good, "label": 3})
        w.add(**good)
        with pytest.raises(StoreDataError, match="already"):
            w.add(**good)
    assert len(FeatureStore.open(tmp_path / "s")) == 1


# ------------------------------------------------------------------- writers and resume


def test_leftover_tmp_dir_is_ignored_and_resume_numbering(store_dir: Path) -> None:
    junk = shard(store_dir, ".tmp-r0-000003-12345")
    junk.mkdir()
    (junk / "features.npy").write_bytes(b"half a shard")
    other = shard(store_dir, ".tmp-r7-000000-999")  # another writer's work in progress
    other.mkdir()
    assert len(FeatureStore.open(store_dir)) == 8
    assert check_store(store_dir) == []

    rng = np.random.default_rng(1)
    with StoreWriter(store_dir, make_manifest(), shard_prefix="r0", shard_size=2) as w:
        assert not junk.exists()  # our own stale temp dir is removed
        assert other.exists()  # other prefixes are left alone
        assert w.done_ids() == {f"r0_v{i}" for i in range(5)} | {f"r1_v{i}" for i in range(3)}
        w.add(**make_video(rng, "late", 2))
    store = FeatureStore.open(store_dir)
    assert "r0-000003" in store.shard_names
    assert store.video_ids[5] == "late"  # after r0's earlier shards, before r1's


WRITER_SCRIPT = """
import sys
import numpy as np
from scalevid.store import Manifest, StoreWriter

root, rank, k, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
manifest = Manifest(dim=d, clips_per_video=k, backbone="toy", sampling={"mode": "train"}, dataset="t")
box = np.array([[1, 0, 0, 0, 1, 1, 1]], np.float32)
# ranks of one job: the launcher (the test) holds the store's lock
with StoreWriter(root, manifest, shard_prefix=f"r{rank}", shard_size=3, lock=False) as w:
    for i in range(7):
        w.add(video_id=f"rank{rank}_{i}", path="p", features=np.ones((1, d)), boxes=box)
"""


@pytest.mark.slow
def test_concurrent_writer_processes(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with StoreLock(root):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER_SCRIPT, str(root), str(r), str(K), str(D)]
            )
            for r in range(3)
        ]
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    store = FeatureStore.open(root, verify_checksums=True)
    assert store.video_ids == [f"rank{r}_{i}" for r in range(3) for i in range(7)]
    assert len(store.shard_names) == 9
    leftovers = list(root.glob(".manifest*")) + list((root / "shards").glob(".tmp-*"))
    assert leftovers == []


def test_interrupted_flush_leaves_no_visible_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    writer = StoreWriter(tmp_path / "s", make_manifest(), shard_size=2)
    writer.add(**make_video(rng, "v0", 2))
    writer.add(**make_video(rng, "v1", 2))  # flushes r0-000000
    writer.add(**make_video(rng, "v2", 2))
    real_save = writer_module._save_npy

    def dies_on_boxes(path: Path, array: np.ndarray) -> dict[str, int]:
        if path.name == "boxes.npy":
            raise KeyboardInterrupt  # the process is killed mid-shard
        return real_save(path, array)

    monkeypatch.setattr(writer_module, "_save_npy", dies_on_boxes)
    with pytest.raises(KeyboardInterrupt):
        writer.flush()
    assert sorted(p.name for p in (tmp_path / "s" / "shards").iterdir()) == ["r0-000000"]
    assert FeatureStore.open(tmp_path / "s").video_ids == ["v0", "v1"]
    monkeypatch.setattr(writer_module, "_save_npy", real_save)
    writer.close()  # the buffered video is still there and now lands
    assert FeatureStore.open(tmp_path / "s").video_ids == ["v0", "v1", "v2"]


def test_incompatible_manifest_rejected(store_dir: Path) -> None:
    with pytest.raises(IncompatibleStoreError, match="dim") as info:
        StoreWriter(store_dir, make_manifest(dim=D + 1), shard_prefix="r2")
    assert "manifest.json" in str(info.value)
    with pytest.raises(IncompatibleStoreError, match="sampling"):
        StoreWriter(store_dir, make_manifest(sampling={"mode": "test"}), shard_prefix="r2")
    # The same manifest (another creation time) is compatible.
    StoreWriter(store_dir, make_manifest(created="later"), shard_prefix="r2").close()


def test_duplicate_ids_across_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix in ("r0", "r1"):  # each writer started before the other's shard existed
        w = StoreWriter(tmp_path / "s", make_manifest(), shard_prefix=prefix)
        w._known.clear()
        w.add(**make_video(rng, "same", 2))
        w.close()
    with pytest.raises(StoreDataError, match="'same'.*r0-000000.*r1-000000"):
        FeatureStore.open(tmp_path / "s")


# ------------------------------------------------------------------------------ validation


def test_missing_store_and_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        FeatureStore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFoundError, match="manifest.json"):
        FeatureStore.open(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreFormatError, match="cannot parse"):
        FeatureStore.open(tmp_path / "empty")
    problems = check_store(tmp_path / "empty")
    assert len(problems) == 1 and problems[0].kind == "StoreFormatError"


def test_truncated_features_names_shard_and_fix(store_dir: Path) -> None:
    path = shard(store_dir, "r0-000001") / "features.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptShardError) as info:
        FeatureStore.open(store_dir, check_values=False)
    message = str(info.value)
    assert "r0-000001" in message and "features.npy" in message and "truncated" in message
    assert "delete" in message and "re-run extraction" in message
    assert info.value.path == path


def test_missing_file_and_wrong_shape(store_dir: Path) -> None:
    (shard(store_dir, "r1-000000") / "labels.npy").unlink()
    with pytest.raises(CorruptShardError, match="r1-000000: labels.npy is missing"):
        FeatureStore.open(store_dir)


def test_flipped_bytes_detected_by_checksums(store_dir: Path) -> None:
    path = shard(store_dir, "r0-000002") / "features.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a low mantissa bit: still a finite value
    path.write_bytes(bytes(data))
    FeatureStore.open(store_dir, verify_checksums=False)  # sizes and values still look fine
    with pytest.raises(CorruptShardError, match="r0-000002: features.npy fails its crc32"):
        FeatureStore.open(store_dir)
    problems = check_store(store_dir)
    assert [p.path for p in problems] == [path]
    assert "r0-000002" in problems[0].message


def test_nan_detected_only_in_valid_clips(store_dir: Path) -> None:
    path = shard(store_dir, "r0-000000") / "features.npy"
    feats = np.load(path, mmap_mode="r+")
    feats[0, K - 1, 0] = np.nan  # r0_v0 has 1 valid clip: this row is padding
    feats.flush()
    del feats
    FeatureStore.open(store_dir, verify_checksums=False)  # (the value checks are tested here)
    feats = np.load(path, mmap_mode="r+")
    feats[1, 0, 3] = np.inf  # r0_v1 clip 0 is valid
    feats.flush()
    del feats
    with pytest.raises(StoreDataError, match=r"NaN/Inf.*'r0_v1'"):
        FeatureStore.open(store_dir, verify_checksums=False)
    assert len(FeatureStore.open(store_dir, check_values=False, verify_checksums=False)) == 8


def test_bad_box_range_detected(store_dir: Path) -> None:
    path = shard(store_dir, "r1-000000") / "boxes.npy"
    boxes = np.load(path)
    boxes[1, 0, 2] = 0.9  # y0 = 0.9 < y1 = 1: fine
    boxes[1, 0, 6] = -0.2  # x1 < 0
    np.save(path, boxes)
    with pytest.raises(
        StoreDataError, match=r"r1-000000: boxes.npy.*outside \[0, 1\].*'r1_v1' clip 0"
    ):
        FeatureStore.open(store_dir, verify_checksums=False)


def test_label_out_of_range_detected(store_dir: Path) -> None:
    path = shard(store_dir, "r0-000001") / "labels.npy"
    labels = np.load(path)
    labels[0] = 3  # 3 class names
    np.save(path, labels)
    with pytest.raises(StoreDataError, match=r"r0-000001: labels.npy.*outside \[-1, 3\)"):
        FeatureStore.open(store_dir, verify_checksums=False)


def test_check_store_collects_all_problems(store_dir: Path) -> None:
    trunc = shard(store_dir, "r0-000000") / "boxes.npy"
    trunc.write_bytes(trunc.read_bytes()[:-8])
    labels_path = shard(store_dir, "r1-000001") / "labels.npy"
    np.save(labels_path, np.array([-5], np.int64))
    problems = check_store(store_dir)
    kinds = {(p.path, p.kind) for p in problems}
    assert (trunc, "CorruptShardError") in kinds
    assert (labels_path, "StoreDataError") in kinds  # bad label
    assert (labels_path, "CorruptShardError") in kinds  # rewritten file fails its checksum
    assert all(p.message for p in problems)


def test_format_store_summary(store_dir: Path) -> None:
    """The facts the summary states (not how it spaces them): counts, shapes, names."""
    text = format_store_summary(FeatureStore.open(store_dir))
    assert re.search(r"^videos\s+8 in 5 shard\(s\)", text, re.M)
    assert f"K={K}" in text and f"D={D}" in text and "'toy'" in text
    assert re.search(r"^classes\s+3\b", text, re.M) and "unlabelled" in text and "on disk" in text


# --------------------------------------------------------------------------------- importer


def write_npy_folder(folder: Path, clips: dict[str, int], dim: int = 6) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, k in clips.items():
        arrays[name] = rng.standard_normal((k, dim)).astype(np.float32)
        np.save(folder / f"{name}.npy", arrays[name])
    return arrays


def test_import_uniform_boxes_and_failures(tmp_path: Path) -> None:
    arrays = write_npy_folder(tmp_path / "feats", {"v1": 3, "v2": 5, "v3": 4})
    (tmp_path / "feats" / "broken.npy").write_bytes(b"not an array")
    (tmp_path / "list.csv").write_text(
        "path,label\n"
        "# a comment\n"
        "videos/v1.mp4,run\n"
        "videos/missing.mp4,jump\n"
        "videos/v2.mp4,jump\n"
        "videos/broken.mp4,run\n"
        "videos/v3.mp4,-1\n"
    )
    out = tmp_path / "store"
    report = import_npy_folder(
        features_dir=tmp_path / "feats",
        list_file=tmp_path / "list.csv",
        out=out,
        root="/data",
        dataset_name="toy",
        progress=False,
    )
    assert (report.listed, report.imported, report.skipped_existing, report.failed) == (5, 3, 0, 2)
    assert {f.video_id for f in report.failures} == {"videos/missing", "videos/broken"}
    logged = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    assert {entry["video_id"] for entry in logged} == {"videos/missing", "videos/broken"}

    store = FeatureStore.open(out, verify_checksums=True)
    assert store.video_ids == ["videos/v1", "videos/v2", "videos/v3"]
    assert store.paths == ["/data/videos/v1.mp4", "/data/videos/v2.mp4", "/data/videos/v3.mp4"]
    assert store.manifest.class_names == ["jump", "run"]
    assert store.labels.tolist() == [1, 0, -1]
    assert store.clips_per_video == 5 and store.dim == 6
    assert store.num_clips.tolist() == [3, 5, 4]
    np.testing.assert_array_equal(store.features(0)[:3], arrays["v1"].astype(np.float16))
    np.testing.assert_allclose(store.boxes[0, :3, 1], [0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(store.boxes[0, :3, 4], [1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(store.boxes[0, :3][:, [0, 2, 3, 5, 6]], [[1, 0, 0, 1, 1]] * 3)
    assert store.manifest.sampling == {"mode": "imported"}


def test_import_with_timestamps_and_relative_layout(tmp_path: Path) -> None:
    feats = tmp_path / "feats"
    write_npy_folder(feats / "classA", {"x": 2})
    write_npy_folder(feats, {"y": 3})
    np.save(feats / "classA" / "x.timestamps.npy", np.array([[0.0, 2.0], [4.0, 6.0]]))
    (feats / "classA" / "x.json").write_text('{"duration": 10.0}')
    np.save(feats / "y.timestamps.npy", np.array([[0.0, 1.0], [1.0, 2.0], [3.0, 4.0]]))
    (tmp_path / "list.txt").write_text("classA/x.avi 2\ny.avi 0\n")
    report = import_npy_folder(
        features_dir=feats, list_file=tmp_path / "list.txt", out=tmp_path / "s", progress=False
    )
    assert report.imported == 2 and report.failed == 0
    store = FeatureStore.open(tmp_path / "s")
    assert store.manifest.class_names == ["0", "1", "2"] and store.labels.tolist() == [2, 0]
    np.testing.assert_allclose(store.boxes[0, :2, [1, 4]].T, [[0.0, 0.2], [0.4, 0.6]])
    np.testing.assert_allclose(store.boxes[1, :3, [1, 4]].T, [[0, 0.25], [0.25, 0.5], [0.75, 1]])


def test_import_reads_full_boxes_and_says_where_every_video_s_boxes_came_from(
    tmp_path: Path,
) -> None:
    """<id>.boxes.npy (K, 7) is stored as given (crop and flip included), timestamps become
    times, the rest uniform; the summary counts each kind and names the folder looked in."""
    feats = tmp_path / "feats"
    write_npy_folder(feats, {"boxed": 2, "timed": 2, "plain": 2})
    given = np.array(
        [[-1, 0.1, 0.2, 0.3, 0.4, 0.9, 0.8], [1, 0.5, 0.0, 0.1, 0.7, 0.6, 1.0]], np.float32
    )
    np.save(feats / "boxed.boxes.npy", given)
    np.save(feats / "timed.timestamps.npy", np.array([[0.0, 1.0], [1.0, 2.0]]))
    (tmp_path / "list.txt").write_text("boxed.mp4 0\ntimed.mp4 1\nplain.mp4 0\n")
    report = import_npy_folder(
        features_dir=feats, list_file=tmp_path / "list.txt", out=tmp_path / "s", progress=False
    )
    assert report.imported == 3 and report.failed == 0
    store = FeatureStore.open(tmp_path / "s")
    np.testing.assert_array_equal(store.boxes[0, :2], given)
    np.testing.assert_allclose(store.boxes[1, :2, [1, 4]].T, [[0, 0.5], [0.5, 1]])
    np.testing.assert_allclose(store.boxes[2, :2, [1, 4]].T, [[0, 0.5], [0.5, 1]])
    last = report.summary().splitlines()[-1]
    assert last.startswith("boxes: 1 from <id>.boxes.npy, 1 from <id>.timestamps.npy, 1 uniform")
    assert str(feats) in last


def test_import_finds_boxes_in_another_folder_and_refuses_bad_or_doubled_ones(
    tmp_path: Path,
) -> None:
    feats, side = tmp_path / "feats", tmp_path / "side"
    write_npy_folder(feats / "a", {"x": 2})
    write_npy_folder(feats, {"y": 2, "z": 2, "w": 2})
    (side / "a").mkdir(parents=True)
    np.save(side / "a" / "x.timestamps.npy", np.array([[0.0, 2.0], [4.0, 6.0]]))
    (side / "a" / "x.json").write_text('{"duration": 10.0}')
    np.save(side / "y.boxes.npy", np.zeros((3, 7), np.float32))  # 3 boxes for 2 clips
    np.save(side / "z.boxes.npy", np.ones((2, 7), np.float32))
    np.save(side / "z.timestamps.npy", np.ones((2, 2)))  # which one was meant?
    (tmp_path / "list.txt").write_text("a/x.mp4 0\ny.mp4 1\nz.mp4 0\nw.mp4 1\n")
    report = import_npy_folder(
        features_dir=feats,
        list_file=tmp_path / "list.txt",
        out=tmp_path / "s",
        boxes_dir=side,
        progress=False,
    )
    assert report.imported == 2 and report.box_sources == {"timestamps": 1, "uniform": 1}
    reasons = {f.video_id: f.reason for f in report.failures}
    assert "(2, 7)" in reasons["y"] and "keep one" in reasons["z"]
    store = FeatureStore.open(tmp_path / "s")
    np.testing.assert_allclose(store.boxes[0, :2, [1, 4]].T, [[0.0, 0.2], [0.4, 0.6]])
    assert str(side) in report.summary().splitlines()[-1]


def test_import_resumes(tmp_path: Path) -> None:
    write_npy_folder(tmp_path / "feats", {"a": 2, "b": 2})
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4 1\nc.mp4 1\n")
    kwargs = dict(
        features_dir=tmp_path / "feats",
        list_file=tmp_path / "list.txt",
        out=tmp_path / "s",
        progress=False,
        shard_size=1,
    )
    first = import_npy_folder(**kwargs)
    assert (first.imported, first.failed) == (2, 1)
    write_npy_folder(tmp_path / "feats", {"c": 1})
    second = import_npy_folder(**kwargs)
    assert (second.imported, second.skipped_existing, second.failed) == (1, 2, 0)
    assert (tmp_path / "s" / FAILURES_FILE).read_text() == ""
    store = FeatureStore.open(tmp_path / "s")
    assert store.video_ids == ["a", "b", "c"] and store.num_clips.tolist() == [2, 2, 1]


def test_import_malformed_line_names_line_number(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("# header comment\na.mp4 0\nlonely_path\nb.mp4 1\n")
    with pytest.raises(DatasetFormatError, match=r"list.txt:3: expected 'path label'"):
        import_npy_folder(
            features_dir=tmp_path,
            list_file=tmp_path / "list.txt",
            out=tmp_path / "s",
            progress=False,
        )


# ------------------------------------------------------------------------------------ docs


def test_docs_numpy_example_writes_a_valid_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = DOCS.read_text()
    match = re.search(r"<!-- example: numpy-only-store -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/feature-store.md lost its numpy-only example"
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), str(DOCS), "exec"), {})
    store = FeatureStore.open(tmp_path / "my_store", verify_checksums=True)
    assert (len(store), store.clips_per_video, store.dim) == (3, 4, 8)
    assert store.num_clips.tolist() == [4, 2, 3]
    assert check_store(tmp_path / "my_store") == []


def test_shard_names_are_built_and_parsed_by_the_layout_alone() -> None:
    from scalevid.store.layout import is_temp_shard, shard_name, shard_seq, temp_shard_name

    name = shard_name("r001", 42)
    assert shard_seq(name, "r001") == 42
    assert shard_seq(name, "r0") is None and shard_seq(name, "r00") is None  # another writer's
    assert shard_seq(shard_name("import", 1_000_000), "import") == 1_000_000  # past 6 digits
    temp = temp_shard_name(name, 1234)
    assert temp.startswith(".") and is_temp_shard(temp, "r001")
    assert not is_temp_shard(temp, "r00") and not is_temp_shard(name, "r001")
