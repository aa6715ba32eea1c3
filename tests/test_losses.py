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
