"""Training data from stores: windows (signals or tokens) as torch Datasets, collation,
normalization, splits.

torch only (no Lightning): :class:`neurofm.training.BrainDataModule` wraps these for the
Lightning trainer.
"""

from __future__ import annotations

from .collate import collate
from .normalization import NORMALIZATION_METHODS, NormalizationStats, fit_normalization
from .splits import split_by_subject
from .tokens import TokenWindowDataset
from .windows import WindowBatch, WindowDataset

__all__ = [
    "NORMALIZATION_METHODS",
    "NormalizationStats",
    "TokenWindowDataset",
    "WindowBatch",
    "WindowDataset",
    "collate",
    "fit_normalization",
    "split_by_subject",
]
