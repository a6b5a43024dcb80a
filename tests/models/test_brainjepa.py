"""BrainJEPA architecture: shapes, positions, init, padding, precision, compile."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from neurofm.errors import DataError, NeurofmError
from neurofm.models import BrainJEPA
from neurofm.models.brainjepa import SIZES
from neurofm.models.layers import DropPath
from neurofm.models.positional import BrainPositions, sincos_1d

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4, "predictor_embed_dim": 16,
        "predictor_depth": 1}


def _grad(r, k=5, seed=0):
    return np.random.default_rng(seed).standard_normal((r, k))


@pytest.mark.parametrize(("r", "t"), [(7, 32), (100, 50), (450, 160), (33, 16)])
def test_encode_token_counts(r, t):
    torch.manual_seed(0)
    model = BrainJEPA(r, t, gradients=_grad(r), **TINY).eval()
    x = torch.randn(1, r, t)
    z = model.encode(x)
    assert z.shape == (1, r * (t // 16), 32)
    # reference layout (B, 1, R, T) gives the same tokens
    assert torch.allclose(model.encode(x[:, None]), z)
    # frames past the last full patch are ignored
    if t % 16:
        assert torch.allclose(model.encode(x[..., : (t // 16) * 16]), z)


def test_time_patches_come_from_the_input_not_the_config():
    model = BrainJEPA(10, 160, gradients=_grad(10), **TINY).eval()
    assert model.encode(torch.randn(1, 10, 64)).shape == (1, 40, 32)
    assert model.encode(torch.randn(1, 10, 320)).shape == (1, 200, 32)


def test_presets_and_parameter_count():
    with torch.device("meta"):  # no memory, no init cost
        for size, (d, depth, heads) in SIZES.items():
            cfg = BrainJEPA(450, 160, size=size, predictor_depth=0).config
            assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (d, depth, heads)
        model = BrainJEPA(450, 160, size="base")
    d, k = 768, 30
    block = (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d
    expected = (16 * d + d) + (k * d // 2 + d // 2) + 12 * block + 2 * d
    assert sum(p.numel() for p in model.encoder.parameters()) == expected
    p = 384
    pblock = (p * 3 * p + 3 * p) + (p * p + p) + (p * 4 * p + 4 * p) + (4 * p * p + p) + 4 * p
    pexpected = (d * p + p) + p + (k * p // 2 + p // 2) + 6 * pblock + 2 * p + (p * d + d)
    assert sum(q.numel() for q in model.predictor.parameters()) == pexpected
    assert model.predictor.blocks[0].attn.num_heads == 12


def test_sincos_1d_matches_the_mae_formula():
    pos = torch.arange(7)
    emb = sincos_1d(8, pos).numpy()
    omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
    out = np.arange(7)[:, None] * omega[None, :]
    np.testing.assert_allclose(emb, np.concatenate([np.sin(out), np.cos(out)], 1), atol=1e-6)


def test_gradient_positions_closed_form():
    r, p, d = 6, 4, 16
    g = _grad(r, 3)
    pos = BrainPositions(d, r, gradients=g)
    out = pos(p).detach()
    assert out.shape == (r * p, d)
    # temporal half first: sin-cos of the time-patch index, identical for every ROI
    temporal = sincos_1d(d // 2, torch.arange(p)).repeat(r, 1)
    assert torch.allclose(out[:, : d // 2], temporal, atol=1e-6)
    # spatial half: Linear(G), min-max scaled over the whole matrix, repeated per time patch
    s = pos.proj(torch.as_tensor(g, dtype=torch.float32)).detach()
    s = 2 * (s - s.min()) / (s.max() - s.min()) - 1
    assert torch.allclose(out[:, d // 2:], s.repeat_interleave(p, 0), atol=1e-6)
    assert float(out[:, d // 2:].min()) == pytest.approx(-1) and \
        float(out[:, d // 2:].max()) == pytest.approx(1)
    # token roi * P + t carries ROI roi's spatial code
    assert torch.equal(out[2 * p + 3, d // 2:], out[2 * p, d // 2:])


def test_sincos_ablation_positions():
    pos = BrainPositions(8, 5, mode="sincos")
    out = pos(3)
    assert torch.allclose(out[:, :4], sincos_1d(4, torch.arange(3)).repeat(5, 1))
    assert torch.allclose(out[:, 4:], sincos_1d(4, torch.arange(5)).repeat_interleave(3, 0))
    assert not list(pos.parameters())
    # any ROI count with sin-cos positions
    model = BrainJEPA(5, 32, pos_embed="sincos", **TINY)
    assert model.encode(torch.randn(1, 9, 32)).shape == (1, 18, 32)


def test_init_follows_the_reference():
    torch.manual_seed(0)
    kw = {"embed_dim": 96, "depth": 12, "num_heads": 4, "predictor_depth": 2,
          "predictor_embed_dim": 32, "gradients": _grad(20)}
    model = BrainJEPA(20, 32, **kw)
    blocks = model.encoder.blocks
    assert blocks[0].norm1.eps == 1e-6 and blocks[0].attn.qkv.bias is not None
    assert float(blocks[0].attn.qkv.bias.detach().abs().max()) == 0.0
    # trunc_normal(0.02) cut at +-2 (absolute, as timm): effectively N(0, 0.02)
    qkv_std = float(torch.cat([b.attn.qkv.weight.detach().flatten() for b in blocks]).std())
    assert qkv_std == pytest.approx(0.02, rel=0.02)
    for layer_id in (1, 6, 12):
        w = blocks[layer_id - 1].mlp.fc2.weight.detach()
        assert float(w.std()) == pytest.approx(0.02 / math.sqrt(2 * layer_id), rel=0.05)
        w = blocks[layer_id - 1].attn.proj.weight.detach()
        assert float(w.std()) == pytest.approx(0.02 / math.sqrt(2 * layer_id), rel=0.08)
    assert float(model.predictor.blocks[1].mlp.fc2.weight.detach().std()) == pytest.approx(
        0.02 / 2, rel=0.05)
    plain = BrainJEPA(20, 32, rescale_init=False, **kw)
    assert float(plain.encoder.blocks[11].mlp.fc2.weight.detach().std()) == pytest.approx(
        0.02, rel=0.05)
    assert model.predictor.mask_token.std() > 0


def test_config_is_json_safe_and_rebuilds():
    import json

    model = BrainJEPA(12, 48, gradients=_grad(12, 4), drop_path=0.1, **TINY)
    cfg = json.loads(json.dumps(model.config))
    rebuilt = BrainJEPA.from_config(cfg)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.gradients, model.gradients)
    x = torch.randn(2, 12, 48)
    assert torch.allclose(rebuilt.eval().encode(x), model.eval().encode(x))


def test_gradients_from_files(tmp_path):
    g = _grad(9, 4).astype(np.float32)
    np.savetxt(tmp_path / "g.csv", g, delimiter=",")
    np.save(tmp_path / "g.npy", g)
    for f in ("g.csv", "g.npy"):
        m = BrainJEPA(9, 32, gradients=tmp_path / f, **TINY)
        assert np.allclose(m.gradients.numpy(), g, atol=1e-6)
        assert m.config["n_gradients"] == 4


def test_missing_gradients_and_bad_inputs():
    model = BrainJEPA(10, 32, **TINY)
    with pytest.raises(NeurofmError, match="gradients were never set"):
        model.encode(torch.randn(1, 10, 32))
    model.set_gradients(_grad(10, 30))
    assert model.encode(torch.randn(1, 10, 32)).shape == (1, 20, 32)
    with pytest.raises(DataError, match="11 ROIs"):
        model.encode(torch.randn(1, 11, 32))
    with pytest.raises(DataError, match="fewer than one patch"):
        model.encode(torch.randn(1, 10, 8))
    with pytest.raises(NeurofmError, match="n_rois=10"):
        BrainJEPA(10, 32, gradients=_grad(11), **TINY)
    with pytest.raises(NeurofmError, match="size"):
        BrainJEPA(10, 32, size="huge")
    with pytest.raises(NeurofmError, match="divisible"):
        BrainJEPA(10, 32, embed_dim=30, num_heads=3, gradients=_grad(10))
    with pytest.raises(NeurofmError, match="shape"):
        model.set_gradients(_grad(10, 3))


def test_masked_forward_and_key_padding():
    """Padding (False in the masks) changes nothing at the real positions."""
    torch.manual_seed(1)
    model = BrainJEPA(8, 64, gradients=_grad(8), **TINY).eval()
    x = torch.randn(2, 8, 64)
    ctx = torch.tensor([[0, 3, 5, 9, 12], [1, 2, 4, 6, 8]])
    tgt = torch.tensor([[20, 21, 22], [30, 31, 7]])
    pred = model(x, ctx, tgt)
    assert pred.shape == (2, 3, 32)
    # sample 1 alone, then padded with junk indices that are masked out
    alone = model(x[1:], ctx[1:, :3], tgt[1:, :2])
    cm = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    tm = torch.tensor([[True] * 3, [True, True, False]])
    padded = model(x, ctx, tgt, context_mask=cm, target_mask=tm)
    assert torch.allclose(padded[1, :2], alone[0], atol=1e-5)
    assert torch.allclose(padded[0], pred[0], atol=1e-5)
    # the encoder attends only to the kept tokens: equal to encoding the gathered tokens
    z = model.encoder(x, ctx)
    z2 = model.encoder(x[:1], ctx[:1])
    assert torch.allclose(z[:1], z2, atol=1e-5)


def test_drop_path():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    y = dp(torch.ones(2000, 3))
    kept = y[:, 0] > 0
    assert torch.all(y[kept] == 2.0) and torch.all(y[~kept] == 0.0)
    assert 0.45 < kept.float().mean() < 0.55
    assert torch.equal(dp.eval()(torch.ones(4, 3)), torch.ones(4, 3))
    model = BrainJEPA(6, 32, gradients=_grad(6), drop_path=0.3, **TINY)
    assert model.encoder.blocks[-1].drop_path.p == pytest.approx(0.3)
    assert isinstance(model.encoder.blocks[0].drop_path, torch.nn.Identity)  # rate 0


def test_bf16_autocast_forward_on_cpu():
    torch.manual_seed(0)
    model = BrainJEPA(16, 64, gradients=_grad(16), **TINY).eval().requires_grad_(False)
    x = torch.randn(2, 16, 64)
    ref = model.encode(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.encode(x)
        ctx, tgt = torch.arange(10)[None].repeat(2, 1), torch.arange(20, 30)[None].repeat(2, 1)
        pred = model(x, ctx, tgt)
    assert low.dtype == torch.bfloat16 and pred.dtype == torch.bfloat16
    rel = float(((low.float() - ref).norm() / ref.norm()).detach())
    assert rel < 0.05


def test_dynamo_traces_without_graph_breaks():
    """fullgraph=True: the encoder and predictor compile as single graphs."""
    torch.manual_seed(0)
    model = BrainJEPA(8, 32, gradients=_grad(8), **TINY).eval()
    x = torch.randn(2, 8, 32)
    ctx, tgt = torch.tensor([[0, 2, 5], [1, 3, 4]]), torch.tensor([[6, 7], [8, 9]])
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x, ctx, tgt), model(x, ctx, tgt), atol=1e-6)


@pytest.mark.slow
def test_torch_compile_inductor_on_cpu():
    torch.manual_seed(0)
    model = BrainJEPA(8, 32, gradients=_grad(8), **TINY).eval()
    x = torch.randn(2, 8, 32)
    torch._dynamo.reset()
    enc = torch.compile(model.encoder)
    assert torch.allclose(enc(x), model.encoder(x), atol=1e-5)


def test_import_is_light():
    code = ("import sys, neurofm.models as m; assert 'lightning' not in sys.modules; "
            "assert 'neurofm.models.brainjepa' not in sys.modules; m.BrainJEPA; "
            "assert 'lightning' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
