"""``BrainMAEModule``: BrainMAE pretraining (paper re-implementation, no reference code).

Wiring (what ``neurofm fit -c configs/brainmae.yaml`` builds)::

    model  = BrainMAE(n_rois, segment_frames, mask_ratio=0.5, ...)   # neurofm.models
    module = BrainMAEModule(model, lr=..., ...)                       # this file
    data   = BrainDataModule(store, window_samples=n_frames)          # plain "pad" collate

The segment-wise ROI masks are drawn inside the module from a generator seeded with
``(seed, global step)`` (validation: ``(seed, batch index)``), so a resumed run draws the
same masks as an uninterrupted one. The learning rate (linear warmup, then cosine) is a pure
function of the optimizer step. The optimizer settings are UNVERIFIED (the paper's are not
known): AdamW, betas (0.9, 0.95), weight decay 0.05 without decay on biases and 1-D
parameters, MAE-style.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import NeurofmError
from ..objectives.schedules import warmup_cosine
from .base import NeurofmModule

__all__ = ["BrainMAEModule"]


def _param_groups(module, weight_decay):
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class BrainMAEModule(NeurofmModule):
    """BrainMAE pretraining: masked reconstruction, 0.75 masked + 0.25 unmasked MSE.

    Parameters
    ----------
    model : neurofm.models.BrainMAE
        The architecture (mask ratio and loss weighting are its config).
    lr : float
        Peak learning rate.
    start_lr, final_lr : float
        Warmup start and cosine end.
    warmup_fraction : float
        Share of the optimizer steps spent warming up.
    weight_decay : float
        AdamW weight decay (not on biases and 1-D parameters).
    betas : (float, float)
        AdamW betas.
    seed : int
        Seed of the masks (with the global step).
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, start_lr: float = 1e-5,
                 final_lr: float = 1e-6, warmup_fraction: float = 0.05,
                 weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.95),
                 seed: int = 0):
        super().__init__()
        if not hasattr(model, "random_mask") or not hasattr(model, "loss"):
            raise NeurofmError(f"model must be a neurofm.models.BrainMAE; got "
                               f"{type(model).__name__}")
        if not 0.0 <= float(warmup_fraction) < 1.0:
            raise NeurofmError(f"warmup_fraction must be in [0, 1); got {warmup_fraction!r}")
        self.model = model
        self.lr, self.start_lr, self.final_lr = float(lr), float(start_lr), float(final_lr)
        self.warmup_fraction = float(warmup_fraction)
        self.weight_decay = float(weight_decay)
        self.betas = tuple(float(b) for b in betas)
        self.seed = int(seed)

    # ---------------------------------------------------------------- setup
    def setup(self, stage=None):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        window = getattr(dm, "_window", {}).get("window_samples") if dm is not None else None
        seg = self.model.config["segment_frames"]
        if window is not None and window < seg:
            raise NeurofmError(f"data window_samples={window} is shorter than one BrainMAE "
                               f"segment (segment_frames={seg})")

    # ---------------------------------------------------------------- optimization
    def _total_steps(self):
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self):
        return torch.optim.AdamW(_param_groups(self.model, self.weight_decay),
                                 lr=self.start_lr, betas=self.betas)

    def on_train_batch_start(self, batch, batch_idx):
        total = self._total_steps()
        step = min(int(self.global_step), total)
        lr = warmup_cosine(step, total_steps=total,
                           warmup_steps=round(self.warmup_fraction * total),
                           start=self.start_lr, peak=self.lr, final=self.final_lr)
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        self.log("lr", lr, on_step=True, on_epoch=False)

    def _mask(self, x, key):
        seg = self.model.config["segment_frames"]
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, *key]).generate_state(1)[0]))
        return self.model.random_mask(len(x), x.shape[-1] // seg, generator=g, device=x.device)

    def _step(self, batch, key):
        x = batch["signal"]  # (B, R, T)
        return self.model.loss(x, self._mask(x, key))

    def training_step(self, batch, batch_idx):
        out = self._step(batch, (0, int(self.global_step)))
        n = len(batch["signal"])
        self.log("train_loss", out["loss"], prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=n)
        for key in ("loss_masked", "loss_unmasked"):
            if torch.isfinite(out[key]):
                self.log(f"train_{key}", out[key], on_step=True, on_epoch=True, batch_size=n)
        self.log("state_std", out["state_std"], on_step=True, on_epoch=True, batch_size=n)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self._step(batch, (1, int(batch_idx)))
        n = len(batch["signal"])
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_state_std", out["state_std"], batch_size=n, sync_dist=True)

    def test_step(self, batch, batch_idx):
        out = self._step(batch, (2, int(batch_idx)))
        self.log("test_loss", out["loss"], batch_size=len(batch["signal"]), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        """Segment-averaged encoder states (B, D) with the windows' provenance."""
        h = self.model.encode(batch["signal"])  # (B, K, D)
        return {"embedding": h.mean(dim=1), "recording": batch.get("recording"),
                "start": batch.get("start")}
