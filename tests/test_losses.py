import math

import pytest
import torch
import torch.nn.functional as F

from scalevid.distributed import Gather
from scalevid.losses import MaskedClipLoss, SetLoss
from scalevid.pretext import masked_positions
from tests.reference_losses import release_info_nce, release_mcm_loss, release_set_loss


def loop_info_nce(q, k, pos, t, key_mask=None):
    """Hand-written reference: one query at a time, explicit log-sum-exp."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [
            float(q[i] @ k[j]) / t
            for j in range(k.shape[0])
            if key_mask is None or bool(key_mask[j])
        ]
        pos_logit = float(q[i] @ k[pos[i]]) / t
        total += -pos_logit + math.log(sum(math.exp(x) for x in logits))
    return total / q.shape[0]


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def info_nce(q, k, pos, *, temperature, key_mask=None, query_mask=None):
    """Plain InfoNCE through `MaskedClipLoss` (one process): query row i's positive is key
    pos[i]; rows where query_mask is False count for nothing; keys where key_mask is False are
    never candidates."""
    keep = torch.ones(len(pos), dtype=torch.bool) if query_mask is None else query_mask
    return MaskedClipLoss(temperature=temperature)(q, k, (pos, keep), key_mask)


def every_position(masked):
    """`positions` holding every clip of `masked` (B, N): rows keep only where masked."""
    return masked_positions(masked, masked.numel())


def test_info_nce_matches_loop_reference():
    q, k = unit(5, 8, seed=1), unit(7, 8, seed=2)
    pos = torch.tensor([0, 3, 6, 2, 2])
    loss, _ = info_nce(q, k, pos, temperature=0.2)
    assert loss.item() == pytest.approx(loop_info_nce(q, k, pos, 0.2), rel=1e-5)


def test_info_nce_key_mask_excludes_keys():
    q, k = unit(4, 8, seed=3), unit(6, 8, seed=4)
    pos = torch.tensor([0, 1, 2, 3])
    mask = torch.tensor([True, True, True, True, False, False])
    loss, _ = info_nce(q, k, pos, temperature=0.5, key_mask=mask)
    assert loss.item() == pytest.approx(loop_info_nce(q, k, pos, 0.5, mask), rel=1e-5)
    alone, _ = info_nce(q, k[:4], pos, temperature=0.5)
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)


def test_identical_embeddings_give_log_n():
    # every logit equal: the loss is -log(1/N) whatever the temperature
    n = 6
    a = F.normalize(torch.ones(n, 4), dim=-1)
    loss, _ = SetLoss(temperature=0.1)(a, a.clone())
    assert loss.item() == pytest.approx(math.log(n), rel=1e-6)


def test_perfectly_aligned_orthogonal_pairs_analytic():
    # a_i = b_i, distinct rows orthogonal: loss = -log(e^{1/t} / (e^{1/t} + (N-1)))
    n, t = 5, 0.2
    a = torch.eye(n)
    loss, acc = SetLoss(temperature=t)(a, a.clone())
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (n - 1)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 1.0


def test_set_loss_is_symmetric_and_matches_loop_and_release():
    a, b = unit(6, 16, seed=5), unit(6, 16, seed=6)
    loss = SetLoss(temperature=0.2)
    ab, acc = loss(a, b)
    ba, _ = loss(b, a)
    assert ab.item() == pytest.approx(ba.item(), rel=1e-6)
    pos = torch.arange(6)
    ref = (loop_info_nce(a, b, pos, 0.2) + loop_info_nce(b, a, pos, 0.2)) / 2
    assert ab.item() == pytest.approx(ref, rel=1e-5)
    release, release_acc = release_set_loss(a, b, 0.2)
    assert ab.item() == pytest.approx(release.item(), rel=1e-6)
    assert acc.item() == release_acc.item()


def test_masked_clip_loss_matches_loop_and_uses_all_clips_as_keys():
    b, n, e = 3, 4, 8
    targets = unit(b * n, e, seed=7)
    masked = torch.zeros(b, n, dtype=torch.bool)
    masked[0, 1] = masked[1, 3] = masked[2, 0] = masked[2, 2] = True
    index, keep = masked_positions(masked, int(masked.sum()))
    preds = unit(int(masked.sum()), e, seed=8)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 0] = False  # a padded clip: never a candidate
    loss, _ = MaskedClipLoss(temperature=0.2)(preds, targets, (index, keep), valid.flatten())
    pos = torch.tensor([1, 7, 8, 10])  # row-major positions of the masked clips
    assert index.tolist() == pos.tolist()
    assert loss.item() == pytest.approx(
        loop_info_nce(preds, targets, pos, 0.2, valid.flatten()), rel=1e-5
    )


def test_masked_clip_loss_perfect_predictions_accuracy_one():
    targets = torch.eye(8)
    masked = torch.tensor([[True, False, False, True], [False, True, False, False]])
    index, keep = every_position(masked)
    loss, acc = MaskedClipLoss(temperature=0.5)(targets[index], targets, (index, keep))
    assert acc.item() == 1.0
    expected = -math.log(math.exp(2) / (math.exp(2) + 7))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("spare", [0, 3, None])  # capacity: exactly the masked count, more, all
def test_masked_clip_loss_at_fixed_positions_equals_the_release(spare):
    """The fixed-capacity rows (filler rows counting for nothing) give the release's dense
    value, accuracy and gradient: prediction head at every clip, whole logits, masked rows."""
    b, n, e = 4, 5, 8
    targets = unit(b * n, e, seed=15)
    every_prediction = unit(b * n, e, seed=16).requires_grad_(True)
    masked = torch.rand(b, n, generator=torch.Generator().manual_seed(3)) < 0.3
    valid = torch.ones(b * n, dtype=torch.bool)
    valid[[2, 11]] = False
    masked.view(-1)[[2, 11]] = False
    want, want_acc = release_mcm_loss(every_prediction, targets, masked, 0.2, valid)
    (want_grad,) = torch.autograd.grad(want, every_prediction)
    capacity = b * n if spare is None else int(masked.sum()) + spare
    index, keep = masked_positions(masked, capacity)
    got, acc = MaskedClipLoss(temperature=0.2)(
        every_prediction[index], targets, (index, keep), valid
    )
    (grad,) = torch.autograd.grad(got, every_prediction)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert acc.item() == pytest.approx(want_acc.item())
    torch.testing.assert_close(grad, want_grad)


def test_masked_clip_loss_without_masked_clips_is_zero_not_nan():
    targets = unit(6, 8, seed=19)
    index, keep = every_position(torch.zeros(2, 3, dtype=torch.bool))
    loss, acc = MaskedClipLoss(temperature=0.2)(targets[index], targets, (index, keep))
    assert loss.item() == 0.0 and acc.item() == 0.0


def test_query_mask_equals_dropping_rows_and_ignores_infinite_padding():
    q, k = unit(6, 8, seed=13), unit(9, 8, seed=14)
    pos = torch.tensor([0, 4, 8, 1, 3, 3])
    keep = torch.tensor([True, False, True, True, False, True])
    key_mask = torch.ones(9, dtype=torch.bool)
    key_mask[3] = False  # the dropped rows' positive: an infinite loss that must not leak in
    pos[keep] = torch.tensor([0, 8, 1, 5])
    got, acc = info_nce(q, k, pos, temperature=0.3, key_mask=key_mask, query_mask=keep)
    want = loop_info_nce(q[keep], k, pos[keep], 0.3, key_mask=key_mask)
    assert got.item() == pytest.approx(want, rel=1e-5)
    ref_acc = info_nce(q[keep], k, pos[keep], temperature=0.3, key_mask=key_mask)[1]
    assert acc.item() == pytest.approx(ref_acc.item())
    q.requires_grad_(True)
    info_nce(q, k, pos, temperature=0.3, key_mask=key_mask, query_mask=keep)[0].backward()
    assert torch.isfinite(q.grad).all()
    assert (q.grad[~keep] == 0).all()


def test_chunked_info_nce_equals_whole_logits_in_value_and_gradient(monkeypatch):
    import scalevid.losses as losses

    q, k = unit(11, 8, seed=17), unit(13, 8, seed=18)
    pos = torch.randint(0, 13, (11,), generator=torch.Generator().manual_seed(1))
    key_mask = torch.ones(13, dtype=torch.bool)
    key_mask[[2, 7]] = False
    pos[pos == 2] = 0
    pos[pos == 7] = 1
    query_mask = torch.ones(11, dtype=torch.bool)
    query_mask[4] = False

    def run(fn):
        qq, kk = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
        loss, acc = fn(qq, kk)
        loss.backward()
        return loss, acc, qq.grad, kk.grad

    def whole(qq, kk):
        return release_info_nce(qq[query_mask], kk, pos[query_mask], 0.2, key_mask)

    def chunked(qq, kk):
        return info_nce(qq, kk, pos, temperature=0.2, key_mask=key_mask, query_mask=query_mask)

    want = run(whole)
    for elements in (13, 40, 10**6):  # one query per chunk, 3 per chunk, all in one
        monkeypatch.setitem(losses.CHUNK_ELEMENTS, "cpu", elements)
        got = run(chunked)
        torch.testing.assert_close(got[0], want[0])
        assert got[1].item() == want[1].item()
        torch.testing.assert_close(got[2], want[2])
        torch.testing.assert_close(got[3], want[3])


def test_chunked_info_nce_gradcheck():
    from scalevid.losses import ChunkedInfoNCE

    g = torch.Generator().manual_seed(2)
    q = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    pos = torch.tensor([0, 5, 3, 3, 1])
    key_mask = torch.tensor([True, True, False, True, True, True])
    assert torch.autograd.gradcheck(
        lambda a, b: ChunkedInfoNCE.apply(a, b, pos, key_mask, 1.7, 2)[0], (q, k)
    )


# Data-parallel: each of two processes holds half the batch; the losses it returns, summed over
# the processes, and its gradients, summed, must be the release's on the whole batch.
WORLD, B, N, E = 2, 4, 5, 8


def _whole_batch():
    g = torch.Generator().manual_seed(21)
    a, b = unit(B, E, seed=22), unit(B, E, seed=23)
    predictions, targets = unit(B * N, E, seed=24), unit(B * N, E, seed=25)
    masked = torch.rand(B, N, generator=g) < 0.4
    valid = torch.rand(B, N, generator=g) < 0.9
    return a, b, predictions, targets, masked & valid, valid


def _rank_losses(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    a, b, predictions, targets, masked, valid = (
        t.chunk(WORLD)[rank].clone() for t in _whole_batch()
    )
    for t in (a, b, predictions, targets):
        t.requires_grad_(True)
    gather = Gather(rank=rank, world=WORLD)
    set_loss, _ = SetLoss(temperature=0.2, gather=gather)(a, b)
    index, keep = masked_positions(masked, masked.numel())
    mcm, _ = MaskedClipLoss(temperature=0.2, gather=gather)(
        predictions[index], targets, (index, keep), valid.flatten()
    )
    (set_loss + mcm).backward()
    losses = torch.stack([set_loss.detach(), mcm.detach()])
    dist.all_reduce(losses)
    grads = [t.grad for t in (a, b, predictions, targets)]
    torch.save({"losses": losses, "grads": grads}, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_losses_summed_over_processes_equal_the_release_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    a, b, predictions, targets, masked, valid = _whole_batch()
    for t in (a, b, predictions, targets):
        t.requires_grad_(True)
    set_loss, _ = release_set_loss(a, b, 0.2)
    mcm, _ = release_mcm_loss(predictions, targets, masked.view(B, N), 0.2, valid.flatten())
    (set_loss + mcm).backward()
    mp.spawn(_rank_losses, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    torch.testing.assert_close(ranks[0]["losses"], torch.stack([set_loss, mcm]).detach())
    for i, whole in enumerate((a, b, predictions, targets)):
        got = torch.cat([r["grads"][i] for r in ranks])
        torch.testing.assert_close(got, whole.grad)
