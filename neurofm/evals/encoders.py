"""Any torch encoder behind one interface: (B, C, T) -> (B, N, D) or (B, D).

:func:`as_encoder` accepts a neurofm model (``BrainJEPA``, ``BrainMAE``: their ``encode``), an
encoder loaded with :func:`neurofm.models.load_encoder`, an exported encoder file, a Lightning
checkpoint of a neurofm module, or any ``nn.Module`` / callable (a braindecode model, for
instance). :func:`random_like` builds the same architecture with fresh random weights (the
"does pretraining help at all" baseline).
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from ..errors import FormatError, NeurofmError

__all__ = ["EncoderAdapter", "as_encoder", "load_pretrained", "random_like"]


class EncoderAdapter(nn.Module):
    """Wrap an encoder so that ``forward(x)`` maps (B, C, T) to (B, N, D) or (B, D).

    Parameters
    ----------
    encoder : nn.Module | callable
        The wrapped encoder.
    method : str, optional
        Name of the method to call (``"encode"`` for neurofm models); default ``forward``.
    """

    def __init__(self, encoder, method=None):
        super().__init__()
        if isinstance(encoder, nn.Module):
            self.encoder = encoder
            self._fn = None
        else:
            self.encoder = None
            self._fn = encoder
        self.method = method

    def forward(self, x):
        if self._fn is not None:
            return self._fn(x)
        if self.method:
            return getattr(self.encoder, self.method)(x)
        return self.encoder(x)

    @property
    def config(self):
        return getattr(self.encoder, "config", None)

    @property
    def extra(self):
        return getattr(self.encoder, "extra", {}) or {}


def _unwrap(encoder):
    return encoder.encoder if isinstance(encoder, EncoderAdapter) else encoder


def load_pretrained(path):
    """Load the encoder of a Lightning checkpoint or of an exported encoder file.

    Parameters
    ----------
    path : str | os.PathLike
        ``neurofm fit`` checkpoint (``.ckpt``) of a Brain-JEPA or BrainMAE module, or a file
        written by :func:`neurofm.models.export_encoder`.

    Returns
    -------
    encoder : nn.Module
        In eval mode, with ``config`` and ``extra`` (checkpoint metadata: normalization...).
        Brain-JEPA checkpoints give the EMA target encoder (what the reference evaluates).
    """
    import tempfile

    from ..models.export import ENCODER_FORMAT, export_encoder, load_encoder, read_torch_file

    path = os.fspath(path)
    payload = read_torch_file(path, what="checkpoint or encoder file", weights_only=False)
    if isinstance(payload, dict) and payload.get("format") == ENCODER_FORMAT:
        if (payload.get("config") or {}).get("model") == "BrainMAE":
            from ..models.brainmae import load_brainmae_encoder

            return load_brainmae_encoder(payload, source=path)
        return load_encoder(path)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise FormatError(f"{path}: neither a neurofm encoder file nor a Lightning checkpoint "
                          "(no 'state_dict')")
    meta = payload.get("neurofm") or {}
    if "brainmae" in str(meta.get("model_class", "")).lower():
        from ..models.brainmae import encoder_from_checkpoint

        return encoder_from_checkpoint(payload, source=path)
    with tempfile.TemporaryDirectory() as tmp:
        out = export_encoder(payload, os.path.join(tmp, "encoder.pt"))
        return load_encoder(out)


def as_encoder(encoder):
    """Turn a model, encoder, file path or callable into an :class:`EncoderAdapter`.

    Returns
    -------
    adapter : EncoderAdapter
        ``adapter(x)`` maps (B, C, T) to (B, N, D) or (B, D).
    """
    if isinstance(encoder, EncoderAdapter):
        return encoder
    if isinstance(encoder, (str, os.PathLike)):
        return EncoderAdapter(load_pretrained(encoder))
    if isinstance(encoder, nn.Module):
        name = type(encoder).__name__
        if name in ("BrainJEPA", "BrainMAE") and hasattr(encoder, "encode"):
            return EncoderAdapter(encoder, method="encode")
        return EncoderAdapter(encoder)
    if callable(encoder):
        return EncoderAdapter(encoder)
    raise NeurofmError(f"encoder must be an nn.Module, a callable, or the path of a checkpoint "
                       f"or encoder file; got {type(encoder).__name__}")


def _reset_parameters(module):
    for m in module.modules():
        if hasattr(m, "reset_parameters") and m is not module:
            m.reset_parameters()


def random_like(encoder, *, seed=0):
    """The same architecture with freshly initialized weights.

    neurofm encoders are rebuilt from their ``config`` (their own initialization), keeping
    the non-learned buffers (the brain-gradient matrix); other modules are deep-copied and
    every submodule with ``reset_parameters`` is re-initialized.

    Parameters
    ----------
    encoder : EncoderAdapter | nn.Module
    seed : int
        Seed of the initialization.

    Returns
    -------
    adapter : EncoderAdapter
    """
    adapter = as_encoder(encoder)
    inner = adapter.encoder
    if inner is None:
        raise NeurofmError("random_like needs an nn.Module encoder, not a plain callable")
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        fresh = _rebuild(inner)
        if fresh is None:
            fresh = copy.deepcopy(inner)
            _reset_parameters(fresh)
    finally:
        torch.random.set_rng_state(state)
    # keep buffers (fixed, data-derived: gradients, sin-cos tables), not the learned weights
    buffers = dict(inner.named_buffers())
    with torch.no_grad():
        for name, buf in fresh.named_buffers():
            if name in buffers and buffers[name].shape == buf.shape:
                buf.copy_(buffers[name])
    for attr in ("config", "extra"):
        if hasattr(inner, attr):
            setattr(fresh, attr, copy.deepcopy(getattr(inner, attr)))
    return EncoderAdapter(fresh.train(inner.training), method=adapter.method)


def _rebuild(inner):
    name = type(inner).__name__
    config = getattr(inner, "config", None)
    if not isinstance(config, dict):
        return None
    if name == "BrainJEPAEncoder":
        from ..models.brainjepa import BrainJEPA

        return BrainJEPA(**{**config, "predictor_depth": 0}).encoder
    if name == "BrainJEPA":
        from ..models.brainjepa import BrainJEPA

        return BrainJEPA(**config)
    if name in ("BrainMAE", "BrainMAEEncoder"):
        from ..models.brainmae import BrainMAE

        model = BrainMAE(**{k: v for k, v in config.items() if k != "model"})
        return model if name == "BrainMAE" else model.encoder
    return None


def n_frames_of(encoder):
    """The nominal input length of a neurofm encoder (None when unknown)."""
    config = getattr(_unwrap(as_encoder(encoder)), "config", None) or {}
    return config.get("n_frames")
