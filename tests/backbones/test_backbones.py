"""Backbone registry, InputSpec, the frozen Backbone contract, and the generic/VideoMAE families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from scalevid.backbones import (
    Backbone,
    BackboneError,
    ClipShapeError,
    InputSpec,
    UnknownBackboneError,
    WeightsUnavailableError,
    available_backbones,
    base,
    create_backbone,
    register_backbone,
    registry,
)

TESTS_DIR = Path(__file__).parents[1]


def random_clips(spec: InputSpec, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, spec.frames, spec.size, spec.size, 3)
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


@pytest.fixture
def tiny_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))


# ---------------------------------------------------------------------------------- InputSpec


def test_input_spec_needs_exactly_one_normalisation() -> None:
    with pytest.raises(ValueError):
        InputSpec(frames=16, size=224)
    with pytest.raises(ValueError):
        InputSpec(frames=16, size=224, value_range=(-1, 1), mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ValueError):
        InputSpec(frames=16, size=224, mean=(0.5,) * 3)
    with pytest.raises(ValueError):
        InputSpec(frames=16, size=224, mean=(0.5,) * 3, std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        InputSpec(frames=0, size=224, value_range=(-1, 1))


def test_input_spec_dict_round_trip_is_json() -> None:
    spec = InputSpec(frames=16, size=224, mean=[0.4, 0.5, 0.6], std=[0.2, 0.2, 0.2], layout="BTCHW")
    assert spec.mean == (0.4, 0.5, 0.6)  # lists become tuples
    data = json.loads(json.dumps(spec.to_dict()))
    assert "(x/255-mean)/std" in data["preprocess"]
    assert InputSpec.from_dict(data) == spec
    assert hash(spec) == hash(InputSpec.from_dict(data))


def test_normalize_value_range_and_layouts() -> None:
    spec = InputSpec(frames=2, size=3, value_range=(-1.0, 1.0), layout="BCTHW")
    clips = torch.zeros(1, 2, 3, 3, 3, dtype=torch.uint8)
    clips[..., 0] = 255
    clips[..., 1] = 0
    clips[..., 2] = 51  # 51/127.5 - 1 = -0.6
    x = spec.normalize(clips)
    assert x.shape == (1, 3, 2, 3, 3) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.tensor(1.0))
    assert torch.allclose(x[:, 1], torch.tensor(-1.0))
    assert torch.allclose(x[:, 2], torch.tensor(-0.6))
    btchw = InputSpec(frames=2, size=3, value_range=(-1.0, 1.0), layout="BTCHW").normalize(clips)
    assert btchw.shape == (1, 2, 3, 3, 3)
    assert torch.equal(btchw, x.permute(0, 2, 1, 3, 4))
    bthwc = InputSpec(frames=2, size=3, value_range=(0.0, 1.0), layout="BTHWC").normalize(clips)
    assert torch.allclose(bthwc, clips.float() / 255)
    assert spec.normalize(clips, dtype=torch.float16).dtype == torch.float16


def test_normalize_mean_std_and_bgr() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = InputSpec(frames=1, size=2, mean=mean, std=std, layout="BTHWC")
    clips = torch.randint(0, 256, (2, 1, 2, 2, 3), dtype=torch.uint8)
    expected = (clips.float() / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(spec.normalize(clips), expected, atol=1e-6)
    bgr = InputSpec(frames=1, size=2, value_range=(0, 255), channel_order="bgr", layout="BTHWC")
    assert torch.allclose(bgr.normalize(clips), clips.flip(-1).float())


def test_normalize_channels_last_3d_keeps_values() -> None:
    spec = InputSpec(frames=2, size=3, value_range=(-1.0, 1.0))
    clips = torch.randint(0, 256, (2, 2, 3, 3, 3), dtype=torch.uint8)
    x = spec.normalize(clips, dtype=torch.bfloat16, memory_format=torch.channels_last_3d)
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(x, spec.normalize(clips, dtype=torch.bfloat16))


def test_auto_precision_per_device_and_family(monkeypatch: pytest.MonkeyPatch) -> None:
    for has_bf16 in (True, False):
        monkeypatch.setattr(base, "cpu_has_bf16_matmul", lambda v=has_bf16: v)
        # bf16 only for families that allow it, and only on CPUs with bf16 units
        expected = torch.bfloat16 if has_bf16 else torch.float32
        assert base.compute_dtype("cpu", "auto", bf16_on_cpu=True) == expected
        assert base.compute_dtype("cpu", "auto") == torch.float32
        assert base.compute_dtype("cpu", "fp32", bf16_on_cpu=True) == torch.float32
        assert base.compute_dtype("cuda", "auto", bf16_on_cpu=True) == torch.float16


def test_check_clips_rejects_wrong_shape_and_dtype() -> None:
    spec = InputSpec(frames=4, size=8, value_range=(-1, 1))
    spec.check_clips(torch.zeros(3, 4, 8, 8, 3, dtype=torch.uint8))
    for bad in (
        torch.zeros(3, 4, 8, 8, 3),  # float
        torch.zeros(3, 5, 8, 8, 3, dtype=torch.uint8),  # frames
        torch.zeros(3, 4, 8, 9, 3, dtype=torch.uint8),  # size
        torch.zeros(3, 3, 4, 8, 8, dtype=torch.uint8),  # channels first
        torch.zeros(4, 8, 8, 3, dtype=torch.uint8),  # no batch axis
    ):
        with pytest.raises(ClipShapeError):
            spec.check_clips(bad)


# ---------------------------------------------------------------------------------- registry


def test_available_backbones_lists_all_families() -> None:
    names = available_backbones()
    for name in (
        "i3d",
        "videomae-base",
        "videomae-large",
        "videomae-base-k400",
        "torchscript",
        "module",
    ):
        assert name in names
    assert names == sorted(names)


def test_unknown_backbone_is_a_typed_error() -> None:
    with pytest.raises(UnknownBackboneError, match="available"):
        create_backbone("no-such-backbone")


def test_register_backbone_and_duplicate_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Constant(Backbone):
        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], self.dim, dtype=x.dtype, device=x.device)

    @register_backbone("constant-test")
    def make(*, weights: str | None = None, dim: int = 3) -> Backbone:
        spec = InputSpec(frames=2, size=4, value_range=(0, 1))
        return Constant(name="constant-test", dim=dim, input_spec=spec)

    assert "constant-test" in available_backbones()
    backbone = create_backbone("constant-test", dim=5)
    assert backbone.forward_clips(random_clips(backbone.input_spec)).shape == (2, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("constant-test")(lambda **kw: None)


# ------------------------------------------------------------------ Backbone contract (module)


def test_module_backbone_from_tuple_factory(tiny_import: None) -> None:
    import tiny_backbone

    backbone = create_backbone("module", target="tiny_backbone:build_pair", width=6)
    assert backbone.dim == 6 and backbone.name == "module"
    spec = backbone.input_spec
    assert (spec.frames, spec.size, spec.value_range) == (4, 16, (-1.0, 1.0))
    clips = random_clips(spec)
    feats = backbone.forward_clips(clips)
    assert feats.shape == (2, 6) and feats.dtype == torch.float32
    reference = tiny_backbone.build_pair(6)[0]
    with torch.no_grad():
        expected = reference(clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1)
    assert torch.allclose(feats, expected, atol=1e-6)


def test_module_backbone_with_spec_attribute_via_weights(tiny_import: None) -> None:
    backbone = create_backbone("module", weights="tiny_backbone:build_with_attribute")
    assert backbone.dim == 8
    assert (backbone.input_spec.frames, backbone.input_spec.size) == (2, 8)
    assert backbone.input_spec.std == (0.25,) * 3
    assert backbone.forward_clips(random_clips(backbone.input_spec, batch=3)).shape == (3, 8)


def test_module_backbone_errors(tiny_import: None) -> None:
    with pytest.raises(BackboneError, match="input_spec"):
        create_backbone("module", target="tiny_backbone:build_bad")
    with pytest.raises(BackboneError, match="no attribute"):
        create_backbone("module", target="tiny_backbone:missing")
    with pytest.raises(BackboneError, match="cannot import"):
        create_backbone("module", target="no_such_module_xyz:build")
    with pytest.raises(BackboneError, match="package.module:function"):
        create_backbone("module", target="tiny_backbone")
    with pytest.raises(BackboneError, match="dim=5"):
        create_backbone("module", target="tiny_backbone:build_pair", dim=5)


def test_backbone_is_frozen_and_fp32_on_cpu(tiny_import: None) -> None:
    backbone = create_backbone("module", target="tiny_backbone:build_pair")
    assert not backbone.training
    assert all(not p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert backbone.dtype == torch.float32 and backbone.device == torch.device("cpu")
    assert all(p.dtype == torch.float32 for p in backbone.parameters())
    feats = backbone.forward_clips(random_clips(backbone.input_spec))
    assert not feats.requires_grad and not feats.is_inference()  # usable with autograd later
    with pytest.raises(ClipShapeError):
        backbone.forward_clips(torch.zeros(1, 4, 16, 16, 3))  # float, not uint8


def test_precision_override_and_to(tiny_import: None) -> None:
    backbone = create_backbone("module", target="tiny_backbone:build_pair", precision="bf16")
    assert backbone.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in backbone.parameters())
    feats = backbone.forward_clips(random_clips(backbone.input_spec))
    assert feats.dtype == torch.float32  # outputs are always float32
    backbone.precision = "auto"
    backbone.to("cpu")  # auto on CPU -> fp32 again
    assert backbone.dtype == torch.float32
    backbone.to(torch.float64)  # an explicit dtype wins over precision
    assert backbone.dtype == torch.float64
    with pytest.raises(ValueError):
        create_backbone("module", target="tiny_backbone:build_pair", precision="fp8")


def test_preprocessing_is_json_ready(tiny_import: None) -> None:
    backbone = create_backbone("module", target="tiny_backbone:build_pair")
    info = json.loads(json.dumps(backbone.preprocessing()))
    assert info["backbone"] == "module" and info["dim"] == 8
    assert info["weights"] == "tiny_backbone:build_pair"
    assert info["dtype"] == "float32"
    assert InputSpec.from_dict(info["input"]) == backbone.input_spec


# ---------------------------------------------------------------------------------- torchscript


class _Pool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, 3, H, W)
        return self.proj(x.mean(dim=(1, 3, 4)))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_backbone(tmp_path: Path) -> None:
    module = _Pool().eval()
    path = tmp_path / "pool.pt"
    torch.jit.script(module).save(str(path))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)
    backbone = create_backbone(
        "torchscript", weights=path, frames=3, size=8, mean=mean, std=std, layout="BTCHW"
    )
    assert backbone.dim == 5  # inferred by a dummy forward
    clips = random_clips(backbone.input_spec)
    x = (clips.float() / 255 - torch.tensor(mean)) / torch.tensor(std)  # (B, T, H, W, 3)
    with torch.no_grad():
        expected = module(x.permute(0, 1, 4, 2, 3))
    assert torch.allclose(backbone.forward_clips(clips), expected, atol=1e-5)
    assert backbone.preprocessing()["weights"] == str(path.resolve())


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="--weights"):
        create_backbone("torchscript", frames=2, size=4, value_range=(0, 1))
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_backbone(
            "torchscript", weights=tmp_path / "x.pt", frames=2, size=4, value_range=(0, 1)
        )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(WeightsUnavailableError):
        create_backbone("torchscript", weights=bad, frames=2, size=4, value_range=(0, 1))


# ---------------------------------------------------------------------------------- VideoMAE


def _tiny_videomae_config(**overrides: object):
    transformers = pytest.importorskip("transformers")
    kwargs = dict(
        image_size=32,
        patch_size=16,
        num_frames=4,
        tubelet_size=2,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
    )
    kwargs.update(overrides)
    return transformers, transformers.VideoMAEConfig(**kwargs)


def _reference_input(backbone: Backbone, clips: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor((0.485, 0.456, 0.406))
    std = torch.tensor((0.229, 0.224, 0.225))
    x = (clips.float() / 255 - mean) / std  # (B, T, H, W, 3)
    return x.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)


def test_videomae_base_mean_pools_tokens(tmp_path: Path) -> None:
    transformers, config = _tiny_videomae_config(use_mean_pooling=False)
    torch.manual_seed(0)
    model = transformers.VideoMAEModel(config).eval()
    model.save_pretrained(tmp_path)
    backbone = create_backbone("videomae-base", weights=tmp_path)
    assert backbone.dim == 24
    spec = backbone.input_spec
    assert (spec.frames, spec.size, spec.layout) == (4, 32, "BTCHW")
    assert backbone.weights_id == str(tmp_path.resolve())
    clips = random_clips(spec)
    with torch.no_grad():
        tokens = model(pixel_values=_reference_input(backbone, clips)).last_hidden_state
    assert tokens.shape == (2, 2 * 2 * 2, 24)  # (B, T/2 * (32/16)^2, D)
    feats = backbone.forward_clips(clips)
    assert torch.allclose(feats, tokens.mean(dim=1), atol=1e-5)


def test_videomae_k400_pools_through_fc_norm(tmp_path: Path) -> None:
    transformers, config = _tiny_videomae_config(num_labels=5)
    torch.manual_seed(0)
    model = transformers.VideoMAEForVideoClassification(config).eval()
    with torch.no_grad():  # a non-trivial fc_norm, so skipping it would show
        model.fc_norm.weight.uniform_(0.5, 2.0)
        model.fc_norm.bias.uniform_(-1.0, 1.0)
    model.save_pretrained(tmp_path)
    backbone = create_backbone("videomae-base-k400", weights=str(tmp_path))
    clips = random_clips(backbone.input_spec, seed=3)
    with torch.no_grad():
        x = _reference_input(backbone, clips)
        tokens = model.videomae(pixel_values=x).last_hidden_state  # (B, N, D)
        expected = model.fc_norm(tokens.mean(dim=1))
        logits = model(pixel_values=x).logits
    feats = backbone.forward_clips(clips)
    assert torch.allclose(feats, expected, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model.classifier(feats), logits, atol=1e-5)


def test_videomae_missing_local_weights_fail_without_network(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(WeightsUnavailableError, match="missing"):
        create_backbone("videomae-base", weights=tmp_path / "nope")
    file = tmp_path / "model.bin"
    file.write_bytes(b"")
    with pytest.raises(WeightsUnavailableError, match="a file"):
        create_backbone("videomae-large", weights=file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match="--weights"):
        create_backbone("videomae-base", weights=empty)
