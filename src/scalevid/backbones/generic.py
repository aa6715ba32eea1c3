"""Escape hatches for backbones scalevid does not ship: a TorchScript file or a Python factory.

`torchscript`: `weights=PATH` to a `torch.jit.save`d module plus the input spec as keyword
arguments (frames, size, mean/std or value_range, layout, ...); `dim` is found by one dummy
forward when not given.

`module`: `target="pkg.mod:function"` (or `weights="pkg.mod:function"`, handy from the CLI),
where `function(**kwargs)` returns `(module, InputSpec)` or a module carrying `.input_spec`.

Either way the network takes the normalised tensor in `layout` and returns (B, dim).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalevid.backbones.base import (
    Backbone,
    BackboneError,
    InputSpec,
    Layout,
    WeightsUnavailableError,
)
from scalevid.backbones.registry import register_backbone

logger = logging.getLogger(__name__)


class WrappedBackbone(Backbone):
    """Any module mapping normalised input in `input_spec.layout` to (B, dim)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        input_spec: InputSpec,
        dim: int | None = None,
        weights_id: str | None = None,
    ) -> None:
        inferred = infer_dim(module, input_spec)
        if dim is not None and dim != inferred:
            raise BackboneError(f"{name}: dim={dim} given but the module returns {inferred}")
        super().__init__(name=name, dim=inferred, input_spec=input_spec, weights_id=weights_id)
        self.module = module
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)  # (B, dim)


def infer_dim(module: nn.Module, spec: InputSpec) -> int:
    """Feature size from one forward of a black clip (1, T, S, S, 3) on the module's device."""
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    clips = torch.zeros(1, spec.frames, spec.size, spec.size, 3, dtype=torch.uint8, device=device)
    module.eval()
    with torch.inference_mode():
        out = module(spec.normalize(clips, dtype=dtype))
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BackboneError(f"the module must return one (B, dim) tensor, got {shape}")
    return int(out.shape[1])


@register_backbone("torchscript")
def create_torchscript(
    *,
    weights: str | Path | None = None,
    frames: int,
    size: int,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    value_range: tuple[float, float] | None = None,
    layout: Layout = "BCTHW",
    channel_order: str = "rgb",
    frame_stride: int = 4,
    dim: int | None = None,
) -> WrappedBackbone:
    """A TorchScript module from `weights` with the given input spec (see `InputSpec`)."""
    if weights is None:
        raise WeightsUnavailableError("the torchscript backbone needs --weights PATH to a .pt file")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"TorchScript file not found: {path}")
    spec = InputSpec(
        frames=frames,
        size=size,
        mean=mean,
        std=std,
        value_range=value_range,
        layout=layout,
        channel_order=channel_order,  # type: ignore[arg-type]
        frame_stride=frame_stride,
    )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise WeightsUnavailableError(f"could not load TorchScript file {path}: {err}") from err
    return WrappedBackbone(
        module, name="torchscript", input_spec=spec, dim=dim, weights_id=str(path.resolve())
    )


def resolve_target(target: str) -> Any:
    """Resolve "pkg.mod:attr.sub" to the object; `BackboneError` says what went wrong."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise BackboneError(f"expected 'package.module:function', got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise BackboneError(
            f"cannot import {module_name!r} for backbone {target!r}: {err}"
        ) from err
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise BackboneError(f"{module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, attr)
    return obj


@register_backbone("module")
def create_module(
    *,
    weights: str | Path | None = None,
    target: str | None = None,
    dim: int | None = None,
    **factory_kwargs: Any,
) -> WrappedBackbone:
    """`target()` -> (module, InputSpec) or a module with `.input_spec` (an InputSpec or dict).

    With no `target`, `weights` is taken as the target; with both, `weights` is passed on to the
    factory as `weights=`. Remaining keyword arguments go to the factory too.
    """
    if target is None:
        if weights is None:
            raise BackboneError("the module backbone needs target='package.module:function'")
        target = str(weights)
    elif weights is not None:
        factory_kwargs["weights"] = weights
    factory = resolve_target(target)
    if not callable(factory):
        raise BackboneError(f"{target!r} is not callable")
    result = factory(**factory_kwargs)
    if isinstance(result, tuple) and len(result) == 2:
        module, spec = result
    else:
        module, spec = result, getattr(result, "input_spec", None)
    if isinstance(spec, dict):
        spec = InputSpec.from_dict(spec)
    if not isinstance(module, nn.Module) or not isinstance(spec, InputSpec):
        raise BackboneError(
            f"{target!r} must return (nn.Module, InputSpec) or an nn.Module with .input_spec"
        )
    return WrappedBackbone(module, name="module", input_spec=spec, dim=dim, weights_id=target)
