"""How the probes normalise their inputs: a SCALE row and its baseline get the same BatchNorm
choice, and the SCALE_kNN vector weighs its clip part and its SET part equally."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from scalevid.eval import families as ev
from scalevid.eval.clip_sets import SetData
from scalevid.eval.config import EvalConfig
from scalevid.eval.probes import ProbeConfig, ProbeData, video_vectors
from scalevid.eval.representations import ClipVectors, Representations
from scalevid.eval.selection import fit_predict
from scalevid.eval.splits import topk_accuracy
from scalevid.model import ModelConfig, ScaleModel


def _context(config: EvalConfig, *, dim: int = 6, hidden: int = 4) -> ev.Context:
    n, views = 10, 3
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, views, dim)).astype(np.float32)
    sets = rng.normal(size=(n, hidden)).astype(np.float32)
    reps = Representations(
        raw=ClipVectors(feats),
        scale=ClipVectors(feats, extra=sets),
        sets=SetData(
            features=feats, boxes=np.zeros((n, views, 7), np.float32), num_valid=np.full(n, views)
        ),
        num_valid=np.full(n, views),
    )
    heads = {"set_head": (8, 4), "pred_head": (8, 4), "target_head": (8, 4)}
    model = ScaleModel(ModelConfig(input_dim=dim, hidden=hidden, heads=1, **heads))
    return ev.Context(
        config=config,
        task="classification",
        num_classes=2,
        train_labels=np.arange(n) % 2,
        train=reps,
        test=reps,
        model=model,
        device=torch.device("cpu"),
    )


def _without_batchnorm(configs: list[ProbeConfig]) -> list[ProbeConfig]:
    return [dataclasses.replace(c, batchnorm=False) for c in configs]


def test_linear_and_scale_linear_choose_batchnorm_from_the_same_grid():
    """The SCALE row and its baseline search the same grid: BatchNorm on and off (chosen on
    validation) crossed with the same lrs and weight decays; the MLP has no BatchNorm."""
    config = EvalConfig(head_lrs=(1e-3, 1e-2), head_weight_decays=(0.0,))
    ctx = _context(config)
    linear = ev._head_configs("linear", ctx, seed=0)
    scale = ev._head_configs("scale_linear", ctx, seed=0)
    assert linear == scale  # nothing but the input differs between the two rows
    grid = [(False, 1e-3), (False, 1e-2), (True, 1e-3), (True, 1e-2)]
    assert sorted((c.batchnorm, c.lr) for c in linear) == grid
    assert not any(c.batchnorm for c in ev._head_configs("mlp", ctx, seed=0))

    for fixed in (True, False):  # one fixed choice applies to both rows alike
        ctx = _context(dataclasses.replace(config, linear_batchnorm=fixed))
        for name in ("linear", "scale_linear"):
            assert {c.batchnorm for c in ev._head_configs(name, ctx, seed=0)} == {fixed}
    with pytest.raises(ValueError, match="linear_batchnorm"):
        EvalConfig(linear_batchnorm=())


def test_scale_knn_config_names_its_parts():
    ctx = _context(EvalConfig(), dim=6, hidden=4)
    (scale,) = ev._head_configs("scale_knn", ctx, seed=0)
    (plain,) = ev._head_configs("knn", ctx, seed=0)
    assert scale.parts == (6, 4) and plain.parts == ()  # [clip feature (D), SET (H)]
    ctx = _context(EvalConfig(scale_knn_normalize="whole"))
    assert ev._head_configs("scale_knn", ctx, seed=0)[0].parts == ()
    with pytest.raises(ValueError, match="scale_knn_normalize"):
        EvalConfig(scale_knn_normalize="half")


def _bank(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 4 + 3) clip vectors: a small-norm part that carries the class (one-hot-like
    directions) and a part with a 1000x larger norm that points almost the same way for every
    video (tiny class-free noise)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    small = np.eye(4)[labels] + 0.05 * rng.normal(size=(n, 4))
    big = 1000.0 * (np.array([1.0, 0.0, 0.0]) + 0.3 * rng.normal(size=(n, 3)))
    x = np.concatenate([small, big], axis=1)[:, None, :].repeat(2, axis=1)  # two equal views
    return x.astype(np.float32), labels


def test_per_part_normalisation_stops_a_huge_part_from_dominating_knn():
    x_train, y_train = _bank(200, seed=0)
    x_test, y_test = _bank(80, seed=1)
    train = ProbeData(x=x_train, num_valid=np.full(200, 2), labels=y_train)
    test = ProbeData(x=x_test, num_valid=np.full(80, 2))
    accuracy = {}
    for parts in ((), (4, 3)):
        config = ProbeConfig(kind="knn", k=10, parts=parts, num_classes=4)
        accuracy[parts] = topk_accuracy(fit_predict(config, train, test), y_test, ks=(1,))[1]
    assert accuracy[(4, 3)] == 100.0
    assert accuracy[()] < 60.0  # the big part's noise decides: near the 25% of chance

    vec = video_vectors(x_test, np.full(80, 2), parts=(4, 3))
    np.testing.assert_allclose(np.linalg.norm(vec[:, :4], axis=1), 0.5**0.5, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vec[:, 4:], axis=1), 0.5**0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="add up"):
        video_vectors(x_test, np.full(80, 2), parts=(4, 4))
