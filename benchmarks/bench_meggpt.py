"""MEG-GPT throughput: neurofm vs the reference model code, training and generation.

Training: one step = forward on (B, context + 1, C) tokens with the session embedding,
cross-entropy on the last ``loss_last`` positions, backward, AdamW step (dropout on, as in
training). Rate = input tokens (B x context x C) per second.

Generation: ``n_steps`` new time steps for every channel from a full-context prompt, nucleus
sampling (top_p 0.95), session label given. Rate = generated tokens (B x n_steps x C) per
second. neurofm runs with the KV cache (``use_cache=True``: the window slides by
``loss_last`` and is re-read once per slide) and without it (the whole window at each step);
the reference runs its own ``MEGGPTGenerator.generate_tokens`` loop (the whole window at
every step, one-step slide).

The reference (github OHBA-analysis/MEG-GPT, 2026 PyTorch release) is imported from a scratch
checkout given by ``--reference PATH`` (``git archive`` of the repository); a ``_deps``
folder inside it is put on ``sys.path`` too (``pip install --target PATH/_deps einops``).
Its model is assembled from its own modules exactly as ``meg_gpt.models.meg_gpt.MEGGPT``
does (``InputEmbeddingLayer`` -> ``TransformerDecoder`` -> ``Linear`` head ->
``CrossEntropyLoss``, ``init_model_weights``) without the Lightning/Hydra wrapper, at the same
config: no patching (``patch_len 1``), the last layer computing the last ``loss_last``
positions only (its default ``n_patches_out``), no channel attention. neurofm adds a final
LayerNorm the reference does not have (a few thousand FLOPs per token).

Both implementations are built in one process and their steps alternate (ABBA...), medians
reported (wall clock and process CPU time), so drifting machine load hits both alike. The
"floor" is the same step with the linear layers alone (no attention, norms, dropout,
activations or embeddings): what no attention kernel can go below. ``--device cuda --bf16``
gives the bf16 autocast throughput and the model-FLOPs utilization (FLOPs from
``neurofm.models.meggpt.count_flops`` over ``--peak-tflops``); ``--compile`` compiles the
training loss of both implementations with ``torch.compile`` (generation stays eager).

Usage::

    git --git-dir=/work/.mirror/OHBA-analysis+MEG-GPT/repo archive HEAD meg_gpt \\
        | tar -x -C /tmp/meggpt_ref
    pip install --target /tmp/meggpt_ref/_deps einops
    python benchmarks/bench_meggpt.py --reference /tmp/meggpt_ref
    python benchmarks/bench_meggpt.py --reference /tmp/meggpt_ref --device cuda --bf16 \\
        --channels 52 --batch 64 --gen-batch 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import types


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(args, device):
    import torch

    if args.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------- models
def _config(args):
    return {"vocab_size": args.vocab, "n_channels": args.channels, "context": args.context,
            "loss_last": args.loss_last, "d_model": args.d_model, "n_layers": args.layers,
            "n_heads": args.heads, "d_ff": args.d_ff, "dropout": args.dropout,
            "n_sessions": args.sessions, "position": args.position,
            "channel_attention": False}


def _ours(args, device):
    import torch

    from neurofm.models import MEGGPT

    torch.manual_seed(0)
    return MEGGPT(**_config(args)).to(device)


def _import_reference(path):
    path = os.path.abspath(path)
    for p in (os.path.join(path, "_deps"), path):
        if os.path.isdir(p) and p not in sys.path:
            sys.path.insert(0, p)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from meg_gpt.models.decoder.transformer_decoder import TransformerDecoder
    from meg_gpt.models.embeddings import InputEmbeddingLayer
    from meg_gpt.optim.initializer import init_model_weights
    from meg_gpt.optim.losses import CrossEntropyLoss
    from meg_gpt.typing import Label

    return TransformerDecoder, InputEmbeddingLayer, init_model_weights, CrossEntropyLoss, Label


def _reference(args, device):
    """The reference MEGGPT assembled from its modules (same wiring as its ``MEGGPT``)."""
    import torch
    from torch import nn

    decoder_cls, embedding_cls, init_weights, ce_cls, label_cls = _import_reference(
        args.reference)
    n, L, K = args.layers, args.context, args.loss_last
    pos_type = {"learned": "absolute", "sinusoidal": "sinusoidal", "rope": "rope"}[args.position]

    class ReferenceMEGGPT(nn.Module):
        def __init__(self):
            super().__init__()
            labels = [label_cls(name="session_labels", n_classes=args.sessions,
                                label_dim=args.vocab)]
            self.input_embedding_layer = embedding_cls(
                args.d_model, args.vocab, L, args.channels, args.d_model, args.d_model,
                pos_type, args.d_model, labels)
            self.transformer_decoder = decoder_cls(
                args.heads, args.d_model, args.d_model, args.channels,
                n_patches_out=[L] * (n - 1) + [K], patch_len_out=[1] * n,
                n_patches_in=[L] * n, patch_len_in=[1] * n, unpatched_len_in=[0] * n,
                l_unpatched_b=[None] * n, l_patched_b=[None] * n,
                do_chan_attention=[False] * n, do_cross_attention=[False] * n,
                chan_attention_mask=[None] * n, chan_attn_chandim=None,
                full_channel_attention_dropout=0.0, channel_attention_channel_dropout=0.0,
                time_attention_channel_dropout=0.0, feed_forward_dim=args.d_ff,
                feed_forward_activation="gelu", dropout=args.dropout, norm_type="layer",
                use_rope=args.position == "rope")
            self.prediction_head = nn.Linear(args.d_model, args.vocab)
            self.cross_entropy_loss = ce_cls(K, [1, 5], 0.0)
            init_weights(self)
            # what its generator reads
            self.config = types.SimpleNamespace(
                n_channels=args.channels, sequence_length=L,
                input_embedding=types.SimpleNamespace(n_tokens=args.vocab),
                training=types.SimpleNamespace(batch_size=args.gen_batch))

        def forward(self, x, extra_labels):  # as meg_gpt.models.meg_gpt.MEGGPT.forward
            x = x.to(torch.long)
            extra_labels = [lab.to(torch.long) for lab in extra_labels]
            inputs, target = x[:, :-1], x[:, 1:]
            h = self.transformer_decoder(self.input_embedding_layer(inputs, extra_labels))
            logits = self.prediction_head(h)
            loss, _, metrics = self.cross_entropy_loss(logits, target)
            return {"logits": logits, "total_loss": loss, "cross_entropy_metrics": metrics}

    torch.manual_seed(0)
    return ReferenceMEGGPT().to(device)


def _param_groups_ref(model, wd):
    """The reference's split: no decay on embeddings, norms, learned positions, biases."""
    from meg_gpt.models.embeddings import LearnedPositionEmbedding
    from torch import nn

    no_decay_types = (nn.Embedding, nn.LayerNorm, LearnedPositionEmbedding)
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (no_decay if isinstance(module, no_decay_types) or "bias" in name
             else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class _Floor:
    """The linear layers of one training step alone (no attention, norms, dropout, GELU,
    embeddings): a lower bound on the step time that fused attention cannot go below."""

    def __init__(self, args, device):
        import torch
        from torch import nn

        d, f, n = args.d_model, args.d_ff, args.layers
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.ModuleList([nn.Linear(d, 3 * d), nn.Linear(d, d),
                                                   nn.Linear(d, f), nn.Linear(f, d)])
                                    for _ in range(n)).to(device)
        self.head = nn.Linear(d, args.vocab).to(device)
        self.opt = torch.optim.AdamW(list(self.layers.parameters())
                                     + list(self.head.parameters()), lr=1e-5)
        self.x = torch.randn(args.batch * args.channels, args.context, d, device=device)
        self.args, self.device = args, device

    def step(self):
        d, k = self.args.d_model, self.args.loss_last
        x = self.x
        with _autocast(self.args, self.device):
            for i, (qkv, proj, fc1, fc2) in enumerate(self.layers):
                h = qkv(x)[..., :d]  # keys and values computed, queries used
                if i == len(self.layers) - 1:
                    h, x = h[:, -k:], x[:, -k:]
                x = x + proj(h)
                x = x + fc2(fc1(x))
            loss = self.head(x).float().square().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        _sync(self.device)


# ---------------------------------------------------------------------------- runners
class Trainer:
    def __init__(self, impl, model, args, device):
        import torch

        self.impl, self.model, self.args, self.device = impl, model, args, device
        groups = (model.optim_groups(0.01) if impl == "neurofm"
                  else _param_groups_ref(model, 0.01))
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), **fused)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randint(0, args.vocab, (args.batch, args.context + 1, args.channels),
                               generator=g).to(device)
        self.session = torch.randint(0, args.sessions, (args.batch,), generator=g).to(device)
        self.labels = [self.session[:, None].expand(-1, args.context + 1)]
        model.train()
        if impl == "neurofm":
            self.loss_fn = lambda: model.loss(self.x, self.session)[0]
        else:
            self.loss_fn = lambda: model(self.x, self.labels)["total_loss"].mean()
        if args.compile:  # the whole loss (forward + cross-entropy), as one would in training
            self.loss_fn = torch.compile(self.loss_fn)

    def step(self):
        import torch

        with _autocast(self.args, self.device):
            loss = self.loss_fn()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        _sync(self.device)
        return float(loss.detach())


class Generator:
    def __init__(self, impl, model, args, device, use_cache=True):
        import torch

        self.impl, self.model, self.args, self.device = impl, model, args, device
        self.use_cache = use_cache
        g = torch.Generator().manual_seed(2)
        self.prompt = torch.randint(1, args.vocab, (args.gen_batch, args.context,
                                                    args.channels), generator=g).to(device)
        self.session = torch.randint(0, args.sessions, (args.gen_batch,), generator=g).to(
            device)
        if impl == "reference":
            from meg_gpt.inference import generator as ref_generator
            from torch import nn

            ref_generator.trange = lambda *a, **kw: range(*a)  # no progress bar
            self.ref = ref_generator.MEGGPTGenerator(model, nn.Identity())
            self.labels = [self.session[:, None].expand(-1, args.context + 1)]
        model.eval()

    def run(self):
        import torch

        from neurofm.models import generate_tokens

        with _autocast(self.args, self.device):
            if self.impl == "neurofm":
                out = generate_tokens(self.model, self.prompt, n_steps=self.args.gen_steps,
                                      top_p=0.95, seed=0, session=self.session,
                                      use_cache=self.use_cache)
            else:
                torch.manual_seed(0)
                out = self.ref.generate_tokens(
                    n_samples=self.args.gen_steps, top_p=0.95, batch_size=self.args.gen_batch,
                    prompt=self.prompt, extra_labels=self.labels)
        _sync(self.device)
        return out


def _time(fn):
    """(wall seconds, process CPU seconds) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _abba(runners, repeats, warmup):
    """Median wall and CPU seconds per call of each runner, calls alternating ABBA..."""
    for _ in range(warmup):
        for r in runners.values():
            r()
    times = {k: [] for k in runners}
    keys = list(runners)
    for i in range(repeats):
        order = keys if i % 2 == 0 else keys[::-1]
        for k in order:
            times[k].append(_time(runners[k]))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    return wall, cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="scratch checkout of OHBA-analysis/MEG-GPT")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (both)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training loss of both (generation stays eager)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--channels", type=int, default=16, help="C (52 in the release)")
    p.add_argument("--vocab", type=int, default=66)
    p.add_argument("--context", type=int, default=100)
    p.add_argument("--loss-last", type=int, default=16)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--position", default="learned", choices=["learned", "sinusoidal", "rope"])
    p.add_argument("--batch", type=int, default=8, help="training batch")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per impl")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--gen-batch", type=int, default=1)
    p.add_argument("--gen-steps", type=int, default=32, help="generated time steps")
    p.add_argument("--gen-repeats", type=int, default=2)
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--no-floor", action="store_true",
                   help="skip timing the linear layers alone (the training floor)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="accelerator peak for MFU (H100/H200 dense bf16: 989)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    import torch

    from neurofm.models.meggpt import count_flops

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {"config": _config(args), "batch": args.batch, "gen_batch": args.gen_batch,
              "gen_steps": args.gen_steps, "device": str(device), "bf16": args.bf16,
              "compile": args.compile,
              "threads": torch.get_num_threads(), "loadavg_before": load,
              "torch": torch.__version__, "reference": args.reference or None}
    impls = {"neurofm": _ours(args, device)}
    if args.reference:
        impls["reference"] = _reference(args, device)
    report["params"] = {k: sum(p.numel() for p in m.parameters()) for k, m in impls.items()}

    # -------------------------------------------------------------- training
    trainers = {k: Trainer(k, m, args, device).step for k, m in impls.items()}
    if not args.no_floor:
        trainers["floor"] = _Floor(args, device).step
    med, cpu = _abba(trainers, args.steps, args.warmup)
    tokens = args.batch * args.context * args.channels
    flops = count_flops(impls["neurofm"], args.batch, args.context, n_out=args.loss_last)
    train = {}
    for k, s in med.items():
        train[k] = {"step_s": s, "cpu_s": cpu[k], "tokens_per_s": tokens / s}
        if device.type == "cuda":
            train[k]["mfu"] = flops / s / (args.peak_tflops * 1e12)
        else:
            train[k]["gflops_per_s"] = flops / s / 1e9
    report["train"] = train
    report["train_flops_per_step"] = flops
    if "reference" in train:
        report["train_speedup"] = train["reference"]["step_s"] / train["neurofm"]["step_s"]
        report["train_speedup_cpu_time"] = train["reference"]["cpu_s"] / train["neurofm"][
            "cpu_s"]

    # -------------------------------------------------------------- generation
    if not args.skip_generation:
        gens = {"neurofm[cache]": Generator("neurofm", impls["neurofm"], args, device, True),
                "neurofm[no cache]": Generator("neurofm", impls["neurofm"], args, device,
                                               False)}
        if "reference" in impls:
            gens["reference"] = Generator("reference", impls["reference"], args, device)
        with torch.no_grad():
            med, cpu = _abba({k: g.run for k, g in gens.items()}, args.gen_repeats, 1)
        n_gen = args.gen_batch * args.gen_steps * args.channels
        report["generate"] = {k: {"run_s": s, "cpu_s": cpu[k], "tokens_per_s": n_gen / s}
                              for k, s in med.items()}
        ref = "reference" if "reference" in med else "neurofm[no cache]"
        report["generate_speedup_vs_" + ref] = {k: med[ref] / s for k, s in med.items()
                                                if k != ref}
        report["generate_speedup_cpu_time_vs_" + ref] = {k: cpu[ref] / s for k, s in cpu.items()
                                                         if k != ref}
    report["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(json.dumps(report, indent=1))
    if "floor" in train:
        report["train_floor_fraction"] = {k: train["floor"]["cpu_s"] / v["cpu_s"]
                                          for k, v in train.items() if k != "floor"}
    if "train_speedup" in report:
        print(f"training: neurofm {train['neurofm']['tokens_per_s']:.0f} tok/s, reference "
              f"{train['reference']['tokens_per_s']:.0f} tok/s -> {report['train_speedup']:.2f}x"
              f" wall, {report['train_speedup_cpu_time']:.2f}x process CPU time "
              f"(goal >= 1.5x)")
    if "floor" in train:
        fr = report["train_floor_fraction"]
        print("linear-layer floor: " + ", ".join(
            f"{k} step = {1 / v:.2f}x the floor (CPU time)" for k, v in fr.items()))
    if "generate" in report and "reference" in report["generate"]:
        g = report["generate"]
        ratio = g["reference"]["run_s"] / g["neurofm[cache]"]["run_s"]
        ratio_nc = g["reference"]["run_s"] / g["neurofm[no cache]"]["run_s"]
        ratio_cpu = g["reference"]["cpu_s"] / g["neurofm[cache]"]["cpu_s"]
        print(f"generation: neurofm cache {g['neurofm[cache]']['tokens_per_s']:.0f} tok/s, "
              f"no cache {g['neurofm[no cache]']['tokens_per_s']:.0f} tok/s, reference "
              f"{g['reference']['tokens_per_s']:.0f} tok/s -> {ratio:.2f}x with the cache "
              f"({ratio_cpu:.2f}x CPU time; goal >= 5x), {ratio_nc:.2f}x without")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
