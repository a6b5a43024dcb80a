"""Plots and HTML reports (matplotlib is imported inside the functions that draw).

- :mod:`neurofm.viz.rsa`: ``plot_rdm``, ``plot_model_comparison``.
- :mod:`neurofm.viz.qc`: per-recording QC reports and pipeline summary pages.
"""

from __future__ import annotations

from .qc import qc_report, summary_report
from .rsa import plot_model_comparison, plot_rdm

__all__ = ["plot_model_comparison", "plot_rdm", "qc_report", "summary_report"]
