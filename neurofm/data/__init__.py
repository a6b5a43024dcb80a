"""Training data from stores: windows as torch Datasets, collation, normalization, splits.

torch only (no Lightning): :class:`neurofm.training.BrainDataModule` wraps these for the
Lightning trainer.
"""

from __future__ import annotations

from .collate import collate
from .normalization import NORMALIZATION_METHODS, NormalizationStats, fit_normalization
from .splits import split_by_subject
from .windows import WindowDataset

__all__ = [
    "NORMALIZATION_METHODS",
    "NormalizationStats",
    "WindowDataset",
    "collate",
    "fit_normalization",
    "split_by_subject",
]
