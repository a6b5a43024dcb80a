"""Representational analyses: RSA and topological RSA (numpy / scipy / xarray / torch).

Modules
-------
rsa
    RDMs, comparisons, noise ceilings, model evaluation, searchlights.
trsa
    Geo-topological and geodesic transforms, RGTM families, region identification.

The public names of both modules are re-exported here (their ``__all__`` is the list).
"""

from __future__ import annotations

from . import rsa, trsa
from .rsa import *  # noqa: F403 - re-export rsa.__all__
from .trsa import *  # noqa: F403 - re-export trsa.__all__

__all__ = ["rsa", "trsa", *rsa.__all__, *trsa.__all__]
