"""Brain-JEPA spatiotemporal mask collator and apply_masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.errors import DataError, NeurofmError
from neurofm.masking import SpatiotemporalMaskCollator, apply_masks


def _stack(samples):
    return {"signal": torch.stack([s["signal"] for s in samples])}


def _samples(b, r, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"signal": torch.randn(r, t, generator=g)} for _ in range(b)]


def _collator(r, w, **kw):
    kw.setdefault("collate_fn", _stack)
    return SpatiotemporalMaskCollator(r, w, **kw)


def _blocks(batch, i):
    """Per-sample context and target blocks from an untruncated (padded) batch."""
    nc, nt = int(batch["n_context"][i]), int(batch["n_target"][i])
    ctx = batch["context_idx"][i, :nc].numpy()
    tgt = batch["target_idx"][i, :nt].numpy()
    lab = batch["target_block"][i, :nt].numpy()
    return ctx, [tgt[lab == k] for k in range(3)]


@pytest.mark.parametrize(("r", "w"), [(7, 3), (20, 4), (100, 6), (450, 10), (64, 25)])
def test_shapes_ranges_and_disjointness(r, w):
    coll = _collator(r, w, seed=3)
    for _ in range(3):
        batch = coll(_samples(5, r, 16 * w))
        ctx, tgt = batch["context_idx"], batch["target_idx"]
        assert ctx.dtype == torch.int64 and tgt.dtype == torch.int64
        assert ctx.shape[0] == tgt.shape[0] == 5
        assert ctx.shape[1] == int(batch["n_context"].min())
        assert tgt.shape[1] == int(batch["n_target"].min())
        assert int(ctx.min()) >= 0 and int(ctx.max()) < r * w
        assert int(tgt.min()) >= 0 and int(tgt.max()) < r * w
        for i in range(5):
            c = ctx[i].numpy()
            assert np.all(np.diff(c) > 0)  # sorted, no duplicates
            assert not set(c) & set(tgt[i].numpy())
        assert batch["signal"].shape == (5, r, 16 * w)


def test_block_geometry_at_reference_grid():
    """Every block has the shape METHODS describes (R=450, W=10)."""
    r, w = 450, 10
    coll = _collator(r, w, seed=11, truncate_to_batch_min=False)
    for _ in range(6):
        batch = coll(_samples(8, r, 160))
        h_alpha = w_alpha = None
        for i in range(8):
            ctx, (alpha, right, left) = _blocks(batch, i)
            c_roi, c_t = ctx // w, ctx % w
            a_roi, a_t = alpha // w, alpha % w
            # alpha: a rectangle (h_alpha random ROIs x contiguous columns), same size per batch
            rois, cols = np.unique(a_roi), np.unique(a_t)
            assert len(alpha) == len(rois) * len(cols)
            assert 0.45 * r - 1 <= len(rois) < 0.6 * r and 2 <= len(cols) <= 5
            assert np.all(np.diff(cols) == 1)
            h_alpha = h_alpha or len(rois)
            w_alpha = w_alpha or len(cols)
            assert (len(rois), len(cols)) == (h_alpha, w_alpha)
            # alpha ROIs are removed from the context at all times
            assert not set(c_roi) & set(rois)
            # observation window: contiguous, 8 or 9 patches, never the last column
            assert c_t.max() <= w - 2
            # edge targets live in the edge columns; those columns left the context
            assert set(right % w) <= {7, 8, 9} and set(left % w) <= {0, 1, 2}
            assert not set(c_t) & (set(right % w) | set(left % w))
            # alpha columns sit inside the observation window (which excludes column 9)
            assert cols.max() <= w - 2
            # context ROIs: at least the observed, non-alpha ROIs fraction
            assert len(np.unique(c_roi)) >= int(0.84 * r) - len(rois) - 1


def test_statistics_at_reference_grid():
    """Context ~28 % and targets ~25 % of 4500 tokens; ~820 / 860 after batch-min truncation."""
    coll = _collator(450, 10, seed=0)
    nc, nt, kc, kt = [], [], [], []
    for _ in range(30):
        batch = coll(_samples(16, 450, 160))
        nc += batch["n_context"].tolist()
        nt += batch["n_target"].tolist()
        kc.append(batch["context_idx"].shape[1])
        kt.append(batch["target_idx"].shape[1])
    n = 4500
    assert 0.25 < np.mean(nc) / n < 0.30
    assert 0.22 < np.mean(nt) / n < 0.27
    assert 700 < np.mean(kc) < 950 and 700 < np.mean(kt) < 950
    assert np.mean(kc) < np.mean(nc) and np.mean(kt) < np.mean(nt)
    assert min(nc) >= 4 and min(nt) >= 4  # min_keep


def test_truncation_drops_highest_rois_and_edge_blocks_first():
    coll = _collator(450, 10, seed=5, truncate_to_batch_min=False)
    samples = _samples(6, 450, 160)
    full = coll(samples)
    trunc = _collator(450, 10, seed=5)(samples)
    kc, kt = trunc["context_idx"].shape[1], trunc["target_idx"].shape[1]
    for i in range(6):
        nc = int(full["n_context"][i])
        assert torch.equal(trunc["context_idx"][i], full["context_idx"][i, :kc])
        assert torch.equal(trunc["target_idx"][i], full["target_idx"][i, :kt])
        dropped = full["context_idx"][i, kc:nc]
        if len(dropped):  # the cut removes the highest ROI indices
            assert int(dropped.min()) > int(trunc["context_idx"][i].max())
    # target order is [alpha, right, left]: labels never decrease
    lab = full["target_block"]
    for i in range(6):
        v = lab[i, : int(full["n_target"][i])]
        assert torch.all(v[1:] >= v[:-1])


def test_padding_mode_masks():
    coll = _collator(30, 5, seed=2, truncate_to_batch_min=False)
    batch = coll(_samples(4, 30, 80))
    for key, n in (("context", "n_context"), ("target", "n_target")):
        mask, idx = batch[f"{key}_mask"], batch[f"{key}_idx"]
        assert mask.dtype == torch.bool and mask.shape == idx.shape
        assert torch.equal(mask.sum(1), batch[n])
        assert idx.shape[1] == int(batch[n].max())
        assert torch.all(idx[~mask] == 0)
    assert torch.all(batch["target_block"][~batch["target_mask"]] == -1)


def test_seeded_determinism_and_resume():
    samples = _samples(4, 50, 96)
    a = _collator(50, 6, seed=1)(samples)
    b = _collator(50, 6, seed=1)(samples)
    c = _collator(50, 6, seed=2)(samples)
    assert torch.equal(a["context_idx"], b["context_idx"])
    assert torch.equal(a["target_idx"], b["target_idx"])
    assert not (a["context_idx"].shape == c["context_idx"].shape
                and torch.equal(a["context_idx"], c["context_idx"]))
    # resume: a collator restored from state_dict continues the same sequence
    run = _collator(50, 6, seed=7)
    run(samples)
    state = run.state_dict()
    nxt = [run(samples) for _ in range(2)]
    resumed = _collator(50, 6, seed=0)
    resumed.load_state_dict(state)
    assert resumed.seed == 7
    for ref in nxt:
        got = resumed(samples)
        assert torch.equal(got["context_idx"], ref["context_idx"])
        assert torch.equal(got["target_idx"], ref["target_idx"])
    # consecutive batches differ
    assert not torch.equal(nxt[0]["context_idx"][:, :5], nxt[1]["context_idx"][:, :5])


def test_set_epoch_restarts_the_batch_counter_with_new_masks():
    samples = _samples(3, 40, 96)
    a = _collator(40, 6, seed=4)
    e0 = [a(samples)["context_idx"] for _ in range(2)]
    a.set_epoch(1)
    e1 = a(samples)["context_idx"]
    b = _collator(40, 6, seed=4)
    b.set_epoch(1)
    assert torch.equal(b(samples)["context_idx"], e1)
    assert not (e1.shape == e0[0].shape and torch.equal(e1, e0[0]))
    assert a.state_dict() == {"seed": 4, "epoch": 1, "rank": 0, "batches": 1}
    with pytest.raises(NeurofmError, match="epoch"):
        a.set_epoch(-1)


def test_workers_draw_the_same_masks_as_the_main_process():
    data = [torch.randn(40, 96) for _ in range(12)]

    def masks(num_workers):
        coll = SpatiotemporalMaskCollator(40, 6, seed=9, collate_fn=_stack)

        def collate(samples):  # plain tensors -> sample dicts -> masked batch
            return coll([{"signal": s} for s in samples])

        loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=num_workers,
                                             collate_fn=collate)
        return [b["context_idx"] for b in loader]

    main, workers = masks(0), masks(2)
    assert len(main) == len(workers) == 4
    for x, y in zip(main, workers):
        assert torch.equal(x, y)


def test_with_neurofm_collate():
    """Default collate_fn: neurofm.data.collate over WindowDataset-like samples."""
    samples = [{"signal": torch.randn(12, 64), "channel_mask": torch.ones(12, dtype=torch.bool),
                "ch_pos": torch.zeros(12, 3), "ch_pos_mask": torch.zeros(12, dtype=torch.bool),
                "channel": [f"r{i}" for i in range(12)], "ch_type": ["roi"] * 12,
                "recording": f"rec{k}", "subject": "s", "sfreq": 1.0, "start": 0}
               for k in range(3)]
    batch = SpatiotemporalMaskCollator(12, 4, patch_size=16)(samples)
    assert batch["signal"].shape == (3, 12, 64)
    assert batch["recording"] == ["rec0", "rec1", "rec2"]
    assert batch["context_idx"].shape[0] == 3
    with pytest.raises(DataError, match="n_time_patches=5"):
        SpatiotemporalMaskCollator(12, 5, patch_size=16)(samples)
    with pytest.raises(DataError, match="R=13"):
        SpatiotemporalMaskCollator(13, 4)(samples)


def test_min_keep_and_bad_arguments():
    # a 3 x 2 grid never leaves 5 context tokens
    with pytest.raises(DataError, match="min_keep=5"):
        _collator(3, 2, min_keep=5, max_tries=3)(_samples(2, 3, 32))
    batch = _collator(8, 3, min_keep=2)(_samples(6, 8, 48))
    assert int(batch["n_context"].min()) >= 2 and int(batch["n_target"].min()) >= 2
    with pytest.raises(NeurofmError, match="n_time_patches"):
        SpatiotemporalMaskCollator(10, 1)
    with pytest.raises(NeurofmError, match="obs_scale"):
        SpatiotemporalMaskCollator(10, 4, obs_scale=(0.9, 0.5))
    with pytest.raises(NeurofmError, match="edge_width"):
        SpatiotemporalMaskCollator(10, 4, edge_width=3)


def test_apply_masks_gathers_values():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    idx = torch.tensor([[0, 5], [3, 1]])
    out = apply_masks(tokens, idx)
    assert torch.equal(out[0], tokens[0, [0, 5]])
    assert torch.equal(out[1], tokens[1, [3, 1]])
    both = apply_masks(tokens, [idx, idx.flip(1)])
    assert both.shape == (4, 2, 3) and torch.equal(both[2], tokens[0, [5, 0]])
    with pytest.raises(DataError, match="indices"):
        apply_masks(tokens, torch.zeros(3, 2, dtype=torch.int64))
