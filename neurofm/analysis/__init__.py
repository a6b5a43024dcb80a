"""Representational analyses: RSA and topological RSA (numpy / scipy / xarray / torch).

Modules
-------
rsa
    RDMs, comparisons, noise ceilings, model evaluation, searchlights.
trsa
    Geo-topological and geodesic transforms, RGTM families, region identification.
"""

from __future__ import annotations

from . import rsa, trsa
from .rsa import (
    EvalResult,
    compare_rdms,
    compute_rdm,
    compute_rdms,
    evaluate,
    noise_ceiling,
    prec_from_residuals,
    searchlight_rdms,
    square,
    upper,
)
from .trsa import (
    bootstrap_identification,
    geodesic_transform,
    gt_transform,
    identification_grid,
    identify,
    rgtm_family,
    sample_rgtm,
)

__all__ = [
    "EvalResult",
    "bootstrap_identification",
    "compare_rdms",
    "compute_rdm",
    "compute_rdms",
    "evaluate",
    "geodesic_transform",
    "gt_transform",
    "identification_grid",
    "identify",
    "noise_ceiling",
    "prec_from_residuals",
    "rgtm_family",
    "rsa",
    "sample_rgtm",
    "searchlight_rdms",
    "square",
    "trsa",
    "upper",
]
