"""Frozen video backbones: clips of uint8 RGB frames in, one feature vector per clip out.

Every backbone is a `Backbone`: an always-frozen `nn.Module` that declares its feature `dim`
and an `InputSpec` (frames, crop size, normalisation, layout), and maps uint8 clips
(B, T, H, W, 3) to float32 features (B, dim) in `forward_clips`, normalising them itself.

Backbones are built by name through a registry:

    >>> from scalevid.backbones import create_backbone
    >>> backbone = create_backbone("i3d", device="cuda")  # fp16 on CUDA (see compute_dtype)
    >>> feats = backbone.forward_clips(clips)  # (B, 16, 224, 224, 3) uint8 -> (B, 1024)

`base.py` holds what every backbone is, `registry.py` the names. One file per family registers
its names: `i3d.py` (i3d), `videomae.py` (videomae-base, videomae-large, videomae-base-k400) and
`generic.py` (torchscript, module). They are imported on the first registry query, so importing
this package stays cheap.
"""

from scalevid.backbones.base import (
    Backbone,
    BackboneError,
    ClipShapeError,
    CompileUnavailableError,
    InputSpec,
    Layout,
    Precision,
    UnknownBackboneError,
    WeightsUnavailableError,
    compute_dtype,
    cpp_compiler_available,
    weights_cache_dir,
)
from scalevid.backbones.registry import available_backbones, create_backbone, register_backbone

__all__ = [
    "Backbone",
    "BackboneError",
    "ClipShapeError",
    "CompileUnavailableError",
    "InputSpec",
    "Layout",
    "Precision",
    "UnknownBackboneError",
    "WeightsUnavailableError",
    "available_backbones",
    "compute_dtype",
    "cpp_compiler_available",
    "create_backbone",
    "register_backbone",
    "weights_cache_dir",
]
