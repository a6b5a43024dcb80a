"""What every neurofm LightningModule shares: checkpoint metadata and strict, loud loading.

Every checkpoint written by a :class:`NeurofmModule` carries a ``"neurofm"`` entry with what
is needed to reuse or audit the run without the original config files: the model config, the
normalization statistics, the data split (recording ids per split), the store's pipeline
config hash, the seed and the package versions (and, for models that have one, the brain
gradient matrix, inside the model's state dict).
"""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl

from ..errors import FormatError

__all__ = ["NeurofmModule", "checkpoint_metadata", "package_versions"]


def package_versions():
    """Versions of the packages that shape a run (JSON-safe dict)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("neurofm", "torch", "lightning", "numpy", "scipy", "xarray", "zarr", "mne"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _store_config_hash(store_path):
    """The pipeline config hash a store was written with ("" when it was not a pipeline)."""
    if not store_path or "://" in str(store_path):
        return ""
    path = os.path.join(os.fspath(store_path), "pipeline.json")
    try:
        with open(path) as fid:
            info = json.load(fid)
    except (OSError, ValueError):
        return ""
    return str(info.get("config_hash", ""))


def checkpoint_metadata(module):
    """The ``"neurofm"`` entry of a checkpoint for ``module`` (a :class:`NeurofmModule`)."""
    trainer = module._trainer if hasattr(module, "_trainer") else None
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    meta = {
        "format": 1,
        "model_class": f"{type(module.model).__module__}.{type(module.model).__qualname__}"
        if hasattr(module, "model") else None,
        "model_config": getattr(getattr(module, "model", None), "config", None),
        "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
        "versions": package_versions(),
        "normalization": None,
        "splits": {},
        "store": None,
        "store_config_hash": "",
    }
    if dm is not None:
        stats = getattr(dm, "normalization_stats", None)
        meta["normalization"] = None if stats is None else stats.to_dict()
        store = getattr(dm, "store", None)
        store_path = getattr(store, "path", store)
        meta["store"] = None if store_path is None else os.fspath(store_path)
        meta["store_config_hash"] = _store_config_hash(store_path)
        for split, dataset in getattr(dm, "datasets", {}).items():
            meta["splits"][split] = dataset.recording_ids
    return meta


class NeurofmModule(pl.LightningModule):
    """Base LightningModule: metadata in every checkpoint, strict loading that lists problems.

    Subclasses hold the architecture as ``self.model`` (an ``nn.Module`` with a JSON-safe
    ``config``) and implement the training logic.
    """

    def on_save_checkpoint(self, checkpoint):
        checkpoint["neurofm"] = checkpoint_metadata(self)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Load weights; with ``strict`` (the default) any mismatch raises, listing every key.

        Raises
        ------
        FormatError
            Missing keys, unexpected keys or shape mismatches (all of them in one message);
            nothing is loaded in that case.
        """
        if strict:
            own = super().state_dict()
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            shapes = sorted(
                f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                for k in set(own) & set(state_dict)
                if hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape)
                != tuple(own[k].shape))
            if missing or unexpected or shapes:
                parts = []
                for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", shapes)):
                    if items:
                        shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)"
                                                         if len(items) > 20 else "")
                        parts.append(f"{title}: {shown}")
                raise FormatError(f"{type(self).__name__}: the checkpoint does not match the "
                                  "model (nothing loaded); " + "; ".join(parts))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
