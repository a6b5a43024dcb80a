"""Write reference_golden.pt: a tiny Brain-JEPA reference model's weights, inputs, outputs.

Run once with a scratch checkout of github.com/Eric-LRL/Brain-JEPA (commit b1dfa93)::

    python tests/models/data/make_reference_golden.py /tmp/brainjepa_ref

Its ``flash_attn`` import is satisfied by a stub; the model runs its own ``attn_mode="normal"``
(explicit softmax) attention, so the golden outputs are the reference's own arithmetic.
Weights, gradients (40 x 30) and inputs are random (seeded); nothing of the reference's
data is stored.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import torch


def main(ref):
    sys.modules["flash_attn"] = types.SimpleNamespace(flash_attn_qkvpacked_func=None)
    sys.path.insert(0, os.path.abspath(ref))
    from src.models import vision_transformer as vit

    torch.manual_seed(0)
    r, t, d, heads = 40, 160, 32, 4  # the reference needs 10 time patches
    g = np.random.default_rng(0).standard_normal((r, 30)) * 0.5
    gt = torch.as_tensor(g, dtype=torch.float32)[None]
    ln = lambda n: torch.nn.LayerNorm(n, eps=1e-6)
    enc = vit.VisionTransformer(img_size=(r, t), patch_size=16, in_chans=1, embed_dim=d,
                                depth=2, num_heads=heads, qkv_bias=True, norm_layer=ln,
                                gradient_pos_embed=gt, attn_mode="normal",
                                add_w="mapping").eval()
    pred = vit.vit_predictor(num_patches=enc.patch_embed.num_patches,
                             num_patches_2d=enc.patch_embed.num_patches_2d, embed_dim=d,
                             predictor_embed_dim=16, depth=1, num_heads=heads,
                             gradient_pos_embed=gt, attn_mode="normal",
                             add_w="mapping").eval()
    x = torch.randn(2, r, t)
    ctx = torch.sort(torch.randperm(r * 10)[:60]).values.repeat(2, 1)
    tgt = torch.randperm(r * 10)[:25].repeat(2, 1)
    with torch.no_grad():
        tokens = enc(x[:, None])
        z = pred(enc(x[:, None], [ctx]), [ctx], [tgt])
    torch.save({"encoder": enc.state_dict(), "predictor": pred.state_dict(),
                "gradients": torch.as_tensor(g, dtype=torch.float32), "x": x,
                "context_idx": ctx, "target_idx": tgt, "tokens": tokens, "pred": z,
                "config": {"n_rois": r, "n_frames": t, "embed_dim": d, "depth": 2,
                           "num_heads": heads, "predictor_embed_dim": 16,
                           "predictor_depth": 1}},
               os.path.join(os.path.dirname(__file__), "reference_golden.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
