"""Linear probes on frozen embeddings and full fine-tuning with layer-wise lr decay.

Shapes: n windows, C channels, T samples, N tokens, D features, K outputs.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .._logging import warn
from ..errors import NeurofmError
from .metrics import primary_score

__all__ = ["FineTuneNet", "block_lists", "fine_tune", "layer_decay_param_groups",
           "linear_probe", "set_drop_path"]

#: linear probe defaults (the reference uses LARS lr 2.5e-4, 50 epochs; see docs/evaluation.md)
LINEAR_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.05, "epochs": 100, "batch_size": 64}
#: fine-tuning defaults of the Brain-JEPA reference (blr 1e-3 * 16 / 256)
FINETUNE_DEFAULTS = {"lr": 6.25e-5, "min_lr": 1e-6, "weight_decay": 0.05, "layer_decay": 0.75,
                     "drop_path": 0.1, "epochs": 50, "batch_size": 16}


def _options(given, defaults, what):
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise NeurofmError(f"{what}: unknown option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **given}


class _Target:
    """Labels <-> network outputs (class indices, or standardized regression targets)."""

    def __init__(self, task, y_train):
        self.task = task
        if task == "classification":
            self.classes = np.unique(y_train)
            self.n_out = len(self.classes)
        else:
            y = np.asarray(y_train, dtype=np.float64)
            self.mean, self.std = float(y.mean()), float(y.std() or 1.0)
            self.n_out, self.classes = 1, None

    def encode(self, y):
        if self.task == "classification":
            idx = np.searchsorted(self.classes, y)
            idx = np.clip(idx, 0, len(self.classes) - 1)
            return torch.as_tensor(idx, dtype=torch.int64)
        return torch.as_tensor((np.asarray(y, dtype=np.float64) - self.mean) / self.std,
                               dtype=torch.float32)

    def loss(self, out, target):
        if self.task == "classification":
            return nn.functional.cross_entropy(out, target)
        return nn.functional.mse_loss(out[:, 0], target)

    def decode(self, out):
        """Network outputs (n, K) -> predictions (n,), probabilities (n, K) or None."""
        out = out.detach().float().cpu()
        if self.task == "classification":
            proba = torch.softmax(out, dim=1).numpy()
            return self.classes[proba.argmax(axis=1)], proba
        return out[:, 0].numpy() * self.std + self.mean, None


def _batches(n, batch_size, generator):
    order = torch.randperm(n, generator=generator)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def linear_probe(task, features, y, splits, *, seed=0, options=None, device=None):
    """BatchNorm1d(affine=False) + Linear on frozen features; best epoch chosen on val.

    Parameters
    ----------
    task : {"classification", "regression"}
    features : float array of shape (n, D)
    y : array of shape (n,)
    splits : dict of "train" / "val" / "test" -> index arrays
    options : dict, optional
        ``lr``, ``weight_decay``, ``epochs``, ``batch_size`` (AdamW; see ``LINEAR_DEFAULTS``).

    Returns
    -------
    pred : array of shape (n_test,)
    proba : array of shape (n_test, K) or None
    classes : array or None
    """
    opt = _options(options, LINEAR_DEFAULTS, "linear options")
    device = torch.device(device or "cpu")
    tr, va, te = (splits[k] for k in ("train", "val", "test"))
    target = _Target(task, y[tr])
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    d = features.shape[1]
    head = nn.Sequential(nn.BatchNorm1d(d, affine=False, eps=1e-6), nn.Linear(d, target.n_out))
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    head.to(device)
    X = torch.as_tensor(features, dtype=torch.float32, device=device)
    X_tr, X_va = X[tr], X[va]
    yt = target.encode(y[tr]).to(device)
    optim = torch.optim.AdamW(head.parameters(), lr=opt["lr"], weight_decay=opt["weight_decay"])
    best, best_state = -np.inf, copy.deepcopy(head.state_dict())
    for _ in range(int(opt["epochs"])):
        head.train()
        for b in _batches(len(tr), int(opt["batch_size"]), gen):
            if len(b) < 2:  # BatchNorm needs two samples in training mode
                continue
            loss = target.loss(head(X_tr[b]), yt[b])
            optim.zero_grad()
            loss.backward()
            optim.step()
        if len(va):
            head.eval()
            with torch.no_grad():
                p, _ = target.decode(head(X_va))
            s = primary_score(task, y[va], p)
            if np.isfinite(s) and s > best:
                best, best_state = s, copy.deepcopy(head.state_dict())
    if len(va) and np.isfinite(best):
        head.load_state_dict(best_state)
    head.eval()
    with torch.no_grad():
        pred, proba = target.decode(head(X[te]))
    return pred, proba, target.classes


# ------------------------------------------------------------------------------ fine-tuning
def block_lists(module):
    """The transformer block lists of ``module``, outermost first, in registration order.

    Returns
    -------
    blocks : list of (prefix, nn.Module)
        Every block ("encoder.blocks.3", block) of every ``nn.ModuleList`` whose items hold
        an attention layer, concatenated; nested lists inside a block are not counted.
    """
    out = []
    taken = []
    for name, m in module.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue
        if isinstance(m, nn.ModuleList) and len(m) and all(
                any(hasattr(sub, "attn") or "attention" in type(sub).__name__.lower()
                    for sub in item.modules()) for item in m):
            out.extend((f"{name}.{i}" if name else str(i), item) for i, item in enumerate(m))
            taken.append(name)
    return out


def layer_decay_param_groups(model, *, lr, weight_decay=0.05, layer_decay=0.75,
                             head_prefixes=("head.",)):
    """AdamW parameter groups with layer-wise learning-rate decay, applied for real.

    Layer ids: parameters registered before the first block (patch / ROI embeddings,
    positions) get 0, block ``i`` (counting every block list in order) gets ``i + 1``, and
    parameters after the last block (final norms) and the head get ``L + 1``; the scale is
    ``layer_decay ** (L + 1 - layer_id)``. (The Brain-JEPA reference matched parameter names
    with ``startswith("blocks")`` on names that start with ``encoder.``, so every parameter got
    scale 1; here blocks are found wherever they sit.) Biases and 1-D parameters get no
    weight decay.

    Returns
    -------
    groups : list of dict
        ``params``, ``lr`` (= lr * scale), ``lr_scale``, ``weight_decay``, ``layer_id`` and
        ``names``.
    """
    blocks = [prefix + "." for prefix, _ in block_lists(model)]
    n_layers = len(blocks)
    groups = {}
    seen = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hit = next((k for k, pre in enumerate(blocks) if name.startswith(pre)), None)
        if any(name.startswith(h) for h in head_prefixes):
            layer = n_layers + 1
        elif hit is not None:
            layer = hit + 1
            seen = max(seen, layer)
        else:
            layer = 0 if seen == 0 else (n_layers + 1 if seen == n_layers else seen)
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        key = (layer, no_decay)
        if key not in groups:
            scale = float(layer_decay) ** (n_layers + 1 - layer)
            groups[key] = {"params": [], "names": [], "layer_id": layer, "lr_scale": scale,
                           "lr": lr * scale, "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def set_drop_path(module, rate):
    """Stochastic depth linear from 0 (first block) to ``rate`` (last block), in place.

    Replaces each block's ``drop_path`` attribute (``nn.Identity`` or ``DropPath``).

    Returns
    -------
    rates : list of float
        The rate of every block that has a ``drop_path`` attribute (empty: not applied).
    """
    from ..models.layers import DropPath

    blocks = [b for _, b in block_lists(module) if hasattr(b, "drop_path")]
    rates = np.linspace(0.0, float(rate), len(blocks)).tolist() if blocks else []
    for blk, r in zip(blocks, rates):
        blk.drop_path = DropPath(r) if r > 0 else nn.Identity()
    return rates


class FineTuneNet(nn.Module):
    """Encoder -> token mean -> LayerNorm -> Linear (the reference's ``global_pool`` head).

    Parameters
    ----------
    encoder : EncoderAdapter
        Maps (B, C, T) to (B, N, D) or (B, D).
    dim : int
        D.
    n_out : int
        Classes, or 1 for regression.
    """

    def __init__(self, encoder, dim, n_out):
        super().__init__()
        self.encoder = encoder
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, n_out)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):  # (B, C, T) -> (B, K)
        h = self.encoder(x)
        if h.ndim == 3:
            h = h.mean(dim=1)  # (B, D)
        return self.head(self.fc_norm(h))


def fine_tune(task, encoder, signal, y, splits, *, seed=0, options=None, device=None):
    """Fine-tune a copy of ``encoder`` with a linear head; best epoch chosen on val.

    AdamW on :func:`layer_decay_param_groups` (layer decay 0.75), stochastic depth 0.1
    (:func:`set_drop_path`), half-cosine schedule per step from ``lr`` to ``min_lr``.

    Parameters
    ----------
    task : {"classification", "regression"}
    encoder : EncoderAdapter
        Not modified (a deep copy is trained).
    signal : float array of shape (n, C, T)
    y : array of shape (n,)
    splits : dict of "train" / "val" / "test" -> index arrays
    options : dict, optional
        ``lr``, ``min_lr``, ``weight_decay``, ``layer_decay``, ``drop_path``, ``epochs``,
        ``batch_size`` (see ``FINETUNE_DEFAULTS``).

    Returns
    -------
    pred, proba, classes : as :func:`linear_probe`
    """
    opt = _options(options, FINETUNE_DEFAULTS, "finetune options")
    device = torch.device(device or "cpu")
    tr, va, te = (splits[k] for k in ("train", "val", "test"))
    target = _Target(task, y[tr])
    torch.manual_seed(int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    enc = copy.deepcopy(encoder).to(device)
    for p in enc.parameters():
        p.requires_grad_(True)
    if opt["drop_path"] and not set_drop_path(enc, opt["drop_path"]):
        warn("fine_tune: the encoder has no blocks with a drop_path attribute; stochastic "
             "depth not applied")
    X = torch.as_tensor(signal, dtype=torch.float32)
    with torch.no_grad():
        enc.eval()
        h = enc(X[:1].to(device))
    net = FineTuneNet(enc, int(h.shape[-1]), target.n_out).to(device)
    groups = layer_decay_param_groups(net, lr=opt["lr"], weight_decay=opt["weight_decay"],
                                      layer_decay=opt["layer_decay"])
    optim = torch.optim.AdamW(groups, lr=opt["lr"])
    yt = target.encode(y[tr])
    X_tr = X[tr]
    bs = int(opt["batch_size"])
    total = max(1, int(opt["epochs"]) * math.ceil(len(tr) / bs))
    step = 0
    best, best_state = -np.inf, None

    def predict(idx):
        net.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(idx), 64):
                outs.append(net(X[idx[i:i + 64]].to(device)))
        return target.decode(torch.cat(outs))

    for _ in range(int(opt["epochs"])):
        net.train()
        for b in _batches(len(tr), bs, gen):
            frac = step / total
            lr = opt["min_lr"] + (opt["lr"] - opt["min_lr"]) * 0.5 * (1 + math.cos(math.pi * frac))
            for g in optim.param_groups:
                g["lr"] = lr * g["lr_scale"]
            loss = target.loss(net(X_tr[b].to(device)), yt[b].to(device))
            optim.zero_grad()
            loss.backward()
            optim.step()
            step += 1
        if len(va):
            p, _ = predict(va)
            s = primary_score(task, y[va], p)
            if np.isfinite(s) and s > best:
                best, best_state = s, copy.deepcopy(net.state_dict())
    if best_state is not None:
        net.load_state_dict(best_state)
    pred, proba = predict(te)
    return pred, proba, target.classes
