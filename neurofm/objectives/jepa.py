"""JEPA objective: EMA target encoder, normalized targets, smooth-L1 latent prediction.

Shapes: B batch, R ROIs, T frames, N tokens, K kept tokens, D width.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, NeurofmError
from ..masking import apply_masks
from .schedules import EMA_SCHEDULES, ema_momentum

__all__ = ["JEPAObjective"]


class JEPAObjective(nn.Module):
    """Brain-JEPA's objective around an injected model (``BrainJEPA``).

    The target encoder is a frozen deep copy of ``model.encoder`` (no gradients, kept in
    eval mode), updated after each optimizer step by :meth:`update_target`:
    ``target <- m * target + (1 - m) * online``. Targets are the target encoder's output
    on every token, LayerNorm-ed without affine over the width, gathered at
    ``target_idx``; the loss is smooth-L1 (Huber, ``beta`` 1, mean) between them and the
    predictor's output.

    Parameters
    ----------
    model : BrainJEPA
        The online model (``model.encoder``, ``model(x, context_idx, target_idx, ...)``).
    ema : (float, float)
        Momentum start and end (0.996, 1.0).
    ema_schedule : {"intended", "reference"}
        See :func:`neurofm.objectives.schedules.ema_momentum`.
    total_steps : int, optional
        Optimizer steps of the run (needed by :meth:`momentum`; settable later, e.g. from
        ``trainer.estimated_stepping_batches``).
    beta : float
        Huber threshold of the smooth-L1 loss.

    Attributes
    ----------
    target_encoder : nn.Module
        The EMA copy (its weights are the ones the reference evaluates downstream).
    """

    def __init__(self, model, *, ema=(0.996, 1.0), ema_schedule="intended", total_steps=None,
                 beta=1.0, reference_accumulation=8):
        super().__init__()
        if ema_schedule not in EMA_SCHEDULES:
            raise NeurofmError(f"ema_schedule must be one of {EMA_SCHEDULES}; got "
                               f"{ema_schedule!r}")
        lo, hi = (float(v) for v in ema)
        if not 0.0 <= lo <= hi <= 1.0:
            raise NeurofmError(f"ema must satisfy 0 <= start <= end <= 1; got {ema!r}")
        self.ema, self.ema_schedule = (lo, hi), ema_schedule
        self.total_steps = total_steps
        self.beta = float(beta)
        self.reference_accumulation = int(reference_accumulation)
        self.target_encoder = copy.deepcopy(model.encoder)
        self.target_encoder.requires_grad_(False)
        self.target_encoder.eval()

    def train(self, mode=True):
        """Keep the target encoder in eval mode whatever the parent's mode."""
        super().train(mode)
        self.target_encoder.eval()
        return self

    # ---------------------------------------------------------------- EMA
    def momentum(self, step, total_steps=None):
        """Momentum used by the update after optimizer step ``step`` (0-based)."""
        total = self.total_steps if total_steps is None else total_steps
        if total is None:
            raise NeurofmError("JEPAObjective.total_steps is not set (the number of optimizer "
                               "steps of the run, needed by the EMA schedule)")
        return ema_momentum(step, total_steps=int(total), start=self.ema[0], end=self.ema[1],
                            schedule=self.ema_schedule,
                            reference_accumulation=self.reference_accumulation)

    @torch.no_grad()
    def update_target(self, model, step=None, *, momentum=None, total_steps=None):
        """EMA update of the target encoder from ``model.encoder`` (call after
        ``optimizer.step()``); buffers (the gradient matrix) are copied.

        Returns
        -------
        m : float
            The momentum used.
        """
        if momentum is None:
            if step is None:
                raise NeurofmError("update_target needs step= (or momentum=)")
            momentum = self.momentum(step, total_steps)
        m = float(momentum)
        online = dict(model.encoder.named_parameters())
        names = [n for n, _ in self.target_encoder.named_parameters()]
        if set(names) != set(online):
            raise NeurofmError("target and online encoders have different parameters")
        tgt = [p for _, p in self.target_encoder.named_parameters()]
        src = [online[n].detach().to(tgt[i].dtype) for i, n in enumerate(names)]
        torch._foreach_mul_(tgt, m)
        torch._foreach_add_(tgt, src, alpha=1.0 - m)
        online_buffers = dict(model.encoder.named_buffers())
        for n, b in self.target_encoder.named_buffers():
            b.copy_(online_buffers[n])
        return m

    # ---------------------------------------------------------------- loss
    @torch.no_grad()
    def targets(self, x, target_idx):
        """LayerNorm-ed target-encoder embeddings: (B, N, D) all tokens and (B, K_tgt, D)."""
        h = self.target_encoder(x)  # (B, N, D)
        h = F.layer_norm(h, (h.shape[-1],))
        return h, apply_masks(h, target_idx)

    def loss(self, model, batch):
        """Loss and diagnostics of one batch from
        :class:`~neurofm.masking.SpatiotemporalMaskCollator`.

        Parameters
        ----------
        model : BrainJEPA
        batch : dict
            ``signal`` (B, R, T), ``context_idx`` (B, K_ctx), ``target_idx`` (B, K_tgt), and
            optionally ``context_mask`` / ``target_mask`` (padding).

        Returns
        -------
        out : dict
            ``loss`` (scalar tensor with grad); detached scalars ``target_std`` (std across
            the batch of the token-averaged normalized target embeddings, averaged over
            features: near 0 means collapse), ``pred_std`` (the same for predictions),
            ``n_context`` and ``n_target`` (tokens per sample in the batch tensors).
        """
        for key in ("signal", "context_idx", "target_idx"):
            if key not in batch:
                raise DataError(f"JEPA batch lacks {key!r} (use SpatiotemporalMaskCollator)")
        x, ctx, tgt = batch["signal"], batch["context_idx"], batch["target_idx"]
        cmask, tmask = batch.get("context_mask"), batch.get("target_mask")
        h_all, h = self.targets(x, tgt)  # (B, N, D), (B, K_tgt, D)
        z = model(x, ctx, tgt, context_mask=cmask, target_mask=tmask)  # (B, K_tgt, D)
        err = F.smooth_l1_loss(z.float(), h.float(), reduction="none", beta=self.beta)
        if tmask is None:
            loss = err.mean()
        else:
            w = tmask.to(err.dtype)[..., None]  # (B, K_tgt, 1)
            loss = (err * w).sum() / (w.sum() * err.shape[-1]).clamp_min(1.0)
        with torch.no_grad():
            target_std = h_all.float().mean(dim=1).std(dim=0).mean() if len(x) > 1 \
                else h_all.new_zeros(())
            zf = z.detach().float()
            if tmask is not None:
                w = tmask.to(zf.dtype)[..., None]
                pooled = (zf * w).sum(1) / w.sum(1).clamp_min(1.0)
            else:
                pooled = zf.mean(dim=1)
            pred_std = pooled.std(dim=0).mean() if len(x) > 1 else zf.new_zeros(())
        return {"loss": loss, "target_std": target_std.float(), "pred_std": pred_std,
                "n_context": torch.tensor(float(ctx.shape[1])),
                "n_target": torch.tensor(float(tgt.shape[1]))}

    def forward(self, model, batch):
        return self.loss(model, batch)
