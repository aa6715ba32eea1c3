"""The kNN probe (DINO ``eval_knn`` style): one vector per video (mean over valid clips,
optionally centred with train statistics, L2-normalised, optionally part by part), cosine top-k,
each neighbour votes for its class with weight ``exp(sim / T)``. Chunked, so the full
test x train similarity matrix never exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scalevid.eval.probes import (
    Device,
    ProbeConfig,
    ProbeData,
    num_outputs,
    to_numpy,
    video_vectors,
)


def knn_classify(
    train_vecs: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_vecs: np.ndarray | torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int | None = 1024,
    train_chunk_size: int | None = None,
    device: Device = "cpu",
) -> np.ndarray:
    """Temperature-weighted kNN vote: train (Ntr, F), labels (Ntr,), test (Nte, F) -> (Nte, C).

    Vectors are L2-normalised, similarity is cosine, and each of the k nearest train vectors adds
    exp(sim / temperature) to its class. Test rows go `chunk_size` at a time and train rows
    `train_chunk_size` at a time with a running top-k (None = all at once).
    """
    bank = F.normalize(torch.as_tensor(train_vecs).to(device=device, dtype=torch.float32), dim=1)
    labels = torch.as_tensor(to_numpy(train_labels).astype(np.int64), device=device)  # (Ntr,)
    n_train, n_test = bank.shape[0], test_vecs.shape[0]
    k = min(k, n_train)
    test_step = chunk_size or max(n_test, 1)
    train_step = train_chunk_size or max(n_train, 1)
    out = []
    for start in range(0, n_test, test_step):
        query = torch.as_tensor(test_vecs[start : start + test_step])
        query = F.normalize(query.to(device=device, dtype=torch.float32), dim=1)  # (c, F)
        top_sim = query.new_empty(query.shape[0], 0)  # (c, <=k)
        top_idx = torch.empty(query.shape[0], 0, dtype=torch.long, device=device)
        for t0 in range(0, n_train, train_step):
            sim = query @ bank[t0 : t0 + train_step].T  # (c, t)
            s, i = sim.topk(min(k, sim.shape[1]), dim=1)
            top_sim, top_idx = torch.cat([top_sim, s], 1), torch.cat([top_idx, i + t0], 1)
            top_sim, pos = top_sim.topk(min(k, top_sim.shape[1]), dim=1)
            top_idx = top_idx.gather(1, pos)
        weights = (top_sim / temperature).exp()  # (c, k)
        scores = torch.zeros(query.shape[0], num_classes, device=device)
        out.append(scores.scatter_add_(1, labels[top_idx], weights).cpu())
    if not out:
        return np.zeros((0, num_classes), dtype=np.float32)
    return torch.cat(out).numpy()


def knn_predict(
    config: ProbeConfig, train: ProbeData, evals: Sequence[ProbeData], *, device: Device
) -> list[np.ndarray]:
    """kNN scores (Ne, C) for each eval set; only train labels are read."""
    if train.task != "classification":
        raise ValueError("the kNN probe needs integer class labels")
    center = None
    if config.center:
        center = video_vectors(train.x, train.num_valid, normalize=False, device=device).mean(0)
    parts = config.parts
    bank = video_vectors(train.x, train.num_valid, center=center, parts=parts, device=device)
    num_classes = num_outputs(config, train.labels)
    return [
        knn_classify(
            bank,
            train.labels,
            video_vectors(e.x, e.num_valid, center=center, parts=parts, device=device),
            num_classes=num_classes,
            k=config.k,
            temperature=config.temperature,
            device=device,
        )
        for e in evals
    ]
