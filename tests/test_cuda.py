"""Checks of the CUDA paths. Skipped without a GPU; `benchmarks/device_check.sh` runs them on a
GPU machine (with `--noconftest`: they need neither PyAV nor the video fixtures)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from scalevid.distributed import Gather
from scalevid.eval.set_probes import fit_set_probe, fit_set_probes
from scalevid.eval.stacked import StackedAdamW
from scalevid.hardware import autocast_dtype
from scalevid.losses import MaskedClipLoss
from scalevid.model import ScaleModel
from scalevid.pretext import PretextConfig, draw_clip_sets, pretext_step
from scalevid.train import TrainConfig
from scalevid.train.data import TrainData
from scalevid.train.engine import Trainer
from scalevid.train.schedule import adamw
from tests.eval.test_set_probes import ARCH, FAST, assert_same_weights, mean_direction_task
from tests.reference_losses import release_info_nce, release_pretext_losses
from tests.test_pretext import tiny_batch, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def small_model(dropout: float = 0.0) -> ScaleModel:
    return tiny_model(dropout).to(CUDA)  # input_dim 12


def random_batch(b: int = 16, k: int = 16):
    return tuple(t.to(CUDA) for t in tiny_batch(b=b, k=k))


def test_training_steps_make_no_host_sync():
    """The trainer's whole step (sampling, masking, forward, losses, backward, fused AdamW) on
    resident features under bf16 autocast: CUDA's sync debug mode raises on any host sync."""
    model = small_model(dropout=0.1)
    config = TrainConfig(
        model=model.config,
        pretext=PretextConfig(),
        batch_size=64,
        epochs=10,
        progress=False,
    )
    g = torch.Generator().manual_seed(1)
    videos = 256
    data = TrainData(
        store=None,
        features=torch.randn(videos, 16, 12, generator=g).half().to(CUDA),
        boxes=torch.rand(videos, 16, 7, generator=g).to(CUDA),
        num_clips=torch.full((videos,), 16).to(CUDA),
    )
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(
            config=config,
            full_config={},
            model=model,
            optimizer=adamw(model, lr=config.lr, weight_decay=config.weight_decay),
            data=data,
            gather=Gather(),
            device=CUDA,
            autocast=autocast_dtype("auto", CUDA),
            run=Path(run),
        )
        order = trainer.epoch_order(0)
        trainer.train_step(0, order[:64])  # warm-up: lazy initialisation may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(1, 4):
                metrics = trainer.train_step(step, order[64 * step : 64 * (step + 1)])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(metrics["loss"]).item()
    assert metrics["mcm_dropped"].item() == 0


def test_pretext_step_equals_the_release_computation_on_cuda():
    model = small_model()
    f, bx, nc = random_batch()
    nc[3] = 9  # some padding as well
    cfg = PretextConfig()
    step = pretext_step(model, f, bx, nc, cfg, torch.Generator(CUDA).manual_seed(3))
    sets = draw_clip_sets(f, bx, nc, cfg, torch.Generator(CUDA).manual_seed(3), Gather())
    results = []
    for losses in (step, release_pretext_losses(model, sets, cfg)):
        model.zero_grad()
        losses["loss"].backward()
        results.append((losses, [p.grad.clone() for p in model.parameters()]))
    (a, ga), (b, gb) = results
    for key in ("loss", "mcm_loss", "set_loss"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-3)


def test_bf16_autocast_close_to_fp32_on_cuda():
    model = small_model()
    f, bx, nc = random_batch()
    cfg = PretextConfig()
    fp32 = pretext_step(model, f, bx, nc, cfg, torch.Generator(CUDA).manual_seed(1))
    bf16 = pretext_step(
        model, f, bx, nc, cfg, torch.Generator(CUDA).manual_seed(1), autocast_dtype=torch.bfloat16
    )
    for key in ("mcm_loss", "set_loss"):
        torch.testing.assert_close(bf16[key], fp32[key], atol=0.05, rtol=0.02)


def test_chunked_info_nce_on_cuda_equals_whole_logits(monkeypatch):
    import scalevid.losses as losses

    g = torch.Generator(CUDA).manual_seed(4)
    q = torch.nn.functional.normalize(torch.randn(300, 16, generator=g, device=CUDA), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(700, 16, generator=g, device=CUDA), dim=-1)
    pos = torch.randint(0, 700, (300,), generator=g, device=CUDA)
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS_OTHER", 700 * 64)  # 5 chunks
    results = []
    for fn in ("chunked", "whole"):
        qq, kk = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
        if fn == "chunked":
            every = torch.ones(300, dtype=torch.bool, device=CUDA)
            loss, acc = MaskedClipLoss(temperature=0.2)(qq, kk, (pos, every))
        else:
            loss, acc = release_info_nce(qq, kk, pos, 0.2)
        loss.backward()
        results.append((loss, acc, qq.grad, kk.grad))
    for x, y in zip(*results, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def _cached_i3d_weights() -> Path | None:
    """The converted I3D weights in the scalevid cache ($SCALEVID_CACHE, else ~/.cache/scalevid),
    or None; nothing is downloaded here."""
    from scalevid.backbones import weights_cache_dir

    path = weights_cache_dir() / "i3d" / "i3d-kinetics-400.safetensors"
    return path if path.is_file() else None


def moving_bars(batch: int = 4, frames: int = 16, size: int = 112) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3): bright bars sweeping across a dark background."""
    t = torch.arange(frames)[:, None, None]
    x = torch.arange(size)[None, None, :]
    clips = []
    for b in range(batch):
        phase = (x + (b + 1) * 3 * t) % 28 < 9  # (T, 1, W)
        frame = phase.expand(frames, size, size).to(torch.uint8) * 200 + 20
        clips.append(torch.stack([frame, frame.roll(b, 2), frame.flip(2)], dim=-1))
    return torch.stack(clips)


@pytest.mark.skipif(_cached_i3d_weights() is None, reason="needs the converted I3D weights")
def test_i3d_fp16_on_cuda_matches_fp32_on_cpu():
    from scalevid.backbones import create_backbone

    weights = _cached_i3d_weights()
    clips = moving_bars()
    cpu = create_backbone(
        "i3d", weights=weights, device="cpu", precision="fp32", frames=16, size=112
    )
    gpu = create_backbone("i3d", weights=weights, device=CUDA, frames=16, size=112)
    assert gpu.dtype == torch.float16  # precision "auto" on CUDA
    f_cpu, l_cpu = cpu.forward_clips_with_logits(clips)
    f_gpu, l_gpu = (t.cpu() for t in gpu.forward_clips_with_logits(clips))
    cosine = torch.nn.functional.cosine_similarity(f_cpu, f_gpu, dim=1)
    assert (cosine > 0.999).all(), cosine
    assert (l_gpu - l_cpu).abs().max() < 0.05 * l_cpu.std()


def test_stacked_adamw_fused_on_cuda_equals_the_loop_on_cpu():
    """`eval.stacked.StackedAdamW` on CUDA (torch's fused kernel per model, clipping folded into
    its gradient scale) ends where the plain loop of tensor operations ends on CPU."""
    g = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(3, 5, 4, generator=g), "b": torch.randn(3, 4, generator=g)}
    grads = [
        {k: 3.0 * torch.randn(v.shape, generator=g) for k, v in start.items()} for _ in range(6)
    ]
    lr = torch.tensor([0.1, 0.01, 0.003])
    ends = {}
    for device, fused in ((CUDA, True), (torch.device("cpu"), False)):
        params = {k: v.to(device).requires_grad_() for k, v in start.items()}
        decay = {"w": [0.0, 0.05, 0.3], "b": [0.0, 0.0, 0.0]}
        opt = StackedAdamW(params, decay=decay, grad_clip=1.0, fused=fused)
        for step in grads:
            for k, grad in step.items():
                params[k].grad = grad.to(device)
            opt.step(lr.to(device))
        ends[fused] = {k: v.detach().cpu() for k, v in params.items()}
    for k in start:
        torch.testing.assert_close(ends[True][k], ends[False][k], rtol=1e-5, atol=1e-6)


def test_set_probes_trained_together_on_cuda_match_probes_trained_alone():
    """On CUDA the probes of a training set run under vmap (dropout masks shared, as a probe
    alone draws them), stepped by the fused stacked AdamW: each ends where it ends alone."""
    data, _ = mean_direction_task(48, seed=0)
    base = dataclasses.replace(
        FAST, batch_size=16, dropout=0.1, weight_decay=0.05, grad_clip=0.5, device="cuda"
    )
    configs = [
        dataclasses.replace(base, lr=1e-3, steps=4),
        dataclasses.replace(base, lr=3e-3, steps=6),
    ]
    together = fit_set_probes(configs, [data, data], init=ARCH)
    for (probe, history), cfg in zip(together, configs, strict=True):
        alone, alone_history = fit_set_probe(cfg, data, init=ARCH)
        np.testing.assert_allclose(history, alone_history, rtol=1e-4, atol=1e-5)
        assert_same_weights(probe, alone, rtol=1e-4, atol=1e-5)
