"""Representational analyses: RSA and topological RSA (numpy / scipy / xarray / torch).

Modules
-------
connectome
    NTF dynamic connectomes: differential affinities, non-negative CP, weighted SBM / Leiden.
entropy
    Diffusion spectral entropy and mutual information (DSE / DSMI).
rsa
    RDMs, comparisons, noise ceilings, model evaluation, searchlights.
encoding
    Ridge / kernel / banded ridge with efficient CV, FIR delays, noise ceilings, scores.
trsa
    Geo-topological and geodesic transforms, RGTM families, region identification.

The public names of these modules are re-exported here (their ``__all__`` is the list).
"""

from __future__ import annotations

from . import connectome, encoding, entropy, rsa, trsa
from .connectome import *  # noqa: F403 - re-export connectome.__all__
from .encoding import *  # noqa: F403 - re-export encoding.__all__
from .entropy import *  # noqa: F403 - re-export entropy.__all__
from .rsa import *  # noqa: F403 - re-export rsa.__all__
from .trsa import *  # noqa: F403 - re-export trsa.__all__

__all__ = ["connectome", "encoding", "entropy", "rsa", "trsa", *connectome.__all__,
           *encoding.__all__, *entropy.__all__, *rsa.__all__, *trsa.__all__]
