"""Architectures (no losses, no optimizers): Brain-JEPA, gradients, encoder export.

Submodules are imported on first use, so ``import neurofm.models`` stays light (no torch
model code, no Lightning).
"""

from __future__ import annotations

import importlib

__all__ = ["MEGGPT", "BrainJEPA", "BrainMAE", "InContextEncoder", "RoutingEncoder",
           "compute_gradients", "convert_reference_state_dict", "export_encoder", "generate",
           "generate_tokens", "group_fc", "load_encoder", "sample_logits"]

_WHERE = {
    "BrainJEPA": "brainjepa",
    "BrainMAE": "brainmae",
    "compute_gradients": "gradients",
    "group_fc": "gradients",
    "export_encoder": "export",
    "load_encoder": "export",
    "convert_reference_state_dict": "export",
    "RoutingEncoder": "encoders",
    "InContextEncoder": "encoders",
    "MEGGPT": "meggpt",
    "generate": "generation",
    "generate_tokens": "generation",
    "sample_logits": "generation",
}


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
