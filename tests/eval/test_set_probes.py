"""Tests for scalevid.eval.set_probes: the Transformer / SCALE_ft set probes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from scalevid.eval import set_probes
from scalevid.eval.clip_sets import SetData, sample_views
from scalevid.eval.set_probes import (
    FinetuneConfig,
    SetProbe,
    build_predictor,
    combine_views,
    fit_predict_set,
    fit_set_probe,
    fit_set_probes,
    predict_set_probe,
    set_probe_loss,
)
from scalevid.model import ModelConfig, ScaleModel

ARCH = ModelConfig(
    input_dim=16,
    hidden=32,
    depth=1,
    heads=4,
    set_head=(32, 8),
    pred_head=(32, 8),
    target_head=(32, 8),
)
FAST = FinetuneConfig(
    lr=3e-3, epochs=25, batch_size=32, num_views=6, dropout=0.0, weight_decay=0.0, device="cpu"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def mean_direction_task(
    n: int, *, views: int = 8, dim: int = 16, seed: int = 0, short: int = 0
) -> tuple[SetData, np.ndarray]:
    """Class = sign of the video's mean shift along a fixed direction. One clip alone is a poor
    guess (shift 0.6 against unit noise); the mean of 8 clips is a good one. The first `short`
    videos have only 5 valid views (the rest is zero padding)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(123).normal(size=dim)
    direction /= np.linalg.norm(direction)
    labels = rng.integers(0, 2, size=n)
    shift = np.where(labels == 1, 0.6, -0.6)[:, None, None] * direction  # (N, 1, D)
    feats = rng.normal(size=(n, views, dim)) + shift  # (N, K, D)
    t0 = rng.uniform(0, 0.9, size=(n, views))
    boxes = np.stack(
        [np.ones_like(t0), t0, np.zeros_like(t0), np.zeros_like(t0), t0 + 0.1]
        + [np.ones_like(t0)] * 2,
        axis=-1,
    )  # (N, K, 7)
    num_valid = np.full(n, views)
    num_valid[:short] = 5
    for i in range(short):
        feats[i, 5:] = 0.0
        boxes[i, 5:] = 0.0
    data = SetData(
        features=feats.astype(np.float32),
        boxes=boxes.astype(np.float32),
        num_valid=num_valid,
        labels=labels,
    )
    return data, labels


def test_sample_views_draws_distinct_valid_views():
    g = torch.Generator().manual_seed(0)
    num_valid = torch.tensor([8, 3, 1, 6])
    index, valid = sample_views(num_valid, stored=8, count=4, generator=g)
    assert index.shape == valid.shape == (4, 4)
    assert valid.tolist() == [[True] * 4, [True] * 3 + [False], [True] + [False] * 3, [True] * 4]
    for row, n in zip(index, num_valid, strict=True):
        chosen = row[: min(4, int(n))]
        assert len(set(chosen.tolist())) == len(chosen)  # without replacement
        assert (chosen < n).all()  # only valid views
    index, valid = sample_views(num_valid, stored=8, count=20, generator=g)
    assert index.shape == (4, 8)  # never more slots than stored views
    assert sorted(index[0].tolist()) == list(range(8))


def test_transformer_learns_set_level_task_beyond_chance():
    train, _ = mean_direction_task(256, seed=0, short=20)
    test, y_test = mean_direction_task(128, seed=1, short=10)
    probe, losses = fit_set_probe(dataclasses.replace(FAST, epochs=15), train, init=ARCH)
    scores = predict_set_probe(probe, dataclasses.replace(test, labels=None))
    assert scores.shape == (128, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)  # probabilities
    accuracy = (scores.argmax(axis=1) == y_test).mean()
    # Chance is 0.5 and one clip alone gets ~0.73; pooling the set gets ~0.95.
    assert accuracy > 0.8
    assert losses[-5:].mean() < 0.6 * losses[:5].mean()


def test_prediction_ignores_view_order():
    train, _ = mean_direction_task(64, seed=0)
    test, _ = mean_direction_task(16, seed=2, short=6)
    probe, _ = fit_set_probe(dataclasses.replace(FAST, epochs=2), train, init=ARCH)
    before = predict_set_probe(probe, test)
    rng = np.random.default_rng(0)
    feats, boxes = test.features.copy(), test.boxes.copy()
    for i, n in enumerate(test.num_valid):
        perm = rng.permutation(n)  # shuffle the valid views, keep padding at the end
        feats[i, :n], boxes[i, :n] = feats[i, perm], boxes[i, perm]
    shuffled = dataclasses.replace(test, features=feats, boxes=boxes)
    np.testing.assert_allclose(predict_set_probe(probe, shuffled), before, atol=1e-5)
    # Padding is ignored: changing padded rows changes nothing either.
    feats[:6, 5:] = 100.0
    np.testing.assert_allclose(
        predict_set_probe(probe, dataclasses.replace(test, features=feats, boxes=boxes)),
        before,
        atol=1e-5,
    )


def test_scale_ft_starts_from_pretrained_weights_and_leaves_them_alone():
    torch.manual_seed(0)
    pretrained = ScaleModel(dataclasses.replace(ARCH, dropout=0.0)).eval()
    reference = {k: v.clone() for k, v in pretrained.state_dict().items()}
    predictor = build_predictor(pretrained, dropout=0.3).eval()
    assert not any(
        k.startswith(("set_head", "pred_head", "target_head")) for k in predictor.state_dict()
    )
    feats, boxes = torch.randn(3, 5, 16), torch.rand(3, 5, 7)
    torch.testing.assert_close(
        predictor(feats, boxes).set, pretrained.embed(feats, boxes).set
    )  # same weights, so the same SET output in eval mode

    data, _ = mean_direction_task(64, seed=0)
    frozen = dataclasses.replace(FAST, epochs=2, predictor_lr_scale=0.0, weight_decay=0.1)
    probe, _ = fit_set_probe(frozen, data, init=pretrained)
    for k, v in probe.predictor.state_dict().items():
        torch.testing.assert_close(v, reference[k])  # lr scale 0: only the head trained
    probe, _ = fit_set_probe(dataclasses.replace(FAST, epochs=2), data, init=pretrained)
    moved = [not torch.equal(v, reference[k]) for k, v in probe.predictor.state_dict().items()]
    assert any(moved)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, reference[k])  # the init model itself is untouched


def test_training_is_seeded_and_keeps_the_callers_rng():
    data, _ = mean_direction_task(64, seed=0)
    cfg = dataclasses.replace(FAST, epochs=2, dropout=0.2)
    torch.manual_seed(99)
    state = torch.get_rng_state()
    first = fit_predict_set(cfg, data, data, init=ARCH)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)  # a different global state must not matter
    np.testing.assert_array_equal(fit_predict_set(cfg, data, data, init=ARCH), first)
    other = fit_predict_set(dataclasses.replace(cfg, seed=1), data, data, init=ARCH)
    assert not np.array_equal(other, first)


def test_regression_targets_use_mse():
    data, labels = mean_direction_task(128, seed=0)
    mean_shift = data.features.mean(axis=1) @ np.random.default_rng(123).normal(size=16)
    targets = (2.0 * mean_shift).astype(np.float32)  # (N,) float: a regression task
    reg = dataclasses.replace(data, labels=targets)
    probe, _ = fit_set_probe(dataclasses.replace(FAST, epochs=30), reg, init=ARCH)
    assert probe.task == "regression"
    pred = predict_set_probe(probe, reg)
    assert pred.shape == (128, 1)
    assert np.mean((pred[:, 0] - targets) ** 2) < 0.5 * np.var(targets)


def test_setdata_subset_and_validation():
    data, labels = mean_direction_task(10, seed=0)
    sub = data.subset(np.array([7, 2]))
    assert len(sub) == 2 and sub.labels.tolist() == [labels[7], labels[2]]
    feats, boxes, nv = sub.read(np.array([1]))
    np.testing.assert_array_equal(feats[0], data.features[2])
    assert boxes.shape == (1, 8, 7) and nv.tolist() == [8]
    with pytest.raises(ValueError, match="labels"):
        SetData(
            features=data.features, boxes=data.boxes, num_valid=data.num_valid, labels=labels[:3]
        )
    unlabelled = dataclasses.replace(data, labels=np.full(10, -1))
    with pytest.raises(ValueError, match=">= 0"):
        fit_set_probe(FAST, unlabelled, init=ARCH)


def test_clip_set_head_outputs_per_clip_and_averages_softmax():
    torch.manual_seed(0)
    predictor = build_predictor(dataclasses.replace(ARCH, dropout=0.0), dropout=0.0).eval()
    probe = SetProbe(predictor, out_dim=3, dropout=0.0, task="classification").eval()
    assert probe.head_kind == "clip_set" and probe.head.in_features == 16 + 32  # [D, H]
    feats, boxes = torch.randn(2, 5, 16), torch.rand(2, 5, 7)
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    out = probe(feats, boxes, valid)
    assert out.shape == (2, 5, 3)  # one output per clip
    pooled = predictor(feats, boxes, valid=valid).set  # (2, H)
    clip = feats[1, 2]
    normed = (clip - clip.mean()) / torch.sqrt(clip.var(unbiased=False) + 1e-5)
    by_hand = torch.cat([normed, pooled[1]]) @ probe.head.weight.T + probe.head.bias
    torch.testing.assert_close(out[1, 2], by_hand)  # W [LayerNorm(clip feature), SET] + b
    set_only = SetProbe(predictor, out_dim=3, dropout=0.0, task="classification", head="set")
    assert set_only(feats, boxes, valid).shape == (2, 1, 3)

    # The video's prediction averages the valid clips' softmax, not their logits.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [50.0, -50.0]]])  # (1, 3, 2)
    two_valid = torch.tensor([[True, True, False]])
    probs = combine_views(logits, two_valid, task="classification")
    torch.testing.assert_close(probs, torch.tensor([[0.625, 0.375]]))  # mean of .5/.5, .75/.25
    # Training loss: each valid clip's cross-entropy, averaged: -(log .5 + log .75) / 2.
    loss = set_probe_loss(logits, two_valid, torch.tensor([0]), task="classification")
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2, rel=1e-6)
    regression = combine_views(logits[..., :1], two_valid, task="regression")
    torch.testing.assert_close(regression, torch.tensor([[math.log(3.0) / 2]]))


@pytest.mark.parametrize("head", ["clip_set", "set"])
def test_both_heads_ignore_view_order(head):
    train, _ = mean_direction_task(64, seed=0)
    test, _ = mean_direction_task(12, seed=2, short=4)
    cfg = dataclasses.replace(FAST, epochs=2, head=head)
    probe, _ = fit_set_probe(cfg, train, init=ARCH)
    before = predict_set_probe(probe, test)
    assert before.shape == (12, 2)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
    perm = np.random.default_rng(1).permutation(8)
    shuffled = dataclasses.replace(
        test, features=test.features.copy(), boxes=test.boxes.copy(), num_valid=test.num_valid
    )
    for i, n in enumerate(test.num_valid):
        order = perm[perm < n]
        shuffled.features[i, :n] = test.features[i, order]
        shuffled.boxes[i, :n] = test.boxes[i, order]
    np.testing.assert_allclose(predict_set_probe(probe, shuffled), before, atol=1e-5)


def assert_same_weights(a: SetProbe, b: SetProbe, *, rtol: float, atol: float) -> None:
    """Equal weights, except the attention's key biases. The softmax over keys ignores a key
    bias (it adds q . b to every logit of a row), so its gradient is 0 up to rounding, and Adam
    scales that noise to steps of about lr: any other summation order (vmap or not) moves a key
    bias by up to lr per step without changing an output."""
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if name.endswith("qkv.bias"):  # (3 H,): query, key, value biases
            h = x.shape[0] // 3
            x, y = torch.cat([x[:h], x[2 * h :]]), torch.cat([y[:h], y[2 * h :]])
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=name)


def test_probes_trained_together_match_probes_trained_alone():
    data, _ = mean_direction_task(48, seed=0)
    other = data.subset(np.arange(40))  # a second training set (e.g. another fold)
    base = dataclasses.replace(FAST, batch_size=16, grad_clip=0.5, weight_decay=0.05)
    configs = [
        dataclasses.replace(base, lr=1e-3, steps=4),
        dataclasses.replace(base, lr=3e-3, steps=7),  # a longer budget: the first leaves early
        dataclasses.replace(base, lr=1e-3, steps=5, predictor_lr_scale=0.0),
    ]
    trains = [data, data, other]
    together = fit_set_probes(configs, trains, init=ARCH)
    for (probe, history), cfg, train in zip(together, configs, trains, strict=True):
        alone, alone_history = fit_set_probe(cfg, train, init=ARCH)
        assert len(history) == cfg.steps
        np.testing.assert_allclose(history, alone_history, rtol=1e-4, atol=1e-5)
        assert_same_weights(probe, alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="may differ only"):
        fit_set_probes([base, dataclasses.replace(base, num_views=2)], [data, data], init=ARCH)


@pytest.mark.parametrize("stacked_call", ["vmap", "one-by-one"])
def test_with_dropout_a_stack_matches_single_models_trained_without_vmap(
    stacked_call: str, monkeypatch: pytest.MonkeyPatch
):
    """Two probes on one training set train together, sharing dropout masks, as one vmap call
    (the CUDA path, forced here) or one by one with the random state rewound (the CPU path); a
    probe trained alone is called without vmap. All must draw the same masks and end at the same
    weights."""
    data, _ = mean_direction_task(48, seed=0)
    base = dataclasses.replace(FAST, batch_size=16, dropout=0.1, weight_decay=0.05, steps=6)
    configs = [dataclasses.replace(base, lr=1e-3), dataclasses.replace(base, lr=3e-3)]
    if stacked_call == "vmap":
        monkeypatch.setattr(set_probes, "_PLAIN_DEVICES", ())
    together = fit_set_probes(configs, [data, data], init=ARCH)
    monkeypatch.undo()
    for (probe, history), cfg in zip(together, configs, strict=True):
        alone, alone_history = fit_set_probe(cfg, data, init=ARCH)
        np.testing.assert_allclose(history, alone_history, rtol=1e-5, atol=1e-5)
        assert_same_weights(probe, alone, rtol=1e-5, atol=1e-5)
    assert not np.allclose(
        together[0][1],
        fit_set_probe(dataclasses.replace(configs[0], dropout=0.0), data, init=ARCH)[1],
    )  # dropout is on: the masks matter


def test_budget_in_steps_does_not_depend_on_the_training_set_size():
    cfg = dataclasses.replace(FAST, batch_size=16, epochs=3)
    assert cfg.total_steps(64) == 12 and cfg.total_steps(20) == 3  # epochs scale with N
    fixed = dataclasses.replace(cfg, steps=10)
    assert fixed.total_steps(64) == fixed.total_steps(20) == 10
    data, _ = mean_direction_task(20, seed=0)
    _, history = fit_set_probe(fixed, data, init=ARCH)
    assert history.shape == (10,)  # 10 steps cycle over the single 16-video batch per pass
    with pytest.raises(ValueError, match="steps"):
        FinetuneConfig(steps=0)
    with pytest.raises(ValueError, match="head"):
        FinetuneConfig(head="cls")
