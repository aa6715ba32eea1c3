"""VideoMAE ViT backbones through Hugging Face `transformers` (optional extra `videomae`).

Names: `videomae-base`, `videomae-large` (self-supervised pre-training only) and
`videomae-base-k400` (fine-tuned on Kinetics-400). The feature is the mean of the encoder's last
hidden tokens; the fine-tuned model also applies its `fc_norm`, as its classification head does.
Input: 16 frames of 224x224, ImageNet mean/std, laid out (B, T, 3, H, W).

`weights` is a hub id or a local folder written by `save_pretrained`; a folder is loaded with
`local_files_only=True`, so no network is touched.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalevid.backbones.base import Backbone, BackboneError, InputSpec, WeightsUnavailableError
from scalevid.backbones.registry import register_backbone

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_HUB_IDS = {
    "videomae-base": "MCG-NJU/videomae-base",
    "videomae-large": "MCG-NJU/videomae-large",
    "videomae-base-k400": "MCG-NJU/videomae-base-finetuned-kinetics",
}


class VideoMAE(Backbone):
    """A VideoMAE encoder whose mean-pooled tokens (optionally through `fc_norm`) are the feature."""

    def __init__(
        self,
        encoder: nn.Module,
        fc_norm: nn.Module | None,
        *,
        name: str,
        dim: int,
        input_spec: InputSpec,
        weights_id: str | None,
    ) -> None:
        super().__init__(name=name, dim=dim, input_spec=input_spec, weights_id=weights_id)
        self.encoder = encoder
        self.fc_norm = fc_norm
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) ImageNet-normalised -> (B, D)."""
        tokens = self.encoder(pixel_values=x).last_hidden_state  # (B, N, D)
        pooled = tokens.mean(dim=1)  # (B, D)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled


def _load_pretrained(name: str, weights: str | Path | None, *, finetuned: bool) -> tuple[Any, str]:
    """(transformers model, weights id) from a hub id or a local `save_pretrained` folder."""
    try:
        from transformers import VideoMAEForVideoClassification, VideoMAEModel
    except ImportError as err:
        raise BackboneError(f"{name} needs transformers: pip install 'scalevid[videomae]'") from err
    source = str(weights) if weights is not None else DEFAULT_HUB_IDS[name]
    local = Path(source).expanduser()
    # Hub ids look like "org/name"; anything else path-like must be a local folder, so a typo
    # in a path fails here instead of becoming a hub download.
    is_local = (
        isinstance(weights, Path)
        or local.exists()
        or local.is_absolute()
        or source.startswith((".", "~"))
        or source.count("/") > 1
    )
    if is_local and not local.is_dir():
        raise WeightsUnavailableError(
            f"{name} weights must be a folder written by save_pretrained; {local} is "
            + ("a file" if local.exists() else "missing")
        )
    model_cls = VideoMAEForVideoClassification if finetuned else VideoMAEModel
    try:
        model = model_cls.from_pretrained(
            str(local) if is_local else source, local_files_only=is_local
        )
    except (OSError, ValueError) as err:
        raise WeightsUnavailableError(
            f"could not load {name} from {source!r} ({err}). Without access to the Hugging Face "
            f"hub, download the model folder elsewhere (e.g. `hf download "
            f"{DEFAULT_HUB_IDS[name]} --local-dir DIR`) and pass --weights DIR"
        ) from err
    return model, str(local.resolve()) if is_local else source


def _create_videomae(
    name: str,
    *,
    finetuned: bool,
    weights: str | Path | None = None,
    frame_stride: int = 4,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> VideoMAE:
    """VideoMAE `name` (`weights`: hub id or local folder); `finetuned` models are pooled
    through their fc_norm."""
    model, weights_id = _load_pretrained(name, weights, finetuned=finetuned)
    config = model.config
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    spec = InputSpec(
        frames=config.num_frames,
        size=size,
        mean=mean,
        std=std,
        layout="BTCHW",
        frame_stride=frame_stride,
    )
    if finetuned:
        encoder, fc_norm = model.videomae, model.fc_norm
        if fc_norm is None:
            logger.warning("%s has no fc_norm (use_mean_pooling=False); using plain mean", name)
    else:
        encoder, fc_norm = model, None
    return VideoMAE(
        encoder,
        fc_norm,
        name=name,
        dim=config.hidden_size,
        input_spec=spec,
        weights_id=weights_id,
    )


# Registered names: self-supervised ViT-B/16 (768-d) and ViT-L/16 (1024-d), and ViT-B/16
# fine-tuned on Kinetics-400 (768-d, pooled through fc_norm); hub ids in DEFAULT_HUB_IDS.
FINETUNED = {"videomae-base": False, "videomae-large": False, "videomae-base-k400": True}
for _name, _finetuned in FINETUNED.items():
    register_backbone(_name)(functools.partial(_create_videomae, _name, finetuned=_finetuned))
