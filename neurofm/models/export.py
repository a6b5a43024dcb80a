"""Export a pretrained encoder to a plain torch file, and load it back without Lightning."""

from __future__ import annotations

import os

import torch

from .._version import __version__
from ..errors import FormatError, NeurofmError

__all__ = ["ENCODER_FORMAT", "convert_reference_state_dict", "export_encoder", "load_encoder",
           "load_state_dict_strict"]

ENCODER_FORMAT = "neurofm.encoder"
_VERSION = 1
# where a Lightning checkpoint keeps the modules (LightningModule attribute names)
_MODEL_PREFIX = "model."
_TARGET_PREFIXES = ("objective.target_encoder.", "target_encoder.")


def load_state_dict_strict(module, state_dict, *, source="state dict"):
    """Load ``state_dict`` into ``module``; any missing, unexpected or mis-shaped key raises.

    Raises
    ------
    FormatError
        Listing every missing key, unexpected key and shape mismatch.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: expected {tuple(own[k].shape)}, found {tuple(state_dict[k].shape)}"
                    for k in set(own) & set(state_dict)
                    if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"shape mismatches {shapes}")
        raise FormatError(f"{source} does not match {type(module).__name__}: "
                          + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)
    return module


def _plain(obj):
    """Checkpoint metadata as plain Python (loadable with ``weights_only=True``)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _strip(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _model_config(ckpt, source):
    meta = ckpt.get("neurofm")
    if isinstance(meta, dict) and isinstance(meta.get("model_config"), dict):
        return dict(meta["model_config"])
    hp = ckpt.get("hyper_parameters")
    if isinstance(hp, dict):
        for key in ("model_config", "model"):
            if isinstance(hp.get(key), dict) and "n_rois" in hp[key]:
                cfg = dict(hp[key])
                cfg.pop("class_path", None)
                return dict(cfg.get("init_args", cfg))
    raise FormatError(f"{source}: no model config (expected ckpt['neurofm']['model_config'] "
                      "or ckpt['hyper_parameters']['model_config'])")


def _from_checkpoint(ckpt, source, which):
    from .brainjepa import BrainJEPA

    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise FormatError(f"{source}: not a Lightning checkpoint (no 'state_dict')")
    config = _model_config(ckpt, source)
    sd = ckpt["state_dict"]
    model_sd = _strip(sd, _MODEL_PREFIX)
    if not model_sd:
        raise FormatError(f"{source}: no '{_MODEL_PREFIX}*' keys in the state dict")
    model = BrainJEPA(**config)
    load_state_dict_strict(model, model_sd, source=f"{source} (model)")
    encoder_sd = _strip(model_sd, "encoder.")
    if which == "target":
        for prefix in _TARGET_PREFIXES:
            target = _strip(sd, prefix)
            if target:
                encoder_sd = target
                break
        else:
            raise FormatError(f"{source}: no target-encoder weights (keys starting with "
                              f"{list(_TARGET_PREFIXES)}); use which='context'")
    load_state_dict_strict(model.encoder, encoder_sd, source=f"{source} ({which} encoder)")
    extra = _plain({k: v for k, v in (ckpt.get("neurofm") or {}).items()
                    if k != "model_config"})
    return model, extra


def export_encoder(ckpt_or_model, path, *, which="target"):
    """Write an encoder to a plain torch file that :func:`load_encoder` reads.

    Parameters
    ----------
    ckpt_or_model : BrainJEPA | dict | str | os.PathLike
        A model (its context encoder ``model.encoder`` is exported), or a Lightning
        checkpoint (path or loaded dict) whose ``state_dict`` holds the model under
        ``model.`` and whose ``neurofm["model_config"]`` (or
        ``hyper_parameters["model_config"]``) holds :attr:`BrainJEPA.config`.
    path : str | os.PathLike
        Output file (``.pt``).
    which : {"target", "context"}
        For checkpoints: the EMA target encoder (``objective.target_encoder.*``; what the
        reference uses downstream) or the context encoder.

    Returns
    -------
    path : str

    Notes
    -----
    The file holds ``format``, ``version``, ``neurofm_version``, ``config`` (the model
    config), ``state_dict`` (the encoder's, gradients included), ``which`` and ``extra``
    (the checkpoint's other ``neurofm`` metadata: normalization, split, seed...).
    """
    from .brainjepa import BrainJEPA

    if which not in ("target", "context"):
        raise NeurofmError(f"which must be 'target' or 'context'; got {which!r}")
    if isinstance(ckpt_or_model, BrainJEPA):
        model, extra, which = ckpt_or_model, {}, "context"
    else:
        source = "checkpoint"
        ckpt = ckpt_or_model
        if isinstance(ckpt, (str, os.PathLike)):
            source = os.fspath(ckpt)
            if not os.path.isfile(source):
                raise FormatError(f"{source}: checkpoint not found")
            ckpt = torch.load(source, map_location="cpu", weights_only=False)
        model, extra = _from_checkpoint(ckpt, source, which)
    payload = {
        "format": ENCODER_FORMAT, "version": _VERSION, "neurofm_version": __version__,
        "config": dict(model.config), "which": which,
        "state_dict": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
        "extra": extra,
    }
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(payload, path)
    return path


def read_torch_file(path, *, what, weights_only, map_location="cpu", kind="torch file"):
    """``torch.load`` of a file given by the user, failures as FormatError naming it.

    ``what`` names the expected file in the not-found message ("encoder file", ...), ``kind``
    the expected format in the unreadable message.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # any unpickling failure means a bad file
        raise FormatError(f"{path}: not a readable {kind} ({exc})") from exc


def load_encoder(path, *, map_location="cpu"):
    """Load an encoder written by :func:`export_encoder`.

    Returns
    -------
    encoder : BrainJEPAEncoder | BrainMAEEncoder
        (a BrainMAE file is dispatched to :func:`neurofm.models.brainmae.load_brainmae_encoder`)
        In eval mode, with ``encoder.config`` (the model config) and ``encoder.extra``
        (checkpoint metadata). ``encoder(x)`` maps (B, R, T) to (B, R * (T // p), D).

    Raises
    ------
    FormatError
        Not an encoder file, or keys / shapes that do not match the config (all listed).
    """
    from .brainjepa import BrainJEPA

    path = os.fspath(path)
    payload = read_torch_file(path, what="encoder file", weights_only=True,
                              map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise FormatError(f"{path}: not a neurofm encoder file (format "
                          f"{payload.get('format') if isinstance(payload, dict) else None!r}, "
                          f"expected {ENCODER_FORMAT!r})")
    if payload.get("version", 0) > _VERSION:
        raise FormatError(f"{path}: encoder file version {payload['version']} is newer than "
                          f"this neurofm reads ({_VERSION}); upgrade neurofm")
    config = payload["config"]
    if isinstance(config, dict) and config.get("model") == "BrainMAE":
        from .brainmae import load_brainmae_encoder

        return load_brainmae_encoder(payload, source=path)
    try:
        encoder = BrainJEPA(**{**config, "predictor_depth": 0}).encoder
    except TypeError as exc:
        raise FormatError(f"{path}: bad model config {config!r} ({exc})") from exc
    load_state_dict_strict(encoder, payload["state_dict"], source=path)
    encoder.config = dict(config)
    encoder.extra = payload.get("extra", {})
    return encoder.eval()


_REFERENCE_PREDICTOR = (("predictor_embed.", "embed."), ("predictor_blocks.", "blocks."),
                        ("predictor_norm.", "norm."), ("predictor_proj.", "proj."),
                        ("predictor_2dpe_proj.predictor_pos_embed_proj.", "pos.proj."))
_REFERENCE_ENCODER = (("patch_embed.proj.", "patch_embed."),
                      ("pos_embed_proj.predictor_pos_embed_proj.", "pos.proj."))


def convert_reference_state_dict(state_dict, part="encoder", *, gradients=None):
    """Rename a Brain-JEPA reference state dict to neurofm's module names.

    Parameters
    ----------
    state_dict : dict
        ``encoder`` / ``target_encoder`` (its ``VisionTransformer``) or ``predictor`` (its
        ``VisionTransformerPredictor``) entry of a reference checkpoint; a DDP ``module.``
        prefix is removed.
    part : {"encoder", "predictor"}
        Which module the weights belong to.
    gradients : array-like of shape (n_rois, k), optional
        The gradient matrix (the reference keeps it outside the state dict); when given,
        the ``pos.gradients`` / ``pos.has_gradients`` buffers are added.

    Returns
    -------
    state_dict : dict
        For :class:`BrainJEPAEncoder` / :class:`BrainJEPAPredictor` (the fixed sin-cos
        tables are dropped: neurofm recomputes them; the patch convolution becomes a Linear).
    """
    if part not in ("encoder", "predictor"):
        raise NeurofmError(f"part must be 'encoder' or 'predictor'; got {part!r}")
    renames = _REFERENCE_ENCODER if part == "encoder" else _REFERENCE_PREDICTOR
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if ".emb_h" in key or ".emb_w" in key:
            continue  # frozen sin-cos tables
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key == "patch_embed.weight" and value.ndim == 4:
            value = value.reshape(value.shape[0], -1)  # Conv2d (D, 1, 1, p) -> Linear (D, p)
        out[key] = value
    if gradients is not None:
        g = torch.as_tensor(gradients, dtype=torch.float32)
        out["pos.gradients"] = g.reshape(g.shape[-2], g.shape[-1])
        out["pos.has_gradients"] = torch.tensor(True)
    return out
