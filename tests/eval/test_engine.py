"""The grid trainer against plain PyTorch: one probe trained by `eval.engine` (through the set
probes' and the heads' front doors) ends where a hand-written loop with an `nn.Module` and
`torch.optim.AdamW` ends; early stopping keeps the right curve and stops when it should; the
attentive probe's pooling is multi-head attention."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scalevid.eval.attentive import AttentiveConfig, AttentivePooling, AttentiveProbe
from scalevid.eval.clip_sets import ClipSetBatches
from scalevid.eval.engine import Curve, EarlyStopping, below_median
from scalevid.eval.heads import fit_heads
from scalevid.eval.probes import ProbeConfig, ProbeData
from scalevid.eval.set_probes import (
    FinetuneConfig,
    build_probe,
    fit_set_probe,
    set_probe_loss,
    train_set_grid,
)
from scalevid.train.schedule import param_groups, warmup_cosine, warmup_steps
from tests.eval.test_set_probes import ARCH, mean_direction_task

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = FinetuneConfig(
    lr=2e-3,
    weight_decay=0.05,
    steps=12,
    batch_size=8,
    num_views=4,
    dropout=0.0,
    grad_clip=0.5,
    seed=3,
    device="cpu",
)


def _plain_loop(init, config: FinetuneConfig, data, *, schedule: int) -> tuple[nn.Module, list]:
    """The reference: one nn.Module, torch.optim.AdamW over `param_groups`, clip_grad_norm_,
    the warm-up + cosine lr set by hand each step, on the batches one probe alone reads."""
    torch.manual_seed(config.seed)
    model = build_probe(init, config, in_dim=data.dim, out_dim=2, task="classification")
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    batches = ClipSetBatches(
        data, batch_size=config.batch_size, num_views=config.num_views, seed=config.seed
    )
    warmup = warmup_steps(config.warmup_fraction, schedule)
    losses = []
    for step in range(config.steps):
        x, bx, valid, y = batches.next(step, torch.device("cpu"))
        loss = set_probe_loss(model(x, bx, valid), valid, y, task="classification")
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine(step, total=schedule, warmup=warmup)
        optimizer.step()
        losses.append(loss.item())
    return model, losses


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if name.endswith("qkv.bias"):
            # The key bias adds one constant to every score of a query: its true gradient is 0,
            # and Adam scales the rounding noise left in its place up to lr-sized steps.
            third = p.shape[0] // 3
            p, q = torch.cat([p[:third], p[2 * third :]]), torch.cat([q[:third], q[2 * third :]])
        torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("init", [ARCH, AttentiveConfig(heads=4)], ids=["transformer", "attentive"])
def test_a_set_probe_ends_where_a_plain_torch_loop_ends(init):
    data, _ = mean_direction_task(40, short=5)
    probe, losses = fit_set_probe(CFG, data, init=init)
    reference, ref_losses = _plain_loop(init, CFG, data, schedule=CFG.steps)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-6)
    _assert_same(probe, reference)


def test_a_refit_replays_the_longer_schedule_up_to_its_step():
    """steps < schedule_steps: the lr follows the long schedule and training stops early."""
    data, _ = mean_direction_task(40)
    cut = dataclasses.replace(CFG, steps=7, schedule_steps=20)
    probe, losses = fit_set_probe(cut, data, init=ARCH)
    reference, ref_losses = _plain_loop(ARCH, cut, data, schedule=20)
    assert len(losses) == 7
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-6)
    _assert_same(probe, reference)
    shorter, _ = _plain_loop(ARCH, dataclasses.replace(cut, schedule_steps=None), data, schedule=7)
    assert not torch.allclose(shorter.head.weight, probe.head.weight)  # the schedule matters


def test_a_linear_head_ends_where_a_plain_torch_loop_ends():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3, 10)).astype(np.float32)
    labels = rng.integers(0, 3, size=48)
    config = ProbeConfig(kind="linear", lr=1e-2, weight_decay=1e-3, batch_size=16, epochs=3)
    grid, history = fit_heads([config], ProbeData(x=x, labels=labels))

    torch.manual_seed(config.seed)
    head = nn.Linear(10, 3)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=1e-3)
    generator = torch.Generator().manual_seed(config.seed)
    total, losses = 3 * (48 // 16), []
    for step in range(total):
        if step % 3 == 0:
            perm = torch.randperm(48, generator=generator)
        rows = perm[(step % 3) * 16 : (step % 3 + 1) * 16]
        noise = torch.rand(16, 3, generator=generator)  # the view order heads draw
        cols = noise.argsort(dim=1)[:, : config.clips_per_sample]
        batch = torch.from_numpy(x)[rows[:, None], cols].flatten(0, 1)
        y = torch.as_tensor(labels)[rows].repeat_interleave(config.clips_per_sample)
        loss = F.cross_entropy(head(batch), y)
        optimizer.zero_grad()
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine(step, total=total, warmup=0)
        optimizer.step()
        losses.append(loss.item())
    np.testing.assert_allclose(history[0], losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grid.weights[0][0], head.weight.detach().T, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grid.biases[0][0], head.bias.detach(), atol=1e-6, rtol=1e-5)


def test_curve_keeps_the_best_point_ties_going_to_the_lower_loss():
    curve = Curve()
    assert curve.add(10, 50.0, 0.9)
    assert curve.add(20, 60.0, 0.8)
    assert not curve.add(30, 60.0, 0.85)  # tied metric, higher loss
    assert curve.add(40, 60.0, 0.7)  # tied metric, lower loss
    assert not curve.add(50, 55.0, 0.1)
    assert curve.best_step == 40 and curve.since_best() == 1


def test_curve_progress_counts_a_lower_loss_on_a_plateau_of_the_metric():
    curve = Curve()
    curve.add(10, 50.0, 0.9)
    curve.add(20, 50.0, 0.95)
    assert curve.since_best() == 1 and curve.since_progress() == 1
    curve.add(30, 45.0, 0.8)  # metric below the best, loss the lowest yet: progress
    assert curve.best_step == 10 and curve.since_best() == 2 and curve.since_progress() == 0
    curve.add(40, 45.0, float("nan"))  # a NaN loss is never progress
    assert curve.since_progress() == 1 and curve.lowest == 2


def test_early_stopping_stops_a_group_after_patience_and_keeps_training_the_others():
    """Two grid points on two folds each; point 0's validation peaks at step 4, point 1's keeps
    improving: point 0 stops after `patience` validations past its peak, point 1 runs on."""
    data, _ = mean_direction_task(32)
    folds = [data.subset(np.arange(16)), data.subset(np.arange(16, 32))]
    configs = [dataclasses.replace(CFG, lr=lr, steps=20, schedule_steps=20) for lr in (1e-3, 2e-3)]
    jobs = [(i, f) for i in range(2) for f in range(2)]
    seen: list[tuple[int, list[int]]] = []
    built: dict[str, nn.Module] = {}

    def score(weights_of, active):
        step = len(seen) * 2 + 2
        seen.append((step, sorted(active)))
        for m in active:
            assert set(weights_of(m)) == {k for k, _ in built["template"].named_parameters()}
        groups = {jobs[m][0] for m in active}
        peak = {0: 50.0 - abs(step - 4), 1: float(step)}
        return {g: (peak[g], 1.0) for g in groups}

    def stopping(template: nn.Module) -> EarlyStopping:
        built["template"] = template
        return EarlyStopping(groups=[i for i, _ in jobs], score=score, every=2, patience=3)

    grid = train_set_grid(
        [configs[i] for i, _ in jobs], [folds[f] for _, f in jobs], init=ARCH, stopping=stopping
    )
    assert grid.curves[0].best_step == 4 and grid.curves[0].steps == [2, 4, 6, 8, 10]
    assert grid.stopped_at == [10, 10, 20, 20]
    assert grid.curves[1].best_step == 20
    assert [len(losses) for _, losses in grid.probes] == [10, 10, 20, 20]
    assert seen[5] == (12, [2, 3])  # point 0's models have left the stacks


def test_early_stopping_waits_while_the_validation_loss_falls():
    """A flat metric whose loss still falls (a plateau before the signal is found) keeps
    training; once neither improves for `patience` validations, the group stops."""
    data, _ = mean_direction_task(32)
    configs = [dataclasses.replace(CFG, steps=30, schedule_steps=30)]
    calls: list[int] = []

    def score(weights_of, active):
        step = 2 * (len(calls) + 1)
        calls.append(step)
        metric = 60.0 if step == 2 else 50.0  # an early lucky point, then a plateau
        return {0: (metric, max(1.0 - 0.05 * step, 0.5))}  # the loss falls until step 10

    grid = train_set_grid(
        configs,
        [data],
        init=ARCH,
        stopping=lambda template: EarlyStopping(groups=[0], score=score, every=2, patience=3),
    )
    assert grid.curves[0].best_step == 2  # chosen by the metric, as before
    assert grid.stopped_at == [16]  # 3 validations after the lowest loss (step 10), not 8


def test_single_query_pooling_is_multi_head_attention():
    torch.manual_seed(0)
    width, heads = 12, 3
    pool = AttentivePooling(width, heads)
    nn.init.normal_(pool.query)
    for layer in (pool.key, pool.value, pool.proj):
        nn.init.normal_(layer.bias)
    mha = nn.MultiheadAttention(width, heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(width), pool.key.weight, pool.value.weight]))
        mha.in_proj_bias.copy_(torch.cat([torch.zeros(width), pool.key.bias, pool.value.bias]))
        mha.out_proj.weight.copy_(pool.proj.weight)
        mha.out_proj.bias.copy_(pool.proj.bias)
    tokens = torch.randn(4, 5, width)
    valid = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]]
    ).bool()
    query = pool.query.expand(4, 1, width)
    expected, _ = mha(query, tokens, tokens, key_padding_mask=~valid)
    torch.testing.assert_close(pool(tokens, valid), expected[:, 0], atol=1e-5, rtol=1e-5)


def test_attentive_probe_is_a_set_function_that_ignores_padding():
    torch.manual_seed(0)
    probe = AttentiveProbe(
        AttentiveConfig(heads=2, blocks=1), in_dim=8, out_dim=3, dropout=0.0, task="classification"
    ).eval()
    x, boxes = torch.randn(2, 5, 8), torch.rand(2, 5, 7)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
    out = probe(x, boxes, valid)
    assert out.shape == (2, 1, 3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(
        probe(x[:, perm], boxes[:, perm], valid[:, perm]), out, atol=1e-5, rtol=1e-5
    )
    padded = x.clone()
    padded[1, 3:] = 1e3  # padded views carry garbage
    torch.testing.assert_close(probe(padded, boxes, valid)[1], out[1], atol=1e-5, rtol=1e-5)
    moved = boxes.clone()
    moved[0, 0, 1] += 0.5  # the box embedding is part of the token
    assert not torch.allclose(probe(x, moved, valid)[0], out[0])


def test_early_stopping_waits_for_min_steps():
    flat = EarlyStopping(
        groups=[0],
        score=lambda weights_of, active: {0: (1.0, 1.0)},
        every=1,
        patience=1,
        min_steps=5,
    )
    stopped = [flat.validate(step, lambda m: {}, [0]) for step in range(6)]
    assert stopped == [set(), set(), set(), set(), {0}, {0}]


def _curve(points: list[tuple[int, float]]) -> Curve:
    curve = Curve()
    for step, metric in points:
        curve.add(step, metric, 1.0)
    return curve


def test_median_rule_compares_the_best_point_with_the_finished_curves_running_means():
    """Golovin et al.'s rule by hand: at step 30 the finished curves' running means are
    (40+50+90)/3 = 60, (30+30+30)/3 = 30 and (80+80)/2 = 80 (its step-40 point not yet counted):
    median 60."""
    finished = [
        _curve([(10, 40.0), (20, 50.0), (30, 90.0)]),
        _curve([(10, 30.0), (20, 30.0), (30, 30.0), (40, 30.0)]),
        _curve([(20, 80.0), (30, 80.0), (40, 0.0)]),
    ]
    assert finished[0].running_mean(30) == pytest.approx(60.0)
    assert finished[2].running_mean(10) is None  # no validation yet at step 10
    assert below_median(_curve([(10, 20.0), (30, 59.0)]), finished, 30)
    assert not below_median(_curve([(10, 60.0), (30, 20.0)]), finished, 30)  # its best counts
    # at step 10 only two curves have a mean (40, 30): median 35
    assert below_median(_curve([(10, 34.0)]), finished, 10)
    assert not below_median(_curve([(10, 36.0)]), finished, 10)
    assert not below_median(_curve([(10, 0.0)]), [], 10)  # nothing finished: no reference


def test_median_rule_stops_a_trailing_point_after_min_steps_and_learns_from_its_own_pass():
    """Point 0 trails the finished curve of an earlier pass (running mean 70) and stops at the
    first validation past min_steps, pruned. Point 1 leads until it stops by its patience at
    step 8. Point 2 (slowly rising from 70) is not below the earlier curve's 70, but once point 1
    has finished it is below the median of 70 and point 1's running mean (90+95+95+90)/4 =
    92.5: it stops at step 10 (74 < 81.25). Point 0, pruned, is not a finished curve: counted,
    its running mean 10 would have made the median 70."""
    before = [_curve([(2, 70.0), (4, 70.0), (6, 70.0), (8, 70.0), (10, 70.0), (12, 70.0)])]
    metrics = {
        0: [10.0] * 6,
        1: [90.0, 95.0, 95.0, 90.0, 0.0, 0.0],  # best at step 4; patience 2 stops it at 8
        2: [70.0, 71.0, 72.0, 73.0, 74.0, 75.0],
    }
    rule = EarlyStopping(
        groups=[0, 1, 2],
        score=lambda weights_of, active: {g: (metrics[g][step[0]], 1.0) for g in active},
        every=2,
        patience=2,
        min_steps=4,
        median=True,
        finished=before,
    )
    step = [0]
    stops = []
    active = [0, 1, 2]
    for i in range(6):
        step[0] = i
        stopped = rule.validate(2 * i + 1, lambda m: {}, active)
        stops.append(sorted(stopped))
        active = [g for g in active if g not in stopped]
    assert stops == [[], [0], [], [1], [2], []]
    assert rule.pruned == {0, 2}  # point 1 stopped by its patience, not pruned
    assert len(before) == 1  # the caller's list is left alone
    off = EarlyStopping(
        groups=[0], score=lambda w, a: {0: (10.0, 1.0)}, every=1, patience=9, finished=before
    )
    assert [off.validate(s, lambda m: {}, [0]) for s in range(5)] == [set()] * 5  # median off


def test_every_probe_row_is_declared_once_and_consistently():
    from dataclasses import fields

    from scalevid.eval.config import EvalConfig
    from scalevid.eval.rows import BASELINES, PROBES, ROWS

    assert tuple(ROWS) == PROBES  # the report lists rows in the registry's order
    names = {f.name for f in fields(EvalConfig)}
    for row in ROWS.values():
        assert set(row.cache_fields) <= names, row.name
        if row.baseline is not None:
            base = ROWS[row.baseline]
            assert row.scale and not base.scale and base.family == row.family, row.name
            assert row.classification_only == base.classification_only
    assert set(BASELINES) == {r.name for r in ROWS.values() if not r.needs_run}


def test_loss_target_waits_for_min_steps_then_for_the_windowed_loss():
    from scalevid.eval.engine import LossTarget

    target = LossTarget(loss=0.5, min_steps=3, window=2)
    losses = [torch.tensor(v) for v in (0.1, 0.1, 0.9, 0.6, 0.3)]
    reached = [target.reached(losses[:n]) for n in range(1, 6)]
    # n=3: min_steps met but mean(0.1, 0.9) = 0.5 <= 0.5; n=4: mean(0.9, 0.6) > 0.5
    assert reached == [False, False, True, False, True]


def test_a_refit_with_a_loss_target_stops_between_its_min_steps_and_its_budget():
    from scalevid.eval.engine import LossTarget

    data, _ = mean_direction_task(32)
    config = dataclasses.replace(CFG, steps=15, schedule_steps=15)
    easy, never = LossTarget(1e9, min_steps=4, window=2), LossTarget(-1.0, min_steps=4, window=2)
    grid = train_set_grid([config, config], [data, data], init=ARCH, targets=[easy, never])
    assert grid.stopped_at == [4, 15]


def test_bf16_autocast_trains_the_same_probe_to_bf16_rounding(monkeypatch):
    """precision="bf16" runs the forward passes in bf16 autocast (weights and optimizer stay
    fp32): the losses follow the fp32 run's to bf16 rounding, and are not bit-identical."""
    from scalevid import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16_matmul", lambda: True)  # emulated where absent
    data, _ = mean_direction_task(40)
    _, fp32 = fit_set_probe(CFG, data, init=ARCH)
    probe, bf16 = fit_set_probe(dataclasses.replace(CFG, precision="bf16"), data, init=ARCH)
    assert all(p.dtype == torch.float32 for p in probe.parameters())
    np.testing.assert_allclose(bf16, fp32, rtol=0.05, atol=0.02)
    assert not np.array_equal(bf16, fp32)
