"""CUDA-path check of the training stack (not a unit test: CI has no GPU).

Fits the Brain-JEPA (``JEPAModule``) and MEG-GPT (``MEGGPTModule``) LightningModules for 80
steps on one accelerator with ``bf16-mixed`` precision on small generated data, then checks
on that device: the losses fall (compare with the same command with ``cpu``), the Brain-JEPA
weights reload strictly into a fresh model on the CPU and its encoder gives the same
embeddings on both devices, and MEG-GPT generation with the KV cache equals generation
without it. Prints one JSON line per model and writes ``$OUT/lightning_check.json`` (or
/tmp).

Usage::

    python benchmarks/cuda_check.py gpu     # or: cpu
"""
import json
import os
import sys
import time

import lightning.pytorch as pl
import numpy as np
import torch

from neurofm.masking import SpatiotemporalMaskCollator
from neurofm.models import MEGGPT, BrainJEPA, generate_tokens
from neurofm.training import JEPAModule, MEGGPTModule

acc = sys.argv[1] if len(sys.argv) > 1 else "gpu"
DEV = "cuda" if acc == "gpu" else "cpu"
prec = "bf16-mixed"
out = {"accelerator": acc, "torch": torch.__version__}
out_dir = os.environ.get("OUT", "/tmp")


class Rec(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, i):
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))


def trainer(steps, rec):
    return pl.Trainer(accelerator=acc, devices=1, precision=prec, max_steps=steps,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[rec], default_root_dir=out_dir)


# ------------------------------------------------------------------ Brain-JEPA
t0 = time.time()
pl.seed_everything(0)
R, T = 24, 64
g = np.random.default_rng(0)
tt = np.arange(T) / 16
sig = [torch.tensor(np.sin(2 * np.pi * (g.uniform(1, 3, (R, 1)) * tt + g.uniform(0, 6, (R, 1))))
                    + 0.1 * g.standard_normal((R, T)), dtype=torch.float32) for _ in range(256)]
coll = SpatiotemporalMaskCollator(R, T // 16, seed=0,
                                  collate_fn=lambda s: {"signal": torch.stack(s)})
dl = torch.utils.data.DataLoader(sig, batch_size=16, shuffle=True, collate_fn=coll)
model = BrainJEPA(R, T, embed_dim=64, depth=2, num_heads=4, predictor_embed_dim=32,
                  predictor_depth=1, pos_embed="sincos")
mod = JEPAModule(model, lr=1e-3, start_lr=1e-4, gradients=None)
rec = Rec()
trainer(80, rec).fit(mod, dl)
ck = os.path.join(out_dir, "jepa.pt")
torch.save(mod.model.state_dict(), ck)
fresh = BrainJEPA(R, T, embed_dim=64, depth=2, num_heads=4, predictor_embed_dim=32,
                  predictor_depth=1, pos_embed="sincos")
fresh.load_state_dict(torch.load(ck, map_location="cpu"), strict=True)
same = all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(fresh.state_dict().values(),
                                                          mod.model.state_dict().values()))
x = torch.stack(sig[:4])
with torch.no_grad():
    enc_dev = mod.model.to(DEV).float().eval().encode(x.to(DEV)).cpu()
    enc_cpu = fresh.eval().encode(x)
out["brainjepa"] = {"first5": float(np.mean(rec.losses[:5])),
                    "last5": float(np.mean(rec.losses[-5:])), "steps": len(rec.losses),
                    "reload_equal": same, "fit_on": acc,
                    "param_device": str(next(mod.model.parameters()).device),
                    "encode_max_abs_diff_device_vs_cpu": float((enc_dev - enc_cpu).abs().max()),
                    "seconds": time.time() - t0}
print(json.dumps(out["brainjepa"]), flush=True)

# ------------------------------------------------------------------ MEG-GPT
t0 = time.time()
pl.seed_everything(0)
V, C, L = 16, 4, 32
base = np.tile(np.arange(V), 40)  # a saw-tooth: the next token is predictable


def window(i):
    s = (i * 7) % 200
    toks = np.stack([np.roll(base, k)[s:s + L + 1] for k in range(C)], axis=1)
    return {"tokens": torch.tensor(toks, dtype=torch.long), "session": torch.tensor(i % 2)}


dl = torch.utils.data.DataLoader([window(i) for i in range(256)], batch_size=16, shuffle=True)
gpt = MEGGPT(V, C, context=L, loss_last=8, d_model=64, n_layers=2, n_heads=4, d_ff=128,
             dropout=0.0, n_sessions=2, position="rope")
mod = MEGGPTModule(gpt, lr=3e-3, start_lr=1e-4)
rec = Rec()
trainer(80, rec).fit(mod, dl)
gpt = mod.model.to(DEV).float().eval()
dev = next(gpt.parameters()).device
prompt = torch.stack([window(i)["tokens"][:L] for i in range(3)]).to(dev)
sess = torch.tensor([0, 1, 0], device=dev)
with torch.no_grad():
    a = generate_tokens(gpt, prompt, n_steps=40, seed=0, session=sess, use_cache=True)
    b = generate_tokens(gpt, prompt, n_steps=40, seed=0, session=sess, use_cache=False)
a_t = a[0] if isinstance(a, tuple) else a
b_t = b[0] if isinstance(b, tuple) else b
out["meggpt"] = {"first5": float(np.mean(rec.losses[:5])), "last5": float(np.mean(rec.losses[-5:])),
                 "steps": len(rec.losses), "param_device": str(dev),
                 "cache_equals_no_cache": float((a_t == b_t).float().mean()),
                 "gen_device": str(a_t.device), "seconds": time.time() - t0}
print(json.dumps(out["meggpt"]), flush=True)
with open(os.path.join(out_dir, "lightning_check.json"), "w") as f:
    json.dump(out, f, indent=1)
