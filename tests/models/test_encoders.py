"""Transformer brain encoders on generated retinotopic data with known routing / weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.analysis.encoding import RidgeCV, r2_score
from neurofm.errors import DataError
from neurofm.models.encoders import (
    InContextEncoder,
    RoutingEncoder,
    sine_positional_embedding_2d,
)

H = W = 6
D = 8
N_Q, PER = 4, 6
# receptive field (2 x 2 patch block) of each region
RFS = [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, 4), (0, 5), (1, 4), (1, 5)],
       [(4, 0), (4, 1), (5, 0), (5, 1)], [(3, 3), (3, 4), (4, 3), (4, 4)]]
RF_IDX = [np.array([r * W + c for r, c in rf]) for rf in RFS]


def _retinotopic(n, rng, wv):
    """Each region's voxels read the mean patch feature of its receptive field, linearly."""
    f = rng.standard_normal((n, H * W, D)).astype(np.float32)
    y = np.concatenate([f[:, RF_IDX[q]].mean(1) @ wv[q].T for q in range(N_Q)], 1)
    return f, (y + 0.3 * rng.standard_normal(y.shape)).astype(np.float32)


def test_sine_positional_embedding_values():
    pe = sine_positional_embedding_2d(2, 3, 8)
    assert pe.shape == (6, 8)
    # patch (row 1, col 2): normalised coordinates (1, 1); first frequency is 1
    # layout: [sin(row), cos(row), sin(col), cos(col)], 2 frequencies each, first = 1
    np.testing.assert_allclose(pe[5, [0, 2, 4, 6]].numpy(), [0, 1, 0, 1], atol=1e-5)
    np.testing.assert_allclose(pe[0, [2, 3, 6, 7]].numpy(), 1.0)  # cos(0) at (0, 0)
    np.testing.assert_allclose(pe[0, [0, 1, 4, 5]].numpy(), 0.0)
    # patch (row 0, col 1): normalised column 0.5 -> sin(pi) at the first frequency
    np.testing.assert_allclose(pe[1, [4, 6]].numpy(), [0.0, -1.0], atol=1e-5)
    with pytest.raises(DataError, match="divisible by 4"):
        sine_positional_embedding_2d(2, 2, 6)


def test_routing_encoder_readout_uses_its_region_query():
    torch.manual_seed(0)
    t2q = np.array([0, 0, 1, 2])
    m = RoutingEncoder(4, 3, 4, t2q, grid=(2, 2), hidden_dim=8, n_heads=2)
    x = torch.randn(5, 2, 2, 4)
    out, attn = m(x, return_attention=True)
    assert out.shape == (5, 4) and attn.shape == (5, 3, 4)
    np.testing.assert_allclose(attn.sum(-1).detach().numpy(), 1.0, atol=1e-6)
    # changing the readout of target 2 changes only target 2; query 1 feeds only target 2
    with torch.no_grad():
        m.readout_w[2] += 1.0
    out2 = m(x)
    diff = (out2 - out).abs().amax(0).detach().numpy()
    assert diff[2] > 0 and np.all(diff[[0, 1, 3]] == 0)
    with pytest.raises(DataError, match="target_to_query"):
        RoutingEncoder(4, 2, 3, [0, 1, 2], grid=(2, 2))
    with pytest.raises(DataError, match="features"):
        m(torch.randn(5, 3, 4))


def test_routing_encoder_recovers_routing_and_beats_linear_readout():
    rng = np.random.default_rng(0)
    wv = rng.standard_normal((N_Q, PER, D))
    ftr, ytr = _retinotopic(200, rng, wv)
    fte, yte = _retinotopic(200, rng, wv)
    torch.manual_seed(0)
    m = RoutingEncoder(D, N_Q, N_Q * PER, np.repeat(np.arange(N_Q), PER), grid=(H, W),
                       hidden_dim=16, n_heads=2, dim_feedforward=32)
    m.fit(ftr, ytr, n_epochs=50, batch_size=32, lr=5e-3)
    assert m.loss_history_[-1] < 0.3 * m.loss_history_[0]
    r2_routing = r2_score(yte, m.predict(fte)).mean()
    # planted routing: attention mass on the true receptive field (chance = 4 / 36)
    att = m.attention_maps(fte).mean(0)
    mass = np.array([att[q, RF_IDX[q]].sum() for q in range(N_Q)])
    assert np.all(mass > 0.4), mass
    # linear readout from the flattened feature map, with more parameters than the encoder
    n_params = sum(p.numel() for p in m.parameters())
    lin = RidgeCV(alphas=np.logspace(-2, 6, 17)).fit(ftr.reshape(200, -1), ytr)
    assert n_params < lin.coef_.size
    r2_linear = lin.score(fte.reshape(200, -1), yte).mean()
    assert r2_routing > r2_linear + 0.1, (r2_routing, r2_linear)


def test_in_context_encoder_shapes_permutation_and_mask():
    torch.manual_seed(0)
    m = InContextEncoder(5, dim=16, n_layers=2, n_heads=2).eval()
    cx, cy = torch.randn(3, 7, 5), torch.randn(3, 7)
    w = m(cx, cy)
    assert w.shape == (3, 6)
    perm = torch.randperm(7)
    np.testing.assert_allclose(m(cx[:, perm], cy[:, perm]).detach(), w.detach(), atol=1e-5)
    # padded context entries are ignored
    padded_x = torch.cat([cx, torch.randn(3, 2, 5) * 100], 1)
    padded_y = torch.cat([cy, torch.randn(3, 2) * 100], 1)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[:, 7:] = False
    np.testing.assert_allclose(m(padded_x, padded_y, mask).detach(), w.detach(), atol=1e-5)
    q = torch.randn(3, 4, 5)
    pred = m.apply_weights(w, q)
    np.testing.assert_allclose(pred.detach(), (q @ w[:, :5, None])[..., 0].detach()
                               + w[:, None, 5].detach(), atol=1e-6)
    with pytest.raises(DataError, match="context"):
        m(torch.randn(3, 7, 4), cy)


def _bump_voxels(n, rng, g=4, sigma=0.8):
    """Retinotopic voxels: Gaussian receptive field on a g x g feature grid, random gain."""
    gy, gx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    c = rng.uniform(0, g - 1, (n, 2))
    gain = rng.uniform(0.5, 1.5, n)
    w = np.exp(-((gy.ravel()[None] - c[:, :1]) ** 2 + (gx.ravel()[None] - c[:, 1:]) ** 2)
               / (2 * sigma ** 2))
    return (w * gain[:, None] * 1.5).T


def test_in_context_encoder_meta_training_reduces_query_loss():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((200, 16)).astype(np.float32)
    w = _bump_voxels(100, rng)
    y = (f @ w + 0.5 * rng.standard_normal((200, 100))).astype(np.float32)
    torch.manual_seed(0)
    m = InContextEncoder(16, dim=32, n_layers=2, n_heads=4)
    r2_before = r2_score(y[150:, :10], m.predict(f[:20], y[:20, :10], f[150:])).mean()
    m.fit(f, y, n_steps=60, context_size=(8, 24), n_query=16, batch_voxels=32, lr=2e-3)
    first, last = np.mean(m.loss_history_[:10]), np.mean(m.loss_history_[-10:])
    assert last < 0.85 * first
    pred = m.predict(f[:20], y[:20, :10], f[150:])
    assert pred.shape == (50, 10)
    r2_after = r2_score(y[150:, :10], pred).mean()
    assert r2_before < 0 < 0.2 < r2_after, (r2_before, r2_after)


@pytest.mark.slow
def test_in_context_encoder_beats_ridge_on_new_voxels():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((400, 16)).astype(np.float32)
    w_train, w_new = _bump_voxels(300, rng), _bump_voxels(100, rng)
    y_train = (f @ w_train + 0.5 * rng.standard_normal((400, 300))).astype(np.float32)
    y_new = (f @ w_new + 0.5 * rng.standard_normal((400, 100))).astype(np.float32)
    torch.manual_seed(0)
    m = InContextEncoder(16, dim=48, n_layers=2, n_heads=4)
    m.fit(f[:300], y_train[:300], n_steps=4000, context_size=(4, 16), n_query=16,
          batch_voxels=32, lr=3e-3)
    ctx, q = slice(300, 306), slice(312, 400)  # 6 context images for 16 features
    r2_icl = r2_score(y_new[q], m.predict(f[ctx], y_new[ctx], f[q])).mean()
    ridge = RidgeCV(alphas=np.logspace(-3, 4, 15), cv=3, fit_intercept=True)
    r2_ridge = ridge.fit(f[ctx], y_new[ctx]).score(f[q], y_new[q]).mean()
    assert r2_icl > r2_ridge, (r2_icl, r2_ridge)
