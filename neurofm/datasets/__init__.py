"""Data that ship with neurofm: the bundled sample dataset and the real files in wheels.

Modules
-------
sample
    :func:`make_sample_data`: the small offline BIDS tree used by the demo, the example
    pipeline configs and the docs (``neurofm sample-data``).
_bundled
    Paths to, and canonical readings of, real recordings shipped inside PyPI wheels
    (spkit's EEG, pyedflib's EDF+/BDF+ test files); nothing is downloaded.
"""

from __future__ import annotations

from ._bundled import package_file, pyedflib_file, spkit_eeg, spkit_eeg_path
from .sample import SAMPLE_RECIPE, make_sample_data

__all__ = [
    "SAMPLE_RECIPE",
    "make_sample_data",
    "package_file",
    "pyedflib_file",
    "spkit_eeg",
    "spkit_eeg_path",
]
