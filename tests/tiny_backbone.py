"""Factories for the `module` backbone tests ("tiny_backbone:build_pair" and friends)."""

from __future__ import annotations

import torch
from torch import nn

from scalevid.backbones import InputSpec


class MeanLinear(nn.Module):
    """(B, 3, T, H, W) -> mean over T, H, W -> Linear -> (B, dim)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3, 4)))


def build_pair(width: int = 8) -> tuple[nn.Module, InputSpec]:
    """Returns (module, spec)."""
    return MeanLinear(width), InputSpec(frames=4, size=16, value_range=(-1.0, 1.0))


def build_with_attribute(width: int = 8) -> nn.Module:
    """Returns a module carrying its spec as a dict (as loaded from a manifest)."""
    module = MeanLinear(width)
    module.input_spec = InputSpec(frames=2, size=8, mean=(0.5,) * 3, std=(0.25,) * 3).to_dict()
    return module


def build_bad() -> nn.Module:
    """No input spec at all."""
    return MeanLinear()


class TinyConv(nn.Module):
    """(B, 3, T, H, W) -> two 3-D convolutions, ReLU, max pool, mean -> Linear -> (B, dim): the
    kinds of layer I3D has, small enough to compile in seconds."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv3d(3, 8, 3, padding=1),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.proj = nn.Linear(16, dim)
        with torch.no_grad():  # non-trivial frozen statistics, as in a trained network
            self.net[1].running_mean.uniform_(-0.5, 0.5)
            self.net[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.net(x).mean(dim=(2, 3, 4)))


def build_conv(width: int = 8) -> tuple[nn.Module, InputSpec]:
    """Returns (TinyConv, spec) for 4 x 16 px clips."""
    return TinyConv(width), InputSpec(frames=4, size=16, value_range=(-1.0, 1.0))
