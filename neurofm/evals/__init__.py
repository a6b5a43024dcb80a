"""Frozen-encoder evaluation: embeddings as xarray, probes, fine-tuning, baselines, reports.

Any torch encoder mapping (B, C, T) to (B, N, D) or (B, D) is evaluated by the same code,
next to classical baselines on the same subject-disjoint splits (:func:`probe`).
Submodules are imported on first use.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "as_encoder": "encoders",
    "load_pretrained": "encoders",
    "random_like": "encoders",
    "embed": "embedding",
    "embed_array": "embedding",
    "load_windows": "embedding",
    "subject_splits": "splits",
    "assert_subject_disjoint": "splits",
    "score": "metrics",
    "linear_probe": "probing",
    "fine_tune": "probing",
    "layer_decay_param_groups": "probing",
    "set_drop_path": "probing",
    "probe": "evaluate",
    "fit_baseline": "baselines",
    "make_baseline": "baselines",
    "to_markdown": "report",
    "to_html": "report",
    "plot_scores": "report",
    "save_report": "report",
    "verdicts": "report",
    "spectral_similarity": "spectral",
    "decode": "decoding",
    "load_meggpt": "decoding",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
