"""The store's arrays as the trainer reads them: resident on the device, or memory-mapped."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from scalevid.store import FeatureStore
from scalevid.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainData:
    """The store's arrays as the trainer uses them: boxes and clip counts always on the device;
    features on the device when `resident`, else gathered from the memory map per step."""

    store: FeatureStore | None  # None when `features` holds everything
    boxes: torch.Tensor  # (N, K, 7) float32
    num_clips: torch.Tensor  # (N,) int64
    features: torch.Tensor | None  # (N, K, D) float16 when resident

    def __len__(self) -> int:
        return self.num_clips.shape[0]

    @property
    def index_device(self) -> torch.device:
        """Where batch indices should live: beside resident features (no per-step copy), else on
        the host, which reads the memory map (no device-to-host copy, hence no sync)."""
        return self.features.device if self.features is not None else torch.device("cpu")

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (b, K, D), boxes (b, K, 7) and clip counts (b,) on the training device, of
        videos `index` (b,), which lives on `index_device`."""
        if self.features is not None:
            feats = self.features[index]
        else:
            wanted = index.cpu().numpy()
            rows = np.sort(wanted)
            order = np.argsort(np.argsort(wanted))
            feats = torch.from_numpy(np.ascontiguousarray(self.store.features(rows)[order]))
            feats = feats.to(self.boxes.device, non_blocking=True)
            index = index.to(self.boxes.device, non_blocking=True)
        return feats, self.boxes[index], self.num_clips[index]


def load_train_data(store: FeatureStore, config: TrainConfig, device: torch.device) -> TrainData:
    size = len(store) * store.clips_per_video * store.dim * 2
    if config.resident == "auto":
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            resident = size < 0.5 * free
        else:
            resident = size < 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        resident = config.resident == "always"
    logger.info(
        "store: %d videos x %d clips x %d dims (%.1f MB); features %s",
        len(store),
        store.clips_per_video,
        store.dim,
        size / 1e6,
        f"resident on {device}" if resident else "read from the memory map per step",
    )
    features = torch.from_numpy(np.asarray(store.features())).to(device) if resident else None
    return TrainData(
        store=store,
        boxes=torch.from_numpy(np.asarray(store.boxes, dtype=np.float32)).to(device),
        num_clips=torch.from_numpy(np.asarray(store.num_clips, dtype=np.int64)).to(device),
        features=features,
    )
