import math

import pytest
import torch

from scalevid.distributed import Gather
from scalevid.model import ModelConfig, ScaleModel
from scalevid.pretext import (
    PretextConfig,
    draw_clip_sets,
    pretext_step,
    random_masking,
    sample_clip_sets,
    shuffle_valid_first,
)
from tests.reference_losses import release_pretext_losses


@pytest.mark.parametrize("stored", [1, 2, 5, 16, 33])
def test_shuffle_valid_first_is_the_three_former_view_samplers(stored):
    """The one sampler gives, bit for bit, what the three argsort-of-noise formulas it replaced
    gave (pretext's `torch.where`, set probes' and probes' `masked_fill`): the seeded draws of
    pretraining and of every probe are unchanged."""
    g = torch.Generator().manual_seed(stored)
    for _ in range(20):
        b = int(torch.randint(1, 9, (1,), generator=g))
        noise = torch.rand(b, stored, generator=g)  # (B, K)
        num_valid = torch.randint(0, stored + 1, (b,), generator=g)  # (B,) 0 = all padding
        slots = torch.arange(stored)
        old_pretext = torch.where(slots[None, :] < num_valid[:, None], noise, 2.0).argsort(dim=1)
        old_set_probes = noise.masked_fill(slots[None, :] >= num_valid[:, None], 2.0).argsort(dim=1)
        invalid = torch.arange(stored)[None, :] >= num_valid[:, None]
        old_probes = noise.masked_fill(invalid, 2.0).argsort(dim=1)
        order = shuffle_valid_first(noise, num_valid)
        assert order.dtype == torch.int64 and order.shape == (b, stored)
        assert torch.equal(order, old_pretext)
        assert torch.equal(order, old_set_probes)
        assert torch.equal(order, old_probes)
        for row, n in zip(order, num_valid.tolist(), strict=True):
            assert sorted(row.tolist()) == list(range(stored))  # a permutation
            assert sorted(row[:n].tolist()) == list(range(n))  # valid slots first


def test_shuffle_valid_first_follows_the_noise():
    noise = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.8, 0.4, 0.6]])
    order = shuffle_valid_first(noise, torch.tensor([3, 4]))
    assert order[0, :3].tolist() == [1, 0, 2]  # slot 3 is padding: last, whatever its noise
    assert order[0, 3] == 3
    assert order[1].tolist() == [0, 2, 3, 1]


def test_clip_sets_are_disjoint_and_within_valid_clips():
    g = torch.Generator().manual_seed(0)
    num_clips = torch.tensor([16, 16, 11, 5, 2])
    noise = torch.rand(5, 16, generator=g)
    index, valid = sample_clip_sets(num_clips, 8, noise)
    assert index.shape == valid.shape == (2, 5, 8)
    for v in range(5):
        a = index[0, v][valid[0, v]].tolist()
        b = index[1, v][valid[1, v]].tolist()
        assert not set(a) & set(b)
        assert len(a) + len(b) == min(16, int(num_clips[v]))
        assert len(a) - len(b) in (0, 1)
        assert all(i < num_clips[v] for i in a + b)
        assert len(set(a)) == len(a)


def test_clip_sets_fewer_stored_than_two_sets():
    noise = torch.rand(3, 6, generator=torch.Generator().manual_seed(1))
    index, valid = sample_clip_sets(torch.tensor([6, 6, 3]), 8, noise)
    assert valid.sum().item() == 6 + 6 + 3
    assert int(index.max()) < 6


@pytest.mark.parametrize("views", [2, 4, 8])
@pytest.mark.parametrize("ratio", [0.15, 0.25, 0.45])
def test_effective_mask_ratio_is_the_configured_ratio(views, ratio):
    """Every valid clip is masked with probability `ratio` (the release's Bernoulli draw), so the
    masked share over many sets is Binomial(n, ratio) / n: within 5 standard errors of `ratio`.
    The old at-least-one-masked, at-least-one-visible rule gives 0.5 at 2 views and ~0.33 at 4
    views for ratio 0.25, many standard errors away."""
    sets = 20000
    g = torch.Generator().manual_seed(views)
    valid = torch.ones(sets, views, dtype=torch.bool)
    masked = random_masking(valid, ratio, torch.rand(valid.shape, generator=g))
    n = valid.sum().item()
    tolerance = 5 * math.sqrt(ratio * (1 - ratio) / n)
    assert abs(masked.sum().item() / n - ratio) < tolerance
    # independent per clip: the number masked in a set follows Binomial(views, ratio)
    per_set = torch.bincount(masked.sum(1), minlength=views + 1).double() / sets
    pmf = torch.tensor(
        [math.comb(views, x) * ratio**x * (1 - ratio) ** (views - x) for x in range(views + 1)]
    )
    se = (pmf * (1 - pmf) / sets).sqrt()
    assert ((per_set - pmf).abs() <= 5 * se + 1e-12).all()


def test_masking_never_touches_padding_and_keeps_edge_sets():
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(4000, 8, dtype=torch.bool)
    valid[:1000, 5:] = False
    valid[1000:2000, 1:] = False  # one valid clip
    valid[2000:2010] = False  # an empty set (a video with fewer clips than two sets need)
    masked = random_masking(valid, 0.25, torch.rand(valid.shape, generator=g))
    assert not (masked & ~valid).any()
    assert not masked[2000:2010].any()
    # padded sets and one-clip sets are masked at the ratio too (no rule moves it); some full
    # sets have nothing masked (they add no MCM query), some have most clips masked
    for rows in (slice(0, 1000), slice(1000, 2000)):
        share = masked[rows].sum().item() / valid[rows].sum().item()
        assert abs(share - 0.25) < 5 * math.sqrt(0.25 * 0.75 / valid[rows].sum().item())
    full = masked[2010:].sum(1)
    assert (full == 0).any() and (full >= 5).any()


def _losses_and_grads(model, losses):
    """(losses, gradients of losses["loss"] with respect to the model's parameters)."""
    model.zero_grad()
    losses["loss"].backward()
    return losses, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def step_and_release(model, cfg, seed, batch=None):
    """`pretext_step` and the release's computation on the same clip sets and masks, each with
    the model's gradients: {"step": (metrics, grads), "release": (losses, grads)}."""
    f, bx, nc = batch or tiny_batch()
    step = pretext_step(model, f, bx, nc, cfg, torch.Generator().manual_seed(seed))
    sets = draw_clip_sets(f, bx, nc, cfg, torch.Generator().manual_seed(seed), Gather())
    release = release_pretext_losses(model, sets, cfg)
    return {
        "step": _losses_and_grads(model, step),
        "release": _losses_and_grads(model, release),
    }


def _step_with_masks(monkeypatch, model, masks_fn):
    """The pretext step and the release's computation (4 views) with the mask
    `masks_fn(valid)`."""
    import scalevid.pretext as pretext

    monkeypatch.setattr(pretext, "random_masking", lambda valid, ratio, noise: masks_fn(valid))
    return step_and_release(model, PretextConfig(num_views=4), seed=0)


def test_no_masked_clip_gives_a_finite_loss_without_mcm(monkeypatch):
    model = tiny_model()
    m, grads = _step_with_masks(monkeypatch, model, torch.zeros_like)["step"]
    assert m["mcm_loss"].item() == 0.0  # the release's mean over no queries is NaN
    assert m["mcm_acc"].item() == 0.0 and m["mask_ratio"].item() == 0.0
    torch.testing.assert_close(m["loss"], m["set_loss"])
    assert torch.isfinite(m["loss"]) and all(torch.isfinite(g).all() for g in grads)


def test_a_fully_masked_set_is_a_finite_input(monkeypatch):
    model = tiny_model()

    def mask_first_set_entirely(valid):
        masked = torch.zeros_like(valid)
        masked[0] = valid[0]  # every clip of set 0 hidden
        masked[3, 1] = True
        return masked

    results = _step_with_masks(monkeypatch, model, mask_first_set_entirely)
    for m, grads in results.values():
        assert all(torch.isfinite(m[k]) for k in ("loss", "mcm_loss", "set_loss"))
        assert m["mcm_loss"].item() > 0
        assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(results["step"][0]["mask_ratio"], torch.tensor(5 / 48))
    torch.testing.assert_close(results["step"][0]["mcm_loss"], results["release"][0]["mcm_loss"])


def tiny_batch(b=6, k=8, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, k, d, generator=g),
        torch.rand(b, k, 7, generator=g),
        torch.full((b,), k),
    )


def tiny_model(dropout=0.0):
    torch.manual_seed(0)
    cfg = ModelConfig(
        input_dim=12,
        hidden=16,
        depth=1,
        heads=2,
        dropout=dropout,
        set_head=(32, 8),
        pred_head=(32, 8),
        target_head=(24, 8),
    )
    return ScaleModel(cfg)


@pytest.mark.parametrize("num_clips", [None, (8, 8, 3, 8, 5, 8)])  # no padding; padded sets
def test_pretext_step_equals_the_release_computation(num_clips):
    """Output sparsity (prediction head and logits at a fixed number of masked positions) gives
    the release's losses and gradients: prediction head at every clip, whole logits."""
    model = tiny_model()
    f, bx, nc = tiny_batch()
    if num_clips is not None:
        nc = torch.tensor(num_clips)
    results = step_and_release(model, PretextConfig(num_views=4), seed=3, batch=(f, bx, nc))
    (a, ga), (b, gb) = results["step"], results["release"]
    assert a["mcm_loss"].item() > 0
    for key in ("loss", "mcm_loss", "set_loss"):
        torch.testing.assert_close(a[key], b[key])
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, atol=5e-6, rtol=1e-4)  # float reassociation only


def test_loss_terms_can_be_switched_off():
    model = tiny_model()
    f, bx, nc = tiny_batch()
    g = torch.Generator().manual_seed(0)
    only_set = pretext_step(model, f, bx, nc, PretextConfig(num_views=4, mcm_weight=0), g)
    assert "mcm_loss" not in only_set
    torch.testing.assert_close(only_set["loss"], only_set["set_loss"])
    only_mcm = pretext_step(model, f, bx, nc, PretextConfig(num_views=4, set_weight=0), g)
    assert "set_loss" not in only_mcm
    torch.testing.assert_close(only_mcm["loss"], only_mcm["mcm_loss"])


def test_bf16_autocast_close_to_fp32():
    model = tiny_model()
    f, bx, nc = tiny_batch()
    cfg = PretextConfig(num_views=4)
    fp32 = pretext_step(model, f, bx, nc, cfg, torch.Generator().manual_seed(1))
    bf16 = pretext_step(
        model, f, bx, nc, cfg, torch.Generator().manual_seed(1), autocast_dtype=torch.bfloat16
    )
    for key in ("mcm_loss", "set_loss"):
        torch.testing.assert_close(bf16[key], fp32[key], atol=0.05, rtol=0.02)


def _rank_grads(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = tiny_model()
    f, bx, nc = tiny_batch(b=8)
    b = 8 // world
    local = slice(rank * b, (rank + 1) * b)
    m = pretext_step(
        model,
        f[local],
        bx[local],
        nc[local],
        PretextConfig(num_views=4),
        torch.Generator().manual_seed(5),
        gather=Gather(rank=rank, world=world),
    )
    m["loss"].backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    dist.all_reduce(grads)
    losses = torch.stack([m["mcm_loss"], m["set_loss"]])
    dist.all_reduce(losses)
    if rank == 0:
        torch.save({"grads": grads / world, "losses": losses}, f"{out_dir}/grads.pt")
    dist.barrier()  # nobody tears gloo down while a peer still talks to it
    dist.destroy_process_group()


def test_data_parallel_gradients_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    model = tiny_model()
    f, bx, nc = tiny_batch(b=8)
    m = pretext_step(model, f, bx, nc, PretextConfig(num_views=4), torch.Generator().manual_seed(5))
    m["loss"].backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()])
    mp.spawn(_rank_grads, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    got = torch.load(tmp_path / "grads.pt")
    torch.testing.assert_close(got["grads"], expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got["losses"], torch.stack([m["mcm_loss"], m["set_loss"]]))


@pytest.mark.slow
def test_torch_compile_gives_the_same_losses():
    f, bx, nc = tiny_batch()
    cfg = PretextConfig(num_views=4)
    eager = pretext_step(tiny_model(), f, bx, nc, cfg, torch.Generator().manual_seed(2))
    compiled_model = tiny_model()
    compiled_model.compile()
    compiled = pretext_step(compiled_model, f, bx, nc, cfg, torch.Generator().manual_seed(2))
    for key in ("loss", "mcm_loss", "set_loss"):
        torch.testing.assert_close(compiled[key], eager[key], atol=1e-5, rtol=1e-5)


def test_masked_positions_match_nonzero_and_truncate_beyond_capacity():
    from scalevid.pretext import masked_positions

    masked = torch.rand(7, 8, generator=torch.Generator().manual_seed(4)) < 0.3
    want = masked.flatten().nonzero().squeeze(1)
    m = want.numel()
    index, keep = masked_positions(masked, m + 5)
    assert index[:m].tolist() == want.tolist() and keep[:m].all() and not keep[m:].any()
    index, keep = masked_positions(masked, m - 2)  # overflow: the last two are left out
    assert index.tolist() == want[: m - 2].tolist() and keep.all()
    assert masked_positions(masked, 10**6)[0].numel() == masked.numel()


def test_masked_capacity_bounds_simulated_counts():
    from scalevid.pretext import masked_capacity

    assert masked_capacity(2, 8, 0.25) == 16  # tiny batches: every clip, no bound needed
    assert masked_capacity(5, 1, 0.25) == 5  # one-clip sets are masked at the ratio too
    g = torch.Generator().manual_seed(0)
    for sets, views in ((64, 8), (256, 4), (1024, 8)):
        valid = torch.ones(20 * sets, views, dtype=torch.bool)
        valid[: 5 * sets, views // 2 :] = False  # a quarter of the sets half padded
        masked = random_masking(valid, 0.25, torch.rand(valid.shape, generator=g))
        counts = masked.view(20, sets, views).sum(dim=(1, 2))  # 20 batches of `sets` sets
        capacity = masked_capacity(sets, views, 0.25)
        assert int(counts.max()) <= capacity
        # and it is a usable bound, not the trivial one
        assert capacity < (0.3 if sets >= 1024 else 0.5) * sets * views


def test_all_valid_skips_masks_without_changing_losses():
    model = tiny_model()
    f, bx, nc = tiny_batch(k=8)  # every video has 8 = 2 * num_views valid clips
    cfg = PretextConfig(num_views=4)
    a = pretext_step(model, f, bx, nc, cfg, torch.Generator().manual_seed(6))
    b = pretext_step(model, f, bx, nc, cfg, torch.Generator().manual_seed(6), all_valid=True)
    for key in ("loss", "mcm_loss", "set_loss", "mcm_acc", "set_acc"):
        torch.testing.assert_close(a[key], b[key])
    assert a["mcm_dropped"].item() == 0


def test_training_step_makes_no_host_sync():
    """Ops whose result the host must wait for (`.item()`, `nonzero`, boolean indexing) are the
    host syncs of a GPU step; none may run in the forward and backward of a training step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.masked_select.default,
        torch.ops.aten.is_nonzero.default,
    }

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in syncing:
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    model = tiny_model(dropout=0.1)
    model.train()
    f, bx, nc = tiny_batch(k=8)
    nc[0] = 5  # some padding too
    for all_valid in (False, True):
        nc_used = nc if not all_valid else torch.full_like(nc, 8)
        with Recorder() as rec:
            m = pretext_step(
                model,
                f,
                bx,
                nc_used,
                PretextConfig(num_views=4),
                torch.Generator().manual_seed(0),
                all_valid=all_valid,
            )
            m["loss"].backward()
        assert rec.seen == []
