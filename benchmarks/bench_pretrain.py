"""Brain-JEPA pretraining throughput: neurofm vs the reference implementation's model.

One pretraining step = target encoder on every token (no grad) + context encoder on the
context tokens + predictor + smooth-L1 backward + AdamW step + EMA update, at the
reference input size (450 ROIs x 160 frames = 4500 tokens) with masks from
``SpatiotemporalMaskCollator`` (the same masks for both implementations). Also the
inference rate of the encoder on all tokens (``encode``).

The reference (github Eric-LRL/Brain-JEPA) is imported from a scratch checkout given by
``--reference PATH``. Its ``flash_attn`` dependency is replaced by a shim that calls torch's
``scaled_dot_product_attention`` with the same packed-qkv layout (``attn_mode=flash_attn``,
its configured mode); ``--reference-mode normal`` runs its explicit-softmax attention
instead. Without ``--reference`` only neurofm is measured and the report says so.

Throughput: both implementations are built in one process and their steps alternate
(ABBA...), medians reported, so a drifting machine load hits both alike. Peak memory: each
implementation alone in its own process: on CPU the peak resident-set growth during two
timed steps over the resident set before them (after a warmup step, so the optimizer state
is already there); on CUDA ``torch.cuda.max_memory_allocated``. ``--bf16`` runs both under
the same bf16 autocast (CPU too), ``--compile`` compiles both; on CUDA the report gives
the model FLOPs utilization (FLOPs of :func:`model_flops`, counted from the architecture and
the masks, over ``--peak-tflops``; ``torch.utils.flop_counter``'s figure, which misses fused
attention kernels, is kept in the JSON as ``counted_flops_per_step``).

Usage::

    python benchmarks/bench_pretrain.py --reference /tmp/brainjepa_ref --batch 2 --steps 3
    python benchmarks/bench_pretrain.py --reference /tmp/brainjepa_ref --device cuda \\
        --batch 16 --bf16 --compile --sizes base
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

N_ROIS, N_FRAMES, PATCH = 450, 160, 16


# ---------------------------------------------------------------------------- helpers
def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gradients(reference):
    import numpy as np

    path = os.path.join(reference or "", "data", "gradient_mapping_450.csv")
    if reference and os.path.isfile(path):
        return np.loadtxt(path, delimiter=","), "reference gradient_mapping_450.csv"
    return np.random.default_rng(0).standard_normal((N_ROIS, 30)) * 0.3, "random (450, 30)"


def _masks(batch):
    import torch

    from neurofm.masking import SpatiotemporalMaskCollator

    coll = SpatiotemporalMaskCollator(N_ROIS, N_FRAMES // PATCH, seed=0,
                                      collate_fn=lambda s: {"signal": torch.stack(s)})
    g = torch.Generator().manual_seed(0)
    return coll([torch.randn(N_ROIS, N_FRAMES, generator=g) for _ in range(batch)])


def _install_flash_shim():
    """A ``flash_attn`` module whose packed-qkv kernel is torch SDPA."""
    import types

    import torch
    import torch.nn.functional as F

    def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, **kwargs):
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, Dh) each
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return out.transpose(1, 2)  # (B, N, H, Dh), flash-attn's layout

    mod = types.ModuleType("flash_attn")
    mod.flash_attn_qkvpacked_func = flash_attn_qkvpacked_func
    sys.modules["flash_attn"] = mod
    _ = torch


# ---------------------------------------------------------------------------- builders
def _neurofm(size, grads):
    import torch

    from neurofm.models import BrainJEPA
    from neurofm.objectives import JEPAObjective

    model = BrainJEPA(N_ROIS, N_FRAMES, size=size, gradients=grads)
    obj = JEPAObjective(model, total_steps=10_000)

    def loss(batch):
        return obj.loss(model, batch)["loss"]

    def ema(step):
        obj.update_target(model, step)

    def encode(x):
        return obj.target_encoder(x)

    params = list(model.parameters())
    modules = [model.encoder, model.predictor, obj.target_encoder]
    return params, loss, ema, encode, modules, torch


def _reference(size, grads, path, mode, device="cpu"):
    import torch
    import torch.nn.functional as F

    _install_flash_shim()
    sys.path.insert(0, os.path.abspath(path))
    from src.masks.utils import apply_masks
    from src.models import vision_transformer as vit

    # (1, R, k) as its train.py; a plain attribute there (not a buffer): made on the device
    g = torch.as_tensor(grads, dtype=torch.float32, device=device)[None]
    encoder = vit.__dict__[f"vit_{size}"](
        img_size=(N_ROIS, N_FRAMES), patch_size=PATCH, in_chans=1, gradient_pos_embed=g,
        attn_mode=mode, add_w="mapping")
    predictor = vit.__dict__["vit_predictor"](
        num_patches=encoder.patch_embed.num_patches,
        num_patches_2d=encoder.patch_embed.num_patches_2d, embed_dim=encoder.embed_dim,
        predictor_embed_dim=384, depth=6, num_heads=encoder.num_heads,
        gradient_pos_embed=g, attn_mode=mode, add_w="mapping")
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad = False

    def loss(batch):
        x = batch["signal"][:, None]  # (B, 1, R, T)
        ctx, tgt = [batch["context_idx"]], [batch["target_idx"]]
        with torch.no_grad():
            h = target(x)
            h = F.layer_norm(h, (h.size(-1),))
            h = apply_masks(h, tgt)
        z = predictor(encoder(x, ctx), ctx, tgt)
        return F.smooth_l1_loss(z, h)

    def ema(step):
        m = 0.996 + step * 0.004 / 10_000
        with torch.no_grad():
            for q, k in zip(encoder.parameters(), target.parameters()):
                k.data.mul_(m).add_((1.0 - m) * q.detach().data)

    def encode(x):
        return target(x[:, None])

    params = list(encoder.parameters()) + list(predictor.parameters())
    return params, loss, ema, encode, [encoder, predictor, target], torch


# ---------------------------------------------------------------------------- parity
def parity(reference, mode="flash_attn"):
    """Max |neurofm - reference| of encoder and predictor outputs with copied weights."""
    import numpy as np
    import torch

    from neurofm.models import BrainJEPA
    from neurofm.models.export import convert_reference_state_dict, load_state_dict_strict

    _install_flash_shim()
    sys.path.insert(0, os.path.abspath(reference))
    from src.models import vision_transformer as vit

    torch.manual_seed(0)
    r, t, d, depth, heads = 40, 160, 64, 2, 4  # the reference needs 10 time patches
    grads, _ = _gradients(reference)
    g = np.asarray(grads[:r], dtype=np.float32)
    gt = torch.as_tensor(g)[None]
    ref_enc = vit.VisionTransformer(
        img_size=(r, t), patch_size=PATCH, in_chans=1, embed_dim=d, depth=depth,
        num_heads=heads, mlp_ratio=4, qkv_bias=True, gradient_pos_embed=gt, attn_mode=mode,
        add_w="mapping", norm_layer=lambda n: torch.nn.LayerNorm(n, eps=1e-6)).eval()
    ref_pred = vit.vit_predictor(
        num_patches=ref_enc.patch_embed.num_patches,
        num_patches_2d=ref_enc.patch_embed.num_patches_2d, embed_dim=d,
        predictor_embed_dim=32, depth=2, num_heads=heads, gradient_pos_embed=gt,
        attn_mode=mode, add_w="mapping").eval()
    ours = BrainJEPA(r, t, embed_dim=d, depth=depth, num_heads=heads,
                     predictor_embed_dim=32, predictor_depth=2, gradients=g).eval()
    load_state_dict_strict(ours.encoder, convert_reference_state_dict(
        ref_enc.state_dict(), "encoder", gradients=g))
    load_state_dict_strict(ours.predictor, convert_reference_state_dict(
        ref_pred.state_dict(), "predictor", gradients=g))
    x = torch.randn(3, r, t)
    ctx = torch.sort(torch.randperm(r * t // PATCH)[:50]).values.repeat(3, 1)
    tgt = torch.randperm(r * t // PATCH)[:30].repeat(3, 1)
    with torch.no_grad():
        enc = (ours.encode(x) - ref_enc(x[:, None])).abs().max().item()
        z_ref = ref_pred(ref_enc(x[:, None], [ctx]), [ctx], [tgt])
        pred = (ours(x, ctx, tgt) - z_ref).abs().max().item()
    return enc, pred


# ---------------------------------------------------------------------------- FLOPs
def model_flops(size, batch, n_context, n_target, *, training=True):
    """Matmul FLOPs of one pretraining step (or, with ``training=False``, of one encoder
    pass over every token), counted from the architecture.

    Per token and block: 24 D^2 for the qkv, output and MLP (ratio 4) projections and
    4 N D for the attention scores and values (N tokens in the sequence). The target
    encoder runs forward only on all ``N_ROIS * N_FRAMES / PATCH`` tokens; the context
    encoder on ``n_context`` tokens and the predictor on ``n_context + n_target`` tokens,
    forward and backward (x3). Patch embedding and the predictor's in/out projections are
    included; norms, softmax, GELU and the loss are not. ``torch.utils.flop_counter``
    misses the fused attention kernels (SDPA on CPU, some CUDA back-ends), hence this count.

    Returns
    -------
    flops : float
    """
    from neurofm.models.brainjepa import SIZES

    d, depth, _heads = SIZES[size]  # (embed_dim, depth, heads)
    dp, depth_p = 384, 6
    n_all = N_ROIS * N_FRAMES // PATCH

    def blocks(width, n_blocks, n):
        return batch * n * n_blocks * (24 * width * width + 4 * n * width)

    embed = 2 * PATCH * d  # patch embedding per token
    target = blocks(d, depth, n_all) + batch * n_all * embed
    if not training:
        return float(target)
    ctx = blocks(d, depth, n_context) + batch * n_context * embed
    n_pred = n_context + n_target
    pred = blocks(dp, depth_p, n_pred) + batch * (n_context * 2 * d * dp
                                                  + n_target * 2 * dp * d)
    return float(target + 3 * (ctx + pred))


# ---------------------------------------------------------------------------- worker
class _Runner:
    """One implementation's pretraining step and encoder pass on a fixed batch."""

    def __init__(self, impl, args, batch):
        import torch

        grads, _ = _gradients(args.reference)
        torch.manual_seed(0)
        if impl == "neurofm":
            params, self.loss_fn, self.ema, self.encode_fn, modules, _ = _neurofm(args.size,
                                                                                  grads)
        else:
            params, self.loss_fn, self.ema, self.encode_fn, modules, _ = _reference(
                args.size, grads, args.reference, args.mode, args.device)
        self.device = torch.device(args.device)
        for m in modules:
            m.to(self.device)
        self.batch = batch
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04)
        self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16,
                                               enabled=args.bf16)
        self.flops = None
        if self.device.type == "cuda":
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter, self.autocast():
                loss = self.loss_fn(batch)
            with counter:
                loss.backward()
            self.opt.zero_grad(set_to_none=True)
            self.flops = counter.get_total_flops()
        if args.compile:
            for m in modules:
                m.compile()
        self.n_steps = 0

    def sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self):
        t0 = time.perf_counter()
        with self.autocast():
            loss = self.loss_fn(self.batch)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema(self.n_steps)
        self.n_steps += 1
        self.sync()
        return time.perf_counter() - t0

    def encode(self):
        import torch

        t0 = time.perf_counter()
        with torch.no_grad(), self.autocast():
            self.encode_fn(self.batch["signal"])
        self.sync()
        return time.perf_counter() - t0


def worker(args):
    """Time the implementations named in args.impl (comma-separated), steps interleaved."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    batch = {k: v.to(args.device) for k, v in _masks(args.batch).items()
             if k in ("signal", "context_idx", "target_idx")}
    impls = args.impl.split(",")
    runners = {impl: _Runner(impl, args, batch) for impl in impls}
    for r in runners.values():
        for _ in range(args.warmup):
            r.step()
            r.encode()
    base_rss = _rss_mb()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = {impl: {"step": [], "encode": []} for impl in impls}
    for i in range(args.steps):
        order = impls if i % 2 == 0 else impls[::-1]  # alternate: load drifts hit both
        for impl in order:
            times[impl]["step"].append(runners[impl].step())
        for impl in order:
            times[impl]["encode"].append(runners[impl].encode())
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
            else _peak_rss_mb() - base_rss)
    tokens = args.batch * N_ROIS * (N_FRAMES // PATCH)
    for impl in impls:
        step_s = float(np.median(times[impl]["step"]))
        enc_s = float(np.median(times[impl]["encode"]))
        out = {"impl": impl if impl == "neurofm" else f"reference[{args.mode}]",
               "size": args.size, "batch": args.batch, "step_s": step_s,
               "train_tokens_per_s": tokens / step_s, "encode_tokens_per_s": tokens / enc_s,
               "peak_mb": peak if len(impls) == 1 else None,
               "flops_per_step": runners[impl].flops, "interleaved": len(impls) > 1}
        out["counted_flops_per_step"] = out.pop("flops_per_step")  # flop_counter's figure
        k_ctx, k_tgt = batch["context_idx"].shape[1], batch["target_idx"].shape[1]
        out["flops_per_step"] = model_flops(args.size, args.batch, k_ctx, k_tgt)
        out["encode_flops"] = model_flops(args.size, args.batch, k_ctx, k_tgt,
                                          training=False)
        if args.device == "cuda" and args.peak_tflops:
            peak = args.peak_tflops * 1e12
            out["mfu"] = out["flops_per_step"] / step_s / peak
            out["encode_mfu"] = out["encode_flops"] / enc_s / peak
        print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------- driver
def _run(cmd, timeout):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = [json.loads(line[7:]) for line in proc.stdout.splitlines()
           if line.startswith("RESULT ")]
    if not out:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="scratch checkout of Eric-LRL/Brain-JEPA")
    p.add_argument("--reference-mode", dest="mode", default="flash_attn",
                   choices=["flash_attn", "normal"],
                   help="flash_attn: its configured mode through the SDPA shim")
    p.add_argument("--sizes", nargs="+", default=["small", "base"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the per-implementation peak-memory processes (saves two "
                        "model builds, and two compilations with --compile, per size)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="accelerator peak for MFU (H100/H200 dense bf16: 989)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--_worker", nargs=2, metavar=("IMPLS", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        args.impl, args.size = args._worker
        return worker(args)

    import torch

    ref_ok = bool(args.reference) and os.path.isfile(
        os.path.join(args.reference, "src", "models", "vision_transformer.py"))
    _, grad_src = _gradients(args.reference if ref_ok else None)
    print(f"Brain-JEPA pretraining step, {N_ROIS} ROIs x {N_FRAMES} frames "
          f"({N_ROIS * N_FRAMES // PATCH} tokens), batch {args.batch}, device {args.device}, "
          f"bf16 {args.bf16}, compile {args.compile}, torch {torch.__version__}, "
          f"threads {args.threads or torch.get_num_threads()}, gradients: {grad_src}")
    if not ref_ok:
        print("REFERENCE ABSENT: pass --reference PATH (a checkout of Eric-LRL/Brain-JEPA); "
              "only neurofm is measured, no ratio is reported.")
    else:
        enc, pred = parity(args.reference, args.mode)
        print(f"parity with copied weights (40 ROIs x 160 frames, D=64): max |diff| encoder "
              f"{enc:.2e}, predictor {pred:.2e}")
    common = [sys.executable, os.path.abspath(__file__), "--batch", str(args.batch),
              "--steps", str(args.steps), "--warmup", str(args.warmup), "--device",
              args.device, "--threads", str(args.threads), "--peak-tflops",
              str(args.peak_tflops), "--reference-mode", args.mode]
    if args.bf16:
        common.append("--bf16")
    if args.compile:
        common.append("--compile")
    if ref_ok:
        common += ["--reference", args.reference]
    results = []
    for size in args.sizes:
        impls = ["neurofm"] + (["reference"] if ref_ok else [])
        # peak memory: each implementation alone in its own process (2 steps)
        peaks = {impl: float("nan") for impl in impls}
        for impl in impls if not args.no_peak else ():
            r = _run(common + ["--_worker", impl, size, "--steps", "2"],
                     args.timeout)
            peaks[impl] = r[0]["peak_mb"] if r else float("nan")
        # throughput: both in one process, steps interleaved (robust to load drift)
        rows = _run(common + ["--_worker", ",".join(impls), size], args.timeout)
        if not rows:
            print(f"{size}: FAILED (see stderr)")
            continue
        for r, impl in zip(rows, impls):
            if not args.no_peak or r.get("peak_mb") is None:  # alone: measured in-process
                r["peak_mb"] = peaks[impl]
            results.append(r)
            mfu = (f", MFU train {100 * r['mfu']:.1f} % / encode {100 * r['encode_mfu']:.1f} %"
                   if r.get("mfu") else "")
            print(f"{r['impl']:>22} {size:>5}: step {r['step_s']:.3f} s, train "
                  f"{r['train_tokens_per_s']:,.0f} tok/s, encode "
                  f"{r['encode_tokens_per_s']:,.0f} tok/s, peak {r['peak_mb']:,.0f} MB{mfu}")
        if len(rows) == 2:
            a, b = rows
            print(f"{'neurofm / reference':>22} {size:>5}: train x"
                  f"{a['train_tokens_per_s'] / b['train_tokens_per_s']:.2f}, encode x"
                  f"{a['encode_tokens_per_s'] / b['encode_tokens_per_s']:.2f}, peak memory x"
                  f"{a['peak_mb'] / max(b['peak_mb'], 1e-9):.2f} (goal: train >= 1.5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
