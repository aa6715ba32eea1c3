import pytest
import torch

from scalevid.model import ModelConfig, ScaleModel


def small_model(**kw) -> ScaleModel:
    cfg = ModelConfig(
        input_dim=12,
        hidden=16,
        depth=2,
        heads=4,
        dropout=0.0,
        set_head=(32, 8),
        pred_head=(32, 8),
        target_head=(24, 24, 8),
        **kw,
    )
    torch.manual_seed(0)
    return ScaleModel(cfg).eval()


def inputs(b=2, n=6, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.rand(b, n, 7, generator=g)


def test_output_shapes():
    model = small_model()
    f, bx = inputs()
    out = model(f, bx)
    assert out.clips.shape == (2, 6, 16) and out.set.shape == (2, 16)


def test_permuting_clips_permutes_outputs_and_keeps_set():
    model = small_model()
    f, bx = inputs()
    masked = torch.zeros(2, 6, dtype=torch.bool)
    masked[:, 2] = True
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = model(f, bx, masked=masked)
    outp = model(f[:, perm], bx[:, perm], masked=masked[:, perm])
    torch.testing.assert_close(outp.clips, out.clips[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outp.set, out.set, atol=1e-5, rtol=1e-5)


def test_padded_clips_change_nothing_for_valid_ones():
    model = small_model()
    f, bx = inputs(b=1, n=4)
    ref = model(f, bx)
    g = torch.Generator().manual_seed(1)
    f_pad = torch.cat([f, 100 * torch.randn(1, 3, 12, generator=g)], dim=1)
    bx_pad = torch.cat([bx, torch.rand(1, 3, 7, generator=g)], dim=1)
    valid = torch.tensor([[True] * 4 + [False] * 3])
    out = model(f_pad, bx_pad, valid=valid)
    torch.testing.assert_close(out.clips[:, :4], ref.clips, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.set, ref.set, atol=1e-5, rtol=1e-5)


def test_masked_clip_feature_is_hidden_but_box_is_seen():
    model = small_model()
    f, bx = inputs(b=1, n=5)
    masked = torch.tensor([[False, True, False, False, False]])
    f2 = f.clone()
    f2[0, 1] += 5.0  # the masked clip's feature must not matter
    a, b = model(f, bx, masked=masked), model(f2, bx, masked=masked)
    torch.testing.assert_close(a.set, b.set)
    bx2 = bx.clone()
    bx2[0, 1, 1] += 0.5  # its box must
    c = model(f, bx2, masked=masked)
    assert not torch.allclose(a.clips[0, 1], c.clips[0, 1])


def test_heads_are_bias_free_without_norms():
    model = small_model()
    for head in (model.set_head, model.pred_head, model.target_head):
        for m in head.modules():
            assert not isinstance(m, torch.nn.LayerNorm | torch.nn.BatchNorm1d)
            if isinstance(m, torch.nn.Linear):
                assert m.bias is None
    f, _ = inputs()
    assert model.target_head(f).shape == (2, 6, 8)  # input_dim 12 -> the embedding size 8


def test_embed_single_and_batched_agree_and_restores_mode():
    model = small_model().train()
    f, bx = inputs(b=1, n=5)
    one = model.embed(f[0].numpy(), bx[0].numpy())
    many = model.embed(f, bx, valid=torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(one.set, many.set[0])
    assert model.training


def test_cpu_dropout_rate_scale_gradient_and_determinism():
    from scalevid.model import Dropout

    drop = Dropout(0.1).train()
    x = torch.ones(1000, 1001)  # odd size: the last 64-bit draw is only partly used
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    rate = 1 - kept.float().mean().item()
    # binomial s.e. of the rate over 1e6 elements is 3e-4
    assert abs(rate - 0.1) < 1.5e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the default generator drives it, as nn.Dropout
    xg = torch.randn(64, 33, requires_grad=True)
    out = drop(xg)
    out.sum().backward()
    expected = torch.where(out != 0, 1 / 0.9, 0.0)
    assert torch.allclose(xg.grad, expected)
    # the four 16-bit lanes of each draw: each drops at rate p, and pairs drop together at p^2
    lanes = (~kept).flatten()[: 4 * 250_000].view(-1, 4).float()
    assert ((lanes.mean(0) - 0.1).abs() < 3e-3).all()
    joint = (lanes[:, :3] * lanes[:, 1:]).mean(0)  # 2.5e5 pairs each: s.e. 2e-4
    assert ((joint - 0.01).abs() < 1e-3).all()
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_dropout_equals_where_of_the_same_mask(dtype):
    from scalevid.model import Dropout

    drop = Dropout(0.1).train()
    x = torch.randn(64, 9, 257).to(dtype).requires_grad_()
    torch.manual_seed(3)
    y = drop(x)
    y.backward(torch.ones_like(y))
    torch.manual_seed(3)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = words.view(torch.int16)[:n].view(x.shape) >= -32768 + round(0.1 * 65536)
    expected = torch.where(keep, x.detach() * (1.0 / 0.9), 0.0)  # the reference formula
    assert y.dtype == dtype
    assert torch.equal(y, expected)  # equal values (a dropped -0.0 equals 0.0)
    assert torch.equal(x.grad, torch.where(keep, torch.ones_like(y) * (1.0 / 0.9), 0.0))


def test_init_release_and_trunc_normal():
    """ "release": torch's default Linear init (uniform in +-1/sqrt(fan_in)) and zero tokens, as
    the authors' release; "trunc_normal": std 0.02 weights, zero biases, std 0.02 tokens."""
    cfg = dict(
        input_dim=64,
        hidden=64,
        heads=2,
        set_head=(256, 16),
        pred_head=(256, 16),
        target_head=(256, 16),
    )
    torch.manual_seed(0)
    release = ScaleModel(ModelConfig(**cfg, init="release"))
    torch.manual_seed(0)
    normal = ScaleModel(ModelConfig(**cfg, init="trunc_normal"))
    assert not release.msk_token.any() and not release.set_token.any()
    assert normal.msk_token.std() > 0.01 and normal.set_token.std() > 0.01
    box_in = release.box_embed[0].weight  # fan_in 7: uniform in +-1/sqrt(7)
    assert box_in.abs().max() <= 7**-0.5 and box_in.std() > 0.15  # 1/sqrt(21) = 0.218
    assert 0.015 < normal.box_embed[0].weight.std() < 0.025  # ~10x smaller at the start
    assert release.box_embed[0].bias.abs().sum() > 0 and not normal.box_embed[0].bias.any()
    assert 0.015 < normal.set_head[0].weight.std() < 0.025
    assert abs(release.set_head[0].weight.std().item() - (3 * 64) ** -0.5) < 0.01
    # the choice travels with the config (and so with checkpoints); older configs without the
    # key rebuild with the default
    assert ModelConfig.from_dict(normal.config.to_dict()).init == "trunc_normal"
    old = normal.config.to_dict()
    del old["init"]
    assert ModelConfig.from_dict(old).init == ModelConfig().init
    with pytest.raises(ValueError, match="init"):
        ModelConfig(init="xavier")


def _qkv(b=3, heads=2, n=5, d=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, heads, n, d, generator=g) for _ in range(3)]


def _reference_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d)) v in float64, masked keys left out by hand."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    weights = torch.exp(scores - scores.amax(-1, keepdim=True)) * mask
    return (weights / weights.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_attention_matches_the_formula_with_masked_keys(dtype):
    from scalevid.model import Dropout, attention

    q, k, v = _qkv()
    mask = torch.ones(3, 1, 1, 5, dtype=torch.bool)
    mask[0, ..., 3:] = False  # the first set keeps two keys
    reference = _reference_attention(q, k, v, mask)
    drop = Dropout(0.3).eval()  # inactive outside training
    out = attention(*(t.to(dtype) for t in (q, k, v)), mask, drop)
    assert out.dtype == dtype
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-5  # bf16 keeps 8 bits of mantissa
    torch.testing.assert_close(out.double(), reference, atol=tol, rtol=tol)


def test_short_half_precision_sets_on_a_cpu_take_the_explicit_path(monkeypatch):
    import torch.nn.functional as F

    from scalevid import model as model_mod
    from scalevid.model import SHORT_SET_TOKENS, Dropout, attention

    fused: list[torch.dtype] = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        model_mod.F,
        "scaled_dot_product_attention",
        lambda q, *a, **kw: fused.append(q.dtype) or real(q, *a, **kw),
    )
    drop = Dropout(0.0)
    attention(*(t.bfloat16() for t in _qkv()), None, drop)
    assert fused == []  # explicit
    attention(*_qkv(), None, drop)  # fp32: the fused kernel
    long = [t.bfloat16() for t in _qkv(b=1, heads=1, n=SHORT_SET_TOKENS + 1)]
    attention(*long, None, drop)  # a long set: the fused kernel
    assert fused == [torch.float32, torch.bfloat16]


def test_attention_dropout_drops_weights_and_keeps_their_expectation():
    from scalevid.model import Dropout, attention

    q, k, v = (t.bfloat16() for t in _qkv(b=64, n=9))
    drop = Dropout(0.5).train()
    outs = []
    for seed in range(20):
        torch.manual_seed(seed)
        outs.append(attention(q, k, v, None, drop).float())
    torch.manual_seed(0)
    assert torch.equal(attention(q, k, v, None, drop).float(), outs[0])  # the default RNG's
    assert not torch.equal(outs[0], outs[1])
    mean = torch.stack(outs).mean(0)
    plain = attention(q, k, v, None, drop.eval()).float()
    # 20 draws of a 0.5 keep-mask scaled by 2: the mean is the plain output up to its noise
    assert (mean - plain).abs().mean() < 0.25 * plain.abs().mean()
