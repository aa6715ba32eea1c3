"""`scalevid extract`: videos -> tiny local backbone -> store, with broken inputs and resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from scalevid import extract as extract_module
from scalevid.backbones import CompileUnavailableError, cpp_compiler_available, create_backbone
from scalevid.backbones import base as backbone_base
from scalevid.cli import build_parser, main
from scalevid.config import result_settings
from scalevid.data.lists import VideoItem
from scalevid.extract import ExtractConfig, extract
from scalevid.store import FeatureStore
from tests.conftest import write_video

BACKBONE = dict(backbone="module", weights="tests.tiny_backbone:build_pair")  # 4 x 16px, dim 8


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    videos = []
    for i in range(5):
        colour = rng.integers(0, 255, size=3)

        def image(t, colour=colour):
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[:] = colour
            frame[:, (2 * t) % 64 :][:, :8] = 255  # a moving bar
            return frame

        videos.append(write_video(root / f"good{i}.mp4", num_frames=30 + 10 * i, image=image))
    return videos


def write_list(path: Path, videos: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{v} {i % 2}\n" for i, v in enumerate(videos)))
    return path


def config(tmp_path: Path, videos: list[Path], **kw) -> ExtractConfig:
    listing = write_list(tmp_path / "list.csv", videos)
    options = {"workers": 0, "progress": False, "num_clips": 4, **BACKBONE, **kw}
    return ExtractConfig(list=str(listing), out=str(tmp_path / "store"), **options)


def test_bad_inputs_are_recorded_and_never_stop_the_run(
    tmp_path, good_videos, broken_videos, video_single
):
    bad = list(broken_videos.values())
    # test views span the whole video, so the truncated file's missing half is always reached
    # (train sampling draws its clips from a seed of the video id, here a tmp path: the clips
    # of one session may all fall in the half that decodes, and the file is then extracted)
    videos = [*good_videos[:2], *bad, video_single, good_videos[2]]
    report = extract(config(tmp_path, videos, split="test", temporal_views=4, spatial_views=1))
    assert report.extracted == 4  # three good ones, and the single frame (repeated, documented)
    assert report.failed == len(bad)
    lines = (tmp_path / "store" / "failures.jsonl").read_text().splitlines()
    recorded = {json.loads(line)["path"]: json.loads(line)["reason"] for line in lines}
    assert set(recorded) == {str(p) for p in bad}
    assert "VideoMissingError" in recorded[str(broken_videos["missing"])]
    assert "NoVideoStreamError" in recorded[str(broken_videos["audio_only"])]
    store = FeatureStore.open(tmp_path / "store")
    assert len(store) == 4 and store.clips_per_video == 4 and store.dim == 8
    assert store.manifest.sampling["mode"] == "test"
    assert store.manifest.clip_frames == 4  # from the backbone's input spec


def test_cli_exit_code_says_whether_any_failed(tmp_path, good_videos, broken_videos):
    listing = write_list(tmp_path / "list.csv", [good_videos[0], broken_videos["text"]])
    args = [
        "-q",
        "extract",
        "--list",
        str(listing),
        "--out",
        str(tmp_path / "s"),
        "--workers",
        "0",
        "--backbone",
        "module",
        "--weights",
        BACKBONE["weights"],
        "--no-progress",
    ]
    assert main(args) == 1
    ok = write_list(tmp_path / "ok.csv", [good_videos[0]])
    args[args.index(str(listing))] = str(ok)
    args[args.index(str(tmp_path / "s"))] = str(tmp_path / "s2")
    assert main(args) == 0


def test_rerun_skips_finished_videos(tmp_path, good_videos):
    first = extract(config(tmp_path, good_videos))
    assert first.extracted == 5
    second = extract(config(tmp_path, good_videos))
    assert second.extracted == 0 and second.skipped_existing == 5


def test_interrupted_run_keeps_finished_work_and_resumes(tmp_path, good_videos, monkeypatch):
    calls = {"n": 0}
    real = extract_module.StoreWriter.add

    def add_then_crash(self, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, **kw)

    monkeypatch.setattr(extract_module.StoreWriter, "add", add_then_crash)
    with pytest.raises(KeyboardInterrupt):
        extract(config(tmp_path, good_videos, batch_size=4))
    monkeypatch.setattr(extract_module.StoreWriter, "add", real)
    kept = len(FeatureStore.open(tmp_path / "store"))
    assert kept == 3
    again = extract(config(tmp_path, good_videos, batch_size=4))
    assert again.skipped_existing == 3 and again.extracted == 2
    assert len(FeatureStore.open(tmp_path / "store")) == 5


def test_batching_across_videos_does_not_change_features(tmp_path, good_videos):
    one = extract(config(tmp_path / "a", good_videos, batch_size=1)).store
    many = extract(config(tmp_path / "b", good_videos, batch_size=7)).store
    a, b = FeatureStore.open(one), FeatureStore.open(many)
    assert a.video_ids == b.video_ids
    np.testing.assert_array_equal(a.features(), b.features())
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_test_split_gets_views(tmp_path, good_videos):
    report = extract(config(tmp_path, good_videos, split="test", temporal_views=2))
    store = FeatureStore.open(report.store)
    assert store.clips_per_video == 6
    assert store.manifest.sampling == {
        "mode": "test",
        "crop_size": 16,
        "temporal_views": 2,
        "spatial_views": 3,
    }


def test_workers_give_the_same_store(tmp_path, good_videos):
    a = FeatureStore.open(extract(config(tmp_path / "a", good_videos)).store)
    b = FeatureStore.open(extract(config(tmp_path / "b", good_videos, workers=2)).store)
    np.testing.assert_array_equal(a.features(), b.features())


@pytest.mark.slow
def test_torchrun_two_ranks_split_the_list(tmp_path, good_videos):
    listing = write_list(tmp_path / "list.csv", good_videos)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    options = ["--list", str(listing), "--out", str(tmp_path / "two"), "--workers", "0"]
    options += ["--num-clips", "4", "--backbone", "module", "--weights", BACKBONE["weights"]]
    cmd = [*torchrun, "-m", "scalevid.cli", "-q", "extract", *options, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = FeatureStore.open(tmp_path / "two")
    one = FeatureStore.open(extract(config(tmp_path / "one", good_videos)).store)
    assert sorted(two.video_ids) == sorted(one.video_ids)
    assert {p.name[:4] for p in (tmp_path / "two" / "shards").iterdir()} == {"r000", "r001"}
    order = [two.video_ids.index(v) for v in one.video_ids]
    np.testing.assert_array_equal(two.features(np.array(order)), one.features())


def test_batch_queue_fills_batches_across_videos_and_returns_whole_videos_in_order():
    class Echo:  # the feature of a clip is its first pixel's red value
        dim = 1
        batches: list[int] = []

        def forward_clips(self, clips: torch.Tensor) -> torch.Tensor:
            self.batches.append(len(clips))
            return clips[:, 0, 0, 0, :1].float()  # (B, 1)

    done = []
    queue = extract_module._BatchQueue(
        Echo(), torch.device("cpu"), batch_size=4, finished=done.append
    )
    for v, k in enumerate([3, 2, 6]):
        item = VideoItem(path=Path(f"v{v}.mp4"), label=v, video_id=f"v{v}")
        values = torch.arange(k, dtype=torch.uint8) + 10 * v
        clips = values.view(k, 1, 1, 1, 1).expand(k, 1, 1, 1, 3)  # (K, T, S, S, 3)
        queue.add(item, clips, np.zeros((k, 7), np.float32))
        assert [job.item.video_id for job in done] == [f"v{i}" for i in range(len(done))]
    assert len(done) == 2 and queue.queued == 3  # two batches ran; 3 clips of v2 wait
    queue.drain()
    assert Echo.batches == [4, 4, 3]
    assert [job.features[:, 0].tolist() for job in done] == [
        [0, 1, 2],
        [10, 11],
        [20, 21, 22, 23, 24, 25],
    ]


# ------------------------------------------------------------------ --compile (torch.compile)

needs_compiler = pytest.mark.skipif(
    not cpp_compiler_available(),
    reason="torch.compile on CPU needs a C++ compiler (g++, clang++ or $CXX); none found",
)


@needs_compiler
def test_compiled_backbone_matches_eager_and_never_recompiles_for_a_partial_batch():
    torch._dynamo.reset()
    counters.clear()
    backbone = create_backbone("module", weights="tests.tiny_backbone:build_conv")
    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (7, 4, 16, 16, 3), generator=gen, dtype=torch.uint8)
    eager = backbone.forward_clips(clips)
    assert backbone.compile_network(4) > 0
    with torch._dynamo.config.patch(error_on_recompile=True):
        outputs = [backbone.forward_clips(c) for c in (clips[:4], clips[4:], clips[:1], clips)]
    assert counters["stats"]["unique_graphs"] == 1  # one graph for batch 4, no recompile
    assert [len(o) for o in outputs] == [4, 3, 1, 7]  # padding rows dropped
    compiled = torch.cat(outputs[:2])
    assert torch.nn.functional.cosine_similarity(compiled, eager, dim=1).min() >= 0.999
    torch.testing.assert_close(outputs[3], eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs[2], eager[:1], rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


@needs_compiler
def test_extract_with_compile_writes_the_eager_features(tmp_path, good_videos):
    torch._dynamo.reset()
    eager = FeatureStore.open(extract(config(tmp_path / "a", good_videos, batch_size=3)).store)
    # 5 videos x 4 clips in batches of 3: the last batch has 2 clips and is padded; the decode
    # workers are forked after the compile (as `scalevid extract` does by default)
    compiled = extract(
        config(tmp_path / "b", good_videos, batch_size=3, compile="on", workers=2)
    ).store
    store = FeatureStore.open(compiled)
    assert store.video_ids == eager.video_ids
    a = torch.from_numpy(eager.features().astype(np.float32))
    b = torch.from_numpy(store.features().astype(np.float32))
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() >= 0.999
    assert json.loads((compiled / "extract-config.json").read_text())["compile"] == "on"
    torch._dynamo.reset()


def test_compile_is_a_runtime_setting_and_a_flag():
    assert "compile" not in result_settings(ExtractConfig(list="l", out="o", compile="on"))
    args = build_parser().parse_args(["extract", "--list", "l", "--out", "o", "--compile"])
    assert args.compile == "on"
    args = build_parser().parse_args(["extract", "--list", "l", "--out", "o", "--no-compile"])
    assert args.compile == "off"
    assert ExtractConfig(list="l", out="o").compile == "auto"
    assert ExtractConfig(list="l", out="o", compile=True).compile == "on"  # YAML `true`
    with pytest.raises(ValueError, match="auto, on or off"):
        ExtractConfig(list="l", out="o", compile="sometimes")


@pytest.mark.parametrize(
    ("setting", "clips", "compiler", "dtype", "compiled"),
    [
        ("auto", 20_000, True, torch.float32, True),  # a big fp32 CPU job: where it pays
        ("auto", 19_999, True, torch.float32, False),  # smaller: the compile would not pay
        ("auto", 50_000, False, torch.float32, False),  # no C++ compiler: eager, no error
        ("auto", 50_000, True, torch.bfloat16, False),  # reduced precision: not measured
        ("off", 50_000, True, torch.float32, False),
        ("on", 10, True, torch.float32, True),
        ("on", 0, True, torch.float32, False),  # nothing left to extract
    ],
)
def test_when_extraction_compiles(monkeypatch, setting, clips, compiler, dtype, compiled):
    backbone = create_backbone("module", weights=BACKBONE["weights"]).to(dtype)
    calls = []
    monkeypatch.setattr(backbone, "compile_network", lambda batch: calls.append(batch) or 1.0)
    monkeypatch.setattr(extract_module, "cpp_compiler_available", lambda: compiler)
    cfg = ExtractConfig(list="l", out="o", compile=setting, batch_size=6)
    extract_module._compile(cfg, backbone, clips=clips)
    assert calls == ([6] if compiled else [])


def test_auto_compile_falls_back_to_eager_when_compiling_fails(monkeypatch, caplog):
    backbone = create_backbone("module", weights=BACKBONE["weights"])

    def fail(batch):
        raise CompileUnavailableError("torch.compile of module failed: no")

    monkeypatch.setattr(backbone, "compile_network", fail)
    monkeypatch.setattr(extract_module, "cpp_compiler_available", lambda: True)
    cfg = ExtractConfig(list="l", out="o")
    extract_module._compile(cfg, backbone, clips=10**6)  # no error: extraction goes on eager
    assert "extracting without torch.compile" in caplog.text
    with pytest.raises(CompileUnavailableError):
        extract_module._compile(ExtractConfig(list="l", out="o", compile="on"), backbone, clips=1)


def test_compile_without_a_compiler_says_so(monkeypatch):
    monkeypatch.setattr(backbone_base, "cpp_compiler_available", lambda: False)
    backbone = create_backbone("module", weights=BACKBONE["weights"])
    with pytest.raises(CompileUnavailableError, match="C\\+\\+ compiler"):
        backbone.compile_network(4)
    assert backbone.compiled_batch is None  # eager as before
