"""The backbone registry: names -> factories. Each family module registers its names with
`register_backbone` when imported; the built-in families are imported on the first query."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scalevid.backbones.base import Backbone, Precision, UnknownBackboneError, compute_dtype

logger = logging.getLogger(__name__)

_BUILTIN_FAMILIES = (
    "scalevid.backbones.i3d",
    "scalevid.backbones.videomae",
    "scalevid.backbones.generic",
)


BackboneFactory = Callable[..., Backbone]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering `factory(*, weights=None, **kwargs) -> Backbone` under `name`."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def _load_builtin_families() -> None:
    for module in _BUILTIN_FAMILIES:
        importlib.import_module(module)


def available_backbones() -> list[str]:
    """Sorted names accepted by `create_backbone`."""
    _load_builtin_families()
    return sorted(_REGISTRY)


def create_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    precision: Precision = "auto",
    **kwargs: Any,
) -> Backbone:
    """Build a frozen backbone by registry name and move it to `device`.

    Args:
        name: one of `available_backbones()`.
        weights: a local file or folder (or hub id / "pkg.mod:fn" where the family takes one);
            None means the family's default, downloaded and cached where it can be.
        device: where it runs.
        precision: "auto" (fp16 on CUDA; bf16 on CPUs with bf16 units where the family allows
            it, else fp32: see `compute_dtype`), "fp32" (exact features), "fp16" or "bf16".
        **kwargs: family options, e.g. `frames`, `size`.
    """
    _load_builtin_families()
    if name not in _REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    compute_dtype(device, precision)  # validate before any download
    backbone = _REGISTRY[name](weights=weights, **kwargs)
    backbone.precision = precision
    backbone.freeze()
    backbone.to(device)
    logger.info(
        "backbone %s: dim=%d, %s, %s on %s",
        name,
        backbone.dim,
        backbone.input_spec.describe(),
        backbone.dtype,
        backbone.device,
    )
    return backbone
