"""Representational analyses: RSA and topological RSA (numpy / scipy / xarray / torch).

Modules
-------
rsa
    RDMs, comparisons, noise ceilings, model evaluation, searchlights.
encoding
    Ridge / kernel / banded ridge with efficient CV, FIR delays, noise ceilings, scores.
trsa
    Geo-topological and geodesic transforms, RGTM families, region identification.

The public names of these modules are re-exported here (their ``__all__`` is the list).
"""

from __future__ import annotations

from . import encoding, rsa, trsa
from .encoding import *  # noqa: F403 - re-export encoding.__all__
from .rsa import *  # noqa: F403 - re-export rsa.__all__
from .trsa import *  # noqa: F403 - re-export trsa.__all__

__all__ = ["encoding", "rsa", "trsa", *encoding.__all__, *rsa.__all__, *trsa.__all__]
