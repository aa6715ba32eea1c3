"""``scalevid store info``: a store summarised in a few human-readable lines."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from scalevid.store.layout import MANIFEST_FILE, SHARDS_DIR
from scalevid.store.reader import FeatureStore


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.2f} {unit}"


def format_store_summary(store: FeatureStore) -> str:
    """Multi-line human summary: videos, K, D, backbone, classes, label counts, size on disk."""
    m = store.manifest
    dirs = [store.path / SHARDS_DIR / name for name in store.shard_names]
    size = sum(f.stat().st_size for d in dirs for f in d.iterdir() if f.is_file())
    size += (store.path / MANIFEST_FILE).stat().st_size
    mean_clips = float(store.num_clips.mean()) if len(store) else 0.0
    clip = f", clip {m.clip_frames} frames stride {m.clip_stride}" if m.clip_frames else ""
    lines = [
        f"store      {store.path}",
        f"dataset    {m.dataset or '-'}",
        f"videos     {len(store)} in {len(store.shard_names)} shard(s)",
        f"clips      K={m.clips_per_video} per video (mean {mean_clips:.1f} valid){clip}",
        f"features   D={m.dim} float16 from backbone {m.backbone!r}",
        f"sampling   {json.dumps(m.sampling, sort_keys=True)}",
        f"classes    {m.num_classes or 'unknown'}",
    ]
    counts = Counter(store.labels.tolist())
    unlabelled = counts.pop(-1, 0)

    def label_name(label: int) -> str:
        return m.class_names[label] if label < m.num_classes else str(label)

    ranked = counts.most_common()
    shown = ", ".join(f"{label_name(c)}: {n}" for c, n in ranked[:10])
    more = f", ... ({len(ranked) - 10} more, fewest {ranked[-1][1]})" if len(ranked) > 10 else ""
    lines.append(
        f"labels     {len(store) - unlabelled} labelled in {len(counts)} classes, {unlabelled} unlabelled"
    )
    if ranked:
        lines.append(f"           {shown}{more}")
    if store.targets is not None:
        lines.append(
            f"targets    {int(np.isfinite(store.targets).sum())} videos have a regression target"
        )
    lines.append(f"size       {_human_bytes(size)} on disk")
    lines.append(
        f"format     v{m.format_version}, written by scalevid {m.scalevid_version} at {m.created}"
    )
    return "\n".join(lines)
