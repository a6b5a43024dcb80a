"""Helpers shared by the readers: delimited tables and regular time axes."""

from __future__ import annotations

import numpy as np

from ..errors import DataError, FormatError

__all__ = []


def read_delimited(path, what, **kwargs):
    """Read a CSV/TSV/TXT table with pandas (tab-separated for ``.tsv``, sniffed otherwise).

    Parameters
    ----------
    path : pathlib.Path
        The table.
    what : str
        What the table is, for the error message ("confounds table", ...).
    **kwargs
        Passed to :func:`pandas.read_csv` (``header``, ``na_values``, ...).

    Raises
    ------
    FormatError
        pandas cannot parse the file (including undecodable bytes).
    """
    import pandas as pd

    sep = "\t" if path.name.lower().endswith(".tsv") else None
    try:
        return pd.read_csv(path, sep=sep, engine="python", **kwargs)
    except ValueError as err:  # ParserError and UnicodeDecodeError are ValueErrors
        raise FormatError(f"{path}: not a readable {what} ({err})") from err


def regular_step(time, what, *, rtol, expected):
    """The median step of a time vector whose steps all lie within ``rtol`` of it.

    Parameters
    ----------
    time : numpy.ndarray of shape (n_times,)
        Time points in seconds (at least 2).
    what : str
        Names the time vector in the message (file, series or column).
    rtol : float
        Largest deviation of a step from the median step, relative to the median.
    expected : str
        What a usable time vector is, ending the message.

    Raises
    ------
    DataError
        A step deviates by more than ``rtol`` or the median step is not positive.
    """
    steps = np.diff(time)
    step = float(np.median(steps))
    if not step > 0 or np.max(np.abs(steps - step)) > rtol * step:
        raise DataError(f"{what} steps range over {steps.min():.6g}..{steps.max():.6g} s around "
                        f"a median of {step:.6g} s; expected {expected}")
    return step
