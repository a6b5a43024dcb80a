"""JEPAObjective: EMA target encoder, normalized targets, smooth-L1, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurofm.errors import DataError, NeurofmError
from neurofm.masking import SpatiotemporalMaskCollator
from neurofm.models import BrainJEPA
from neurofm.objectives import JEPAObjective

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4, "predictor_embed_dim": 16,
        "predictor_depth": 1}


def _model(r=12, t=64, seed=0, **kw):
    torch.manual_seed(seed)
    g = np.random.default_rng(seed).standard_normal((r, 5))
    return BrainJEPA(r, t, gradients=g, **{**TINY, **kw})


def _batch(r=12, t=64, b=6, seed=0, **kw):
    coll = SpatiotemporalMaskCollator(r, t // 16, seed=seed, **kw,
                                      collate_fn=lambda s: {"signal": torch.stack(s)})
    g = torch.Generator().manual_seed(seed)
    return coll([torch.randn(r, t, generator=g) for _ in range(b)])


def test_target_encoder_is_a_frozen_copy():
    model = _model()
    obj = JEPAObjective(model, total_steps=10)
    assert obj.target_encoder is not model.encoder
    assert all(not p.requires_grad for p in obj.target_encoder.parameters())
    for (n, p), (_, q) in zip(model.encoder.state_dict().items(),
                              obj.target_encoder.state_dict().items()):
        assert torch.equal(p, q), n
    obj.train()
    assert obj.training and not obj.target_encoder.training


def test_ema_update_closed_form():
    model = _model()
    obj = JEPAObjective(model, total_steps=100)
    before = {n: p.detach().clone() for n, p in obj.target_encoder.named_parameters()}
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(-2.0).add_(0.3)
    m = obj.update_target(model, step=50)
    assert m == pytest.approx(0.998)
    online = dict(model.encoder.named_parameters())
    for n, p in obj.target_encoder.named_parameters():
        assert torch.allclose(p, 0.998 * before[n] + 0.002 * online[n], atol=1e-7), n
    # reference schedule and explicit momentum
    ref = JEPAObjective(model, total_steps=100, ema_schedule="reference")
    assert ref.momentum(100) == pytest.approx(0.9965)
    t0 = {n: p.clone() for n, p in ref.target_encoder.named_parameters()}
    ref.update_target(model, momentum=0.0)
    for n, p in ref.target_encoder.named_parameters():
        assert torch.equal(p, online[n].detach()), n
    del t0
    with pytest.raises(NeurofmError, match="total_steps"):
        JEPAObjective(model).momentum(3)


def test_loss_is_smooth_l1_to_normalized_targets():
    model = _model().eval()
    obj = JEPAObjective(model)
    with torch.no_grad():  # target differs from online
        for p in obj.target_encoder.parameters():
            p.add_(0.05)
    batch = _batch()
    out = obj.loss(model, batch)
    x, ctx, tgt = batch["signal"], batch["context_idx"], batch["target_idx"]
    h = obj.target_encoder(x)
    h = F.layer_norm(h, (32,))
    h = torch.stack([h[i, tgt[i]] for i in range(len(x))])
    z = model(x, ctx, tgt)
    assert out["loss"].item() == pytest.approx(F.smooth_l1_loss(z, h).item(), rel=1e-5)
    pooled = F.layer_norm(obj.target_encoder(x), (32,)).mean(1)
    assert out["target_std"].item() == pytest.approx(pooled.std(0).mean().item(), rel=1e-5)
    assert out["n_context"].item() == ctx.shape[1] and out["n_target"].item() == tgt.shape[1]
    out["loss"].backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in obj.target_encoder.parameters())


def test_padded_targets_do_not_count():
    model = _model().eval()
    obj = JEPAObjective(model)
    batch = _batch(truncate_to_batch_min=False)
    base = obj.loss(model, batch)["loss"].item()
    moved = dict(batch)
    for key in ("context_idx", "target_idx"):
        idx = batch[key].clone()
        idx[~batch[key.replace("idx", "mask")]] = 7  # junk at the padding
        moved[key] = idx
    assert obj.loss(model, moved)["loss"].item() == pytest.approx(base, rel=1e-5)


def test_collapse_shows_in_target_std():
    model = _model()
    obj = JEPAObjective(model)
    batch = _batch()
    assert obj.loss(model, batch)["target_std"].item() > 1e-3
    with torch.no_grad():  # a target encoder that ignores its input
        obj.target_encoder.patch_embed.weight.zero_()
        obj.target_encoder.pos.proj.weight.zero_()
    assert obj.loss(model, batch)["target_std"].item() < 1e-5


def test_missing_keys():
    model = _model()
    with pytest.raises(DataError, match="context_idx"):
        JEPAObjective(model).loss(model, {"signal": torch.zeros(1, 12, 64)})
    with pytest.raises(NeurofmError, match="ema_schedule"):
        JEPAObjective(model, ema_schedule="x")


def test_overfit_one_batch():
    """Encoder + predictor + objective learn: the loss on one batch falls steadily."""
    model = _model(r=16, t=64, seed=3)
    obj = JEPAObjective(model, total_steps=80)
    batch = _batch(r=16, t=64, b=8, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for step in range(80):
        out = obj.loss(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        obj.update_target(model, step)
        losses.append(out["loss"].item())
    assert losses[-1] < 0.3 * losses[0]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert out["target_std"].item() > 1e-3  # no collapse
