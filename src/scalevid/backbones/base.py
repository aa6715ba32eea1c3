"""What every backbone is: an always-frozen `nn.Module` with a feature `dim` and an `InputSpec`,
the typed errors, and the choice of compute dtype."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from scalevid.hardware import cpu_has_bf16_matmul

logger = logging.getLogger(__name__)

Layout = Literal["BCTHW", "BTCHW", "BTHWC"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]


class BackboneError(RuntimeError):
    """Base class for backbone errors."""


class UnknownBackboneError(BackboneError, ValueError):
    """No backbone is registered under the requested name."""


class WeightsUnavailableError(BackboneError):
    """Weights could not be found, downloaded, verified or parsed."""


class ClipShapeError(BackboneError, ValueError):
    """Clips do not have the shape or dtype the backbone's `InputSpec` asks for."""


class CompileUnavailableError(BackboneError):
    """`torch.compile` cannot build the backbone on this machine (no C++ compiler for the CPU
    kernels, or the compiler failed); extract without `compile`."""


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects, and how `normalize` turns uint8 clips into its input.

    Exactly one normalisation is given: `value_range=(lo, hi)` maps 0..255 linearly onto
    [lo, hi]; `mean`/`std` (per channel, in the 0..1 scale) apply `(x / 255 - mean) / std`.

    Attributes:
        frames: frames per clip, T.
        size: side of the square crop, H = W, in pixels.
        value_range: (lo, hi) the pixel values are mapped onto, or None.
        mean: per-channel mean (0..1 scale, in `channel_order`), or None.
        std: per-channel std (0..1 scale, in `channel_order`), or None.
        channel_order: channel order the network was trained on; clips are always given as RGB.
        layout: axis order of the normalised tensor handed to the network.
        frame_stride: recommended step between sampled source frames (the clip sampler's
            default; not used by the backbone itself).
    """

    frames: int
    size: int
    value_range: tuple[float, float] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: Literal["rgb", "bgr"] = "rgb"
    layout: Layout = "BCTHW"
    frame_stride: int = 4

    def __post_init__(self) -> None:
        # Accept lists (from JSON or YAML) but store tuples so the spec stays hashable.
        for field in ("value_range", "mean", "std"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, tuple(float(v) for v in value))
        if self.frames < 1 or self.size < 1 or self.frame_stride < 1:
            raise ValueError(f"frames, size and frame_stride must be >= 1, got {self}")
        has_range = self.value_range is not None
        has_stats = self.mean is not None or self.std is not None
        if has_range == has_stats:
            raise ValueError("give exactly one of value_range or mean/std")
        if has_range and len(self.value_range) != 2:
            raise ValueError(f"value_range must be (lo, hi), got {self.value_range}")
        if has_stats:
            if self.mean is None or self.std is None or len(self.mean) != 3 or len(self.std) != 3:
                raise ValueError(f"mean and std need 3 values each, got {self.mean}, {self.std}")
            if min(self.std) <= 0:
                raise ValueError(f"std must be positive, got {self.std}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        if self.layout not in ("BCTHW", "BTCHW", "BTHWC"):
            raise ValueError(f"unknown layout {self.layout!r}")

    def describe(self) -> str:
        """One line saying what `normalize` does, for manifests and logs."""
        steps = ["uint8 RGB (B,T,H,W,3)"]
        if self.channel_order == "bgr":
            steps.append("RGB->BGR")
        if self.value_range is not None:
            lo, hi = self.value_range
            steps.append(f"linear 0..255 -> [{lo:g},{hi:g}]")
        else:
            steps.append(f"(x/255-mean)/std, mean={list(self.mean)}, std={list(self.std)}")
        shape = {"BCTHW": "(B,3,T,H,W)", "BTCHW": "(B,T,3,H,W)", "BTHWC": "(B,T,H,W,3)"}
        steps.append(f"float {shape[self.layout]}")
        return " -> ".join(steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples) plus a `preprocess` description line."""
        out: dict[str, Any] = asdict(self)
        for field in ("value_range", "mean", "std"):
            if out[field] is not None:
                out[field] = list(out[field])
        out["preprocess"] = self.describe()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of `to_dict` (the `preprocess` line is ignored)."""
        return cls(**{k: v for k, v in data.items() if k != "preprocess"})

    def check_clips(self, clips: torch.Tensor) -> None:
        """Raise `ClipShapeError` unless clips is uint8 (B, frames, size, size, 3)."""
        if not isinstance(clips, torch.Tensor):
            raise ClipShapeError(f"clips must be a torch.Tensor, got {type(clips).__name__}")
        if clips.dtype != torch.uint8:
            raise ClipShapeError(f"clips must be uint8 RGB, got {clips.dtype}")
        expected = (self.frames, self.size, self.size, 3)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            raise ClipShapeError(
                f"clips must be (B, {', '.join(map(str, expected))}), got {tuple(clips.shape)}"
            )

    def normalize(
        self,
        clips: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """uint8 RGB clips (B, T, H, W, 3) -> normalised `dtype` tensor in `layout`.

        The arithmetic is done in float32 and cast to `dtype` at the end. `memory_format`
        `torch.channels_last_3d` keeps the channels innermost (for BCTHW that is the clips' own
        order, so it costs no transpose).
        """
        x = clips.float()  # (B, T, H, W, 3)
        if self.channel_order == "bgr":
            x = x.flip(-1)
        if self.value_range is not None:
            lo, hi = self.value_range
            x = x * ((hi - lo) / 255.0) + lo
        else:
            mean = torch.tensor(self.mean, device=x.device)
            std = torch.tensor(self.std, device=x.device)
            x = (x / 255.0 - mean) / std
        if self.layout == "BCTHW":
            x = x.permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
        elif self.layout == "BTCHW":
            x = x.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        return x.to(dtype).contiguous(memory_format=memory_format)


def compute_dtype(
    device: torch.device | str, precision: Precision = "auto", *, bf16_on_cpu: bool = False
) -> torch.dtype:
    """The dtype a backbone runs in. `auto` is fp16 on CUDA; on CPU it is bf16 when the backbone
    allows it (`bf16_on_cpu`, for families whose bf16 features were checked against fp32) and
    the CPU has bf16 matrix units (`hardware.cpu_has_bf16_matmul`, as for training), else fp32.
    Without those units bf16 convolutions are emulated and many times slower than fp32."""
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and bf16_on_cpu and cpu_has_bf16_matmul():
            return torch.bfloat16
        return torch.float32
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of auto/fp32/fp16/bf16, got {precision!r}")
    return dtypes[precision]


def cpp_compiler_available() -> bool:
    """Whether inductor can find a C++ compiler for CPU kernels ($CXX, g++, clang++, c++)."""
    names = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
    return any(name and shutil.which(name) for name in names)


def weights_cache_dir() -> Path:
    """Where converted weights are cached: `$SCALEVID_CACHE`, else `~/.cache/scalevid`."""
    root = os.environ.get("SCALEVID_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "scalevid"


class Backbone(nn.Module):
    """A frozen feature extractor: uint8 clips (B, T, H, W, 3) -> float32 features (B, dim).

    Subclasses implement `embed` on already-normalised input. The module is always in eval
    mode with `requires_grad=False` and runs under `torch.inference_mode`. With
    `precision="auto"`, `.to(device)` also casts the weights (see `compute_dtype`) and puts them
    in the family's `memory_format`.

    Attributes:
        name: registry name, e.g. "i3d".
        dim: feature dimension D.
        input_spec: the clips it takes and how they are normalised.
        precision: "auto", "fp32", "fp16" or "bf16".
        weights_id: where the weights came from (path, hub id, checksum), for manifests.
        bf16_on_cpu: whether `auto` precision may pick bf16 on CPUs with bf16 units (a family
            sets it once its bf16 features are shown to match fp32; see `compute_dtype`).
        memory_format: the layout of 5-D weights and of the normalised clips
            (`torch.channels_last_3d` suits 3-D convolutions on CPU and CUDA).
    """

    bf16_on_cpu: ClassVar[bool] = False
    memory_format: ClassVar[torch.memory_format] = torch.contiguous_format

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        input_spec: InputSpec,
        precision: Precision = "auto",
        weights_id: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.dim = int(dim)
        self.input_spec = input_spec
        self.precision: Precision = precision
        self.weights_id = weights_id
        # Tracks the module's device and dtype even when the wrapped network has no parameters.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        # Set by `compile_network`: the compiled `embed` and the one batch size it runs.
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.compiled_batch: int | None = None

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the network computes in."""
        return self._anchor.dtype

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input in `input_spec.layout` (on device, in `dtype`) -> (B, dim)."""
        raise NotImplementedError

    def freeze(self) -> Backbone:
        """Eval mode and no gradients; returns self."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        """Backbones stay in eval mode: `train()` is a no-op that keeps BatchNorm stats frozen."""
        if mode:
            logger.debug("%s backbone is frozen; ignoring train(True)", self.name)
        return super().train(False)

    def to(self, *args: Any, **kwargs: Any) -> Backbone:
        """`nn.Module.to`, then (unless a dtype was given) the dtype `precision` asks for."""
        explicit_dtype = "dtype" in kwargs or any(
            isinstance(a, torch.dtype | torch.Tensor) for a in args
        )
        super().to(*args, **kwargs)
        if not explicit_dtype:
            dtype = compute_dtype(self.device, self.precision, bf16_on_cpu=self.bf16_on_cpu)
            super().to(dtype=dtype)
        if self.memory_format != torch.contiguous_format:
            super().to(memory_format=self.memory_format)
        return self

    def prepare_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """Check and normalise uint8 clips (B, T, H, W, 3) onto the device and dtype."""
        self.input_spec.check_clips(clips)
        clips = clips.to(self.device, non_blocking=True)
        return self.input_spec.normalize(clips, dtype=self.dtype, memory_format=self.memory_format)

    def forward_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 RGB clips (B, T, H, W, 3) -> float32 features (B, dim) on the device."""
        with torch.inference_mode():
            if self._compiled is None:
                features = self.embed(self.prepare_clips(clips))  # (B, dim)
            else:
                features = self._embed_compiled(self.prepare_clips(clips))
        if features.shape != (clips.shape[0], self.dim):
            raise BackboneError(
                f"{self.name} returned {tuple(features.shape)}, expected ({clips.shape[0]}, {self.dim})"
            )
        # A clone made outside inference mode is an ordinary tensor, usable with autograd.
        return features.float().clone()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.forward_clips(clips)

    def compile_network(self, batch_size: int) -> float:
        """`torch.compile` `embed` once for batches of exactly `batch_size` clips, on the
        current device, dtype and input size; returns the seconds compiling took.

        Static shapes (`dynamic=False`); on CPU inductor's `freezing` (the weights become
        constants, so it folds and pre-packs them). `forward_clips` then pads every smaller
        batch with zero clips to `batch_size` (and drops their features) and splits larger
        ones, so the graph never recompiles, e.g. for the last, partial batch of a run. The
        compiled features are within cosine 0.999 per clip of eager ones (tests/test_extract.py);
        it pays only over many clips (docs/performance.md). Raises `CompileUnavailableError`
        where inductor cannot build kernels (no C++ compiler on a CPU machine)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.device.type == "cpu" and not cpp_compiler_available():
            raise CompileUnavailableError(
                "torch.compile needs a C++ compiler for CPU kernels (g++ or clang++, or $CXX); "
                "none was found: install one or extract without --compile"
            )
        options = {"freezing": True} if self.device.type == "cpu" else None
        self._compiled = torch.compile(self.embed, dynamic=False, options=options)
        self.compiled_batch = int(batch_size)
        spec = self.input_spec
        zeros = torch.zeros((batch_size, spec.frames, spec.size, spec.size, 3), dtype=torch.uint8)
        start = time.perf_counter()
        try:
            self.forward_clips(zeros)  # compiles now, not in the middle of a run
        except Exception as err:
            self._compiled, self.compiled_batch = None, None
            raise CompileUnavailableError(f"torch.compile of {self.name} failed: {err}") from err
        seconds = time.perf_counter() - start
        logger.info(
            "compiled %s for batches of %d on %s (%s) in %.1f s",
            self.name,
            batch_size,
            self.device,
            str(self.dtype).removeprefix("torch."),
            seconds,
        )
        return seconds

    def _embed_compiled(self, x: torch.Tensor) -> torch.Tensor:
        """The compiled `embed` on batches of exactly `compiled_batch` (zero-padded, split)."""
        n, size = len(x), self.compiled_batch
        out = []
        for start in range(0, n, size):
            part = x[start : start + size]
            if len(part) < size:
                pad = part.new_zeros((size - len(part), *part.shape[1:]))
                part = torch.cat([part, pad]).contiguous(memory_format=self.memory_format)
            out.append(self._compiled(part)[: min(size, n - start)])
        return out[0] if len(out) == 1 else torch.cat(out)

    def preprocessing(self) -> dict[str, Any]:
        """JSON-ready description for the feature-store manifest."""
        return {
            "backbone": self.name,
            "dim": self.dim,
            "weights": self.weights_id,
            "dtype": str(self.dtype).removeprefix("torch."),
            "input": self.input_spec.to_dict(),
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, input={self.input_spec.describe()!r}"
