"""A small feature store whose structure SCALE can learn, for trainer tests.

Clip feature = video latent + (clip time - 0.5) * video direction + noise: the set of a video's
clips identifies it (SET), and a masked clip's feature follows from the other clips plus its
box's time (MCM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scalevid.store import Manifest, StoreWriter


def write_synthetic_store(
    path: Path,
    *,
    videos: int = 256,
    clips: int = 16,
    dim: int = 32,
    classes: int = 4,
    seed: int = 0,
    short_videos: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    manifest = Manifest(
        dim=dim,
        clips_per_video=clips,
        backbone="synthetic",
        sampling={"mode": "train", "passes": 1},
        dataset="synthetic",
        class_names=[f"class{c}" for c in range(classes)],
    )
    centers = rng.normal(size=(classes, dim))
    with StoreWriter(path, manifest, shard_size=100) as writer:
        for i in range(videos):
            label = i % classes
            k = clips - 3 if i < short_videos else clips
            latent = centers[label] + rng.normal(size=dim)
            direction = 3 * rng.normal(size=dim)
            t0 = rng.uniform(0, 0.9, size=k)
            y0, x0 = rng.uniform(0, 0.3, size=(2, k))
            flip = rng.choice([-1.0, 1.0], size=k)
            boxes = np.stack([flip, t0, y0, x0, t0 + 0.1, y0 + 0.7, x0 + 0.7], axis=1)
            feats = latent + (t0[:, None] + 0.05 - 0.5) * direction
            feats += 0.3 * rng.normal(size=(k, dim))
            writer.add(
                video_id=f"v{i:05d}",
                path=f"synthetic/v{i:05d}.mp4",
                features=feats.astype(np.float16),
                boxes=boxes.astype(np.float32),
                label=label,
            )
    return path
