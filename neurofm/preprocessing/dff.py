"""dF/F of calcium traces (public home of :func:`dff`).

The implementation lives in :mod:`neurofm._dff` so that the calcium readers (which apply
suite2p's own baseline when asked) can reach it without importing preprocessing.
"""

from __future__ import annotations

from .._dff import dff

__all__ = ["dff"]
