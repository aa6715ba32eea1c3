import math

import pytest
import torch
import torch.nn.functional as F

from scalevid.losses import info_nce, masked_clip_loss, set_loss, symmetric_info_nce


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
    loss, _ = symmetric_info_nce(a, a.clone(), temperature=0.1)
    assert loss.item() == pytest.approx(math.log(n), rel=1e-6)


def test_perfectly_aligned_orthogonal_pairs_analytic():
    # a_i = b_i, distinct rows orthogonal: loss = -log(e^{1/t} / (e^{1/t} + (N-1)))
    n, t = 5, 0.2
    a = torch.eye(n)
    loss, acc = set_loss(a, a.clone(), temperature=t)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (n - 1)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 1.0


def test_symmetric_form_is_symmetric_and_matches_loop():
    a, b = unit(6, 16, seed=5), unit(6, 16, seed=6)
    ab, _ = symmetric_info_nce(a, b, temperature=0.2)
    ba, _ = symmetric_info_nce(b, a, temperature=0.2)
    assert ab.item() == pytest.approx(ba.item(), rel=1e-6)
    pos = torch.arange(6)
    ref = (loop_info_nce(a, b, pos, 0.2) + loop_info_nce(b, a, pos, 0.2)) / 2
    assert ab.item() == pytest.approx(ref, rel=1e-5)


def test_masked_clip_loss_matches_loop_and_uses_all_clips_as_keys():
    b, n, e = 3, 4, 8
    targets = unit(b * n, e, seed=7)
    masked = torch.zeros(b, n, dtype=torch.bool)
    masked[0, 1] = masked[1, 3] = masked[2, 0] = masked[2, 2] = True
    preds = unit(int(masked.sum()), e, seed=8)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 0] = False  # a padded clip: never a candidate
    loss, _ = masked_clip_loss(
        preds, targets, masked, temperature=0.2, target_valid=valid.flatten()
    )
    pos = torch.tensor([1, 7, 8, 10])  # row-major positions of the masked clips
    assert loss.item() == pytest.approx(
        loop_info_nce(preds, targets, pos, 0.2, valid.flatten()), rel=1e-5
    )


def test_masked_clip_loss_perfect_predictions_accuracy_one():
    targets = torch.eye(8)
    masked = torch.tensor([[True, False, False, True], [False, True, False, False]])
    preds = targets[masked.flatten()]
    loss, acc = masked_clip_loss(preds, targets, masked, temperature=0.5)
    assert acc.item() == 1.0
    expected = -math.log(math.exp(2) / (math.exp(2) + 7))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_normalizer_and_offset_split_sum_to_whole():
    # two "ranks" each scoring their half of the queries against all keys sum to the whole
    a, b = unit(8, 8, seed=9), unit(8, 8, seed=10)
    whole, _ = set_loss(a, b, temperature=0.2)
    parts = sum(
        set_loss(
            a[r * 4 : (r + 1) * 4],
            b[r * 4 : (r + 1) * 4],
            temperature=0.2,
            a_keys=a,
            b_keys=b,
            query_offset=r * 4,
            normalizer=8,
        )[0]
        for r in range(2)
    )
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


def test_dense_masked_clip_loss_equals_sparse():
    b, n, e = 3, 4, 8
    targets = unit(b * n, e, seed=11)
    all_preds = unit(b * n, e, seed=12)
    masked = torch.zeros(b, n, dtype=torch.bool)
    masked[0, 0] = masked[1, 2] = masked[2, 3] = True
    sparse, acc_s = masked_clip_loss(all_preds[masked.flatten()], targets, masked, temperature=0.2)
    dense, acc_d = masked_clip_loss(all_preds, targets, masked, temperature=0.2, dense=True)
    assert dense.item() == pytest.approx(sparse.item(), rel=1e-6)
    assert acc_s.item() == acc_d.item()


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


def test_masked_clip_loss_fixed_positions_equal_nonzero_form():
    from scalevid.pretext import masked_positions

    b, n, e = 4, 5, 8
    targets = unit(b * n, e, seed=15)
    all_preds = unit(b * n, e, seed=16)
    masked = torch.rand(b, n, generator=torch.Generator().manual_seed(3)) < 0.3
    want, want_acc = masked_clip_loss(all_preds[masked.flatten()], targets, masked, temperature=0.2)
    for capacity in (int(masked.sum()), int(masked.sum()) + 3, b * n):
        index, keep = masked_positions(masked, capacity)
        got, acc = masked_clip_loss(
            all_preds[index], targets, masked, temperature=0.2, positions=(index, keep)
        )
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        assert acc.item() == pytest.approx(want_acc.item())


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
        logits = qq @ kk.t() / 0.2
        return losses.info_nce_from_logits(
            logits, pos, key_mask=key_mask, query_mask=query_mask, normalizer=7.0
        )

    def chunked(qq, kk):
        return info_nce(
            qq, kk, pos, temperature=0.2, key_mask=key_mask, query_mask=query_mask, normalizer=7.0
        )

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
