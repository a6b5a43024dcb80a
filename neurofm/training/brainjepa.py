"""``JEPAModule``: Brain-JEPA pretraining with an injected model and objective.

Wiring (what ``neurofm fit -c configs/brainjepa.yaml`` builds)::

    model      = BrainJEPA(n_rois, n_frames, size=...)             # neurofm.models
    objective  = JEPAObjective(model, ema=(0.996, 1.0), ...)       # neurofm.objectives
    module     = JEPAModule(model, objective=JEPAObjective, ...)   # this file
    data       = BrainDataModule(store, window_samples=n_frames,
                                 collate=SpatiotemporalMaskCollator(n_rois, n_patches))

The learning rate (linear warmup then cosine), the weight decay (cosine 0.04 -> 0.4) and the
EMA momentum are pure functions of the optimizer step (:mod:`neurofm.objectives.schedules`),
so a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._logging import logger
from ..errors import DataError, NeurofmError
from ..objectives import JEPAObjective
from ..objectives.schedules import cosine, warmup_cosine
from .base import NeurofmModule

__all__ = ["JEPAModule"]


def _param_groups(module, weight_decay):
    """AdamW groups as in the reference: no weight decay on biases and 1-D parameters."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "apply_wd": True},
            {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


class JEPAModule(NeurofmModule):
    """Brain-JEPA pretraining.

    Parameters
    ----------
    model : neurofm.models.BrainJEPA
        The architecture (context encoder + predictor).
    objective : callable(model) -> JEPAObjective
        Builds the objective (EMA target encoder, normalized smooth-L1 targets) around the
        model; in YAML a ``class_path`` / ``init_args`` of ``JEPAObjective`` without the model.
    lr : float
        Peak learning rate (reference 1e-3).
    start_lr, final_lr : float
        Warmup start (5e-5) and cosine end (1e-6).
    warmup_fraction : float
        Share of the optimizer steps spent warming up (reference 40 of 300 epochs).
    weight_decay : (float, float)
        Cosine weight-decay schedule start and end (0.04 -> 0.4).
    betas : (float, float)
        AdamW betas.
    gradients : "auto" | str | None
        With gradient positioning: ``"auto"`` computes the gradient matrix from the training
        split's group functional connectivity (:func:`neurofm.models.group_fc` then
        :func:`neurofm.models.compute_gradients`) when the model has none; a ``.npy`` /
        ``.csv`` path sets it from a file; None keeps the model's.
    """

    def __init__(self, model: nn.Module, objective: Callable[[nn.Module], JEPAObjective] =
                 JEPAObjective, *, lr: float = 1e-3, start_lr: float = 5e-5,
                 final_lr: float = 1e-6, warmup_fraction: float = 40 / 300,
                 weight_decay: tuple[float, float] = (0.04, 0.4),
                 betas: tuple[float, float] = (0.9, 0.999), gradients: str | None = "auto"):
        super().__init__()
        if not callable(objective):
            raise NeurofmError("objective must build a JEPAObjective from the model")
        if not 0.0 <= float(warmup_fraction) < 1.0:
            raise NeurofmError(f"warmup_fraction must be in [0, 1); got {warmup_fraction!r}")
        self.model = model
        self._objective_factory = objective
        self.objective = None
        self.lr, self.start_lr, self.final_lr = float(lr), float(start_lr), float(final_lr)
        self.warmup_fraction = float(warmup_fraction)
        self.weight_decay = tuple(float(w) for w in weight_decay)
        self.betas = tuple(float(b) for b in betas)
        self.gradients_source = gradients
        self._last_ema_step = -1
        self._build_objective()  # a target encoder exists from the start (checkpoint keys)

    def _build_objective(self):
        objective = self._objective_factory(self.model)
        if not isinstance(objective, JEPAObjective):
            raise NeurofmError(f"objective must build a JEPAObjective; got "
                               f"{type(objective).__name__}")
        self.objective = objective

    # ---------------------------------------------------------------- setup
    def setup(self, stage=None):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            self._check_data(dm)
        config = self.model.config
        if config.get("pos_embed") == "gradient" and self.gradients_source is not None:
            if self.gradients_source == "auto":
                g = self.model.gradients
                if g is None or not torch.any(g != 0):
                    self._auto_gradients(dm)
            else:
                self.model.set_gradients(self.gradients_source)
            # the target encoder starts as a copy of the online one, gradients included
            self.objective.target_encoder.load_state_dict(self.model.encoder.state_dict())

    def _check_data(self, dm):
        cfg = self.model.config
        collate = getattr(dm, "collate_fn", None)
        n_rois, n_frames = cfg["n_rois"], cfg["n_frames"]
        grid = getattr(collate, "n_rois", None), getattr(collate, "n_time_patches", None)
        if grid != (None, None) and grid != (n_rois, n_frames // cfg["patch_size"]):
            raise NeurofmError(f"the mask collator's grid {grid} does not match the model's "
                               f"(n_rois={n_rois}, n_time_patches="
                               f"{n_frames // cfg['patch_size']})")
        if getattr(dm, "_window", {}).get("window_samples") not in (None, n_frames):
            raise NeurofmError(f"data window_samples={dm._window['window_samples']} but the "
                               f"model expects n_frames={n_frames}")

    def _auto_gradients(self, dm):
        from ..models import compute_gradients, group_fc

        if dm is None or getattr(dm, "store", None) is None:
            raise NeurofmError('gradients="auto" needs a BrainDataModule with a store; pass a '
                               "gradient file or use pos_embed='sincos'")
        fc, channels = group_fc(dm.store, split="train")
        if len(channels) != self.model.config["n_rois"]:
            raise DataError(f"the store's recordings have {len(channels)} ROIs; the model "
                            f"expects n_rois={self.model.config['n_rois']}")
        k = self.model.config["n_gradients"]
        g = compute_gradients(fc, n_components=min(k, len(channels) - 1))
        if g.shape[1] < k:  # fewer ROIs than gradients: pad with zero columns
            g = np.concatenate([g, np.zeros((g.shape[0], k - g.shape[1]))], axis=1)
        self.model.set_gradients(g)
        logger.info("gradient matrix (%d x %d) computed from the train split's group FC",
                    *g.shape)

    # ---------------------------------------------------------------- optimization
    def _total_steps(self):
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self):
        groups = _param_groups(self.model, self.weight_decay[0])
        return torch.optim.AdamW(groups, lr=self.start_lr, betas=self.betas)

    def _apply_schedules(self):
        total = self._total_steps()
        step = min(int(self.global_step), total)
        warmup = round(self.warmup_fraction * total)
        lr = warmup_cosine(step, total_steps=total, warmup_steps=warmup, start=self.start_lr,
                           peak=self.lr, final=self.final_lr)
        wd = cosine(step, total_steps=total, start=self.weight_decay[0],
                    end=self.weight_decay[1])
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
                if group.get("apply_wd", True):
                    group["weight_decay"] = wd
        return lr, wd

    def on_train_batch_start(self, batch, batch_idx):
        lr, wd = self._apply_schedules()
        self.log("lr", lr, on_step=True, on_epoch=False)
        self.log("weight_decay", wd, on_step=True, on_epoch=False)

    def training_step(self, batch, batch_idx):
        out = self.objective(self.model, batch)
        n = len(batch["signal"])
        self.log("train_loss", out["loss"], prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=n)
        self.log("target_std", out["target_std"], on_step=True, on_epoch=True, batch_size=n)
        self.log("pred_std", out["pred_std"], on_step=True, on_epoch=True, batch_size=n)
        return out["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx):
        step = int(self.global_step) - 1  # the optimizer step just taken
        if step < 0 or step == self._last_ema_step:  # no step yet (gradient accumulation)
            return
        m = self.objective.update_target(self.model, step, total_steps=self._total_steps())
        self._last_ema_step = step
        self.log("ema_momentum", m, on_step=True, on_epoch=False)

    def validation_step(self, batch, batch_idx):
        out = self.objective(self.model, batch)
        n = len(batch["signal"])
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_target_std", out["target_std"], batch_size=n, sync_dist=True)

    def test_step(self, batch, batch_idx):
        out = self.objective(self.model, batch)
        self.log("test_loss", out["loss"], batch_size=len(batch["signal"]), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        """Token-averaged target-encoder embeddings (B, D) with the windows' provenance."""
        h = self.objective.target_encoder(batch["signal"])
        return {"embedding": h.mean(dim=1), "recording": batch.get("recording"),
                "start": batch.get("start")}

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        g = self.model.gradients
        checkpoint["neurofm"]["gradients"] = None if g is None else g.cpu().tolist()
        checkpoint["neurofm"]["last_ema_step"] = self._last_ema_step

    def on_load_checkpoint(self, checkpoint):
        self._last_ema_step = int(checkpoint.get("neurofm", {}).get("last_ema_step", -1))
