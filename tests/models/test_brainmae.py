"""BrainMAE: shapes, segment-wise masking, region-aware attention, the 0.75/0.25 loss."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurofm.errors import DataError, NeurofmError
from neurofm.models import BrainMAE
from neurofm.models.brainmae import (
    export_brainmae_encoder,
    load_brainmae_encoder,
    masked_loss,
    segment_frames_for,
)


def _model(n_rois=12, seg=5, **kw):
    torch.manual_seed(0)
    cfg = {"embed_dim": 32, "num_heads": 4, "depth": 2, "temporal_depth": 1}
    cfg.update(kw)
    return BrainMAE(n_rois, seg, **cfg)


@pytest.mark.parametrize("n_rois,seg,n_frames", [(12, 5, 23), (40, 8, 48), (100, 21, 63)])
@pytest.mark.parametrize("encoder", ["static", "adaptive"])
def test_shapes(n_rois, seg, n_frames, encoder):
    m = _model(n_rois, seg, encoder=encoder)
    x = torch.randn(2, n_rois, n_frames)
    k = n_frames // seg
    mask = m.random_mask(2, k)
    assert m(x, mask).shape == (2, k, n_rois, seg)
    assert m.encode(x).shape == (2, k, 32)
    h, s = m.encoder.tokens(x)
    assert h.shape == (2, k, n_rois, 32) and s.shape == (2, k, 32)
    assert m.encode(x[:, None]).shape == (2, k, 32)  # (B, 1, R, T) accepted


def test_segment_frames_for_tr():
    assert segment_frames_for(0.72) == 21  # HCP: 15 s segments
    assert segment_frames_for(2.0) == 8
    with pytest.raises(NeurofmError):
        segment_frames_for(0)


@pytest.mark.parametrize("ratio,n_rois", [(0.5, 12), (0.3, 100), (0.75, 40)])
def test_mask_ratio_is_honoured_per_segment(ratio, n_rois):
    m = _model(n_rois, 5, mask_ratio=ratio)
    g = torch.Generator().manual_seed(0)
    mask = m.random_mask(16, 7, generator=g)
    assert mask.shape == (16, 7, n_rois)
    assert (mask.sum(-1) == round(ratio * n_rois)).all()  # exactly, in every segment
    # independent draws per segment and sample; every ROI gets masked somewhere
    assert len({tuple(row.tolist()) for row in mask.reshape(-1, n_rois)}) > 50
    assert mask.any(dim=(0, 1)).all()
    np.testing.assert_allclose(mask.float().mean().item(), round(ratio * n_rois) / n_rois)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(mask, m.random_mask(16, 7, generator=g2))  # seeded


def test_loss_weighting_closed_form():
    pred = torch.zeros(1, 2, 3, 2)
    target = torch.zeros(1, 2, 3, 2)
    target[0, 0, 0] = torch.tensor([1.0, 3.0])  # masked: mse 5
    target[0, 1, 2] = torch.tensor([2.0, 2.0])  # masked: mse 4
    target[0, 0, 1] = torch.tensor([4.0, 0.0])  # unmasked: mse 8
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 2] = True
    loss, lm, lu = masked_loss(pred, target, mask, 0.75)
    masked, unmasked = (5 + 4) / 2, 8 / 4  # means over 2 masked and 4 unmasked segments
    assert lm.item() == pytest.approx(masked)
    assert lu.item() == pytest.approx(unmasked)
    assert loss.item() == pytest.approx(0.75 * masked + 0.25 * unmasked)
    # no masked segment (mask_ratio=0, the "BrainAE" ablation): the unmasked MSE alone
    loss0, lm0, _ = masked_loss(pred, target, torch.zeros_like(mask), 0.75)
    assert loss0.item() == pytest.approx((5 + 4 + 8) / 6) and torch.isnan(lm0)
    # the model's loss uses the same formula on its reconstruction
    m = _model()
    x = torch.randn(2, 12, 20)
    mk = m.random_mask(2, 4)
    out = m.loss(x, mk)
    ref = masked_loss(m(x, mk), m.encoder.segments(x), mk, 0.75)[0]
    torch.testing.assert_close(out["loss"], ref)


def test_masked_input_is_not_seen():
    """A masked ROI segment's values change nothing: no leak through the mask."""
    m = _model().eval()
    x = torch.randn(2, 12, 20)
    mask = m.random_mask(2, 4, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    seg = m.encoder.segments(y)  # (B, K, R, L) view of y
    noise = torch.randn_like(seg) * 10
    y2 = (seg + noise * mask[..., None]).transpose(1, 2).reshape(2, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask), m(y2, mask))
        assert not torch.allclose(m(x), m(y2))  # unmasked: the change is seen


def test_region_aware_attention_has_no_self_loops():
    m = _model()
    e = m.encoder.roi_embed
    a = m.encoder.graph_blocks[0].attn.weights(e)  # (H, R, R)
    assert a.shape == (4, 12, 12)
    torch.testing.assert_close(a.diagonal(dim1=1, dim2=2), torch.zeros(4, 12))
    torch.testing.assert_close(a.sum(-1), torch.ones(4, 12))
    with_loops = _model(self_loops=True)
    b = with_loops.encoder.graph_blocks[0].attn.weights(with_loops.encoder.roi_embed)
    assert (b.diagonal(dim1=1, dim2=2) > 0).all()


def test_static_graph_is_sample_independent_and_embedding_options():
    m = _model()
    assert isinstance(m.encoder.roi_embed, torch.nn.Parameter)  # learned, shared
    fixed = _model(roi_embedding="fixed")
    assert "encoder.roi_embed" not in dict(fixed.named_parameters())
    assert "encoder.roi_embed" in fixed.state_dict()
    adaptive = _model(encoder="adaptive", n_adaptive=2)
    assert len(adaptive.encoder.signal_blocks) == 2 and len(m.encoder.signal_blocks) == 0


def test_bad_input_and_config():
    m = _model()
    with pytest.raises(DataError, match="ROIs"):
        m.encode(torch.randn(1, 11, 20))
    with pytest.raises(DataError, match="segment"):
        m.encode(torch.randn(1, 12, 3))
    with pytest.raises(NeurofmError, match="encoder"):
        BrainMAE(12, 5, encoder="dynamic")
    with pytest.raises(NeurofmError, match="mask_ratio"):
        BrainMAE(12, 5, mask_ratio=1.0)


def test_export_and_load_encoder(tmp_path):
    m = _model()
    path = export_brainmae_encoder(m, tmp_path / "mae.pt")
    enc = load_brainmae_encoder(path)
    x = torch.randn(2, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), m.eval().encode(x))
    from neurofm.evals import load_pretrained

    torch.testing.assert_close(load_pretrained(path)(x), enc(x))
    from neurofm.models import load_encoder

    torch.testing.assert_close(load_encoder(path)(x), enc(x))  # one loader for every model
