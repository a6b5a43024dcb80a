"""Helpers shared by the readers: delimited tables, regular time axes, non-finite values."""

from __future__ import annotations

import numpy as np

from .._checks import check_option
from .._logging import warn
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


#: Accepted values of every reader's ``on_nonfinite=``.
NONFINITE_POLICIES = ("raise", "warn")


def check_nonfinite(data, channels, source, on_nonfinite="raise"):
    """Apply the readers' one policy for NaN / Inf samples.

    Parameters
    ----------
    data : numpy.ndarray of shape (n_channels, n_times)
        The signal as read (not modified).
    channels : sequence of str of length n_channels
        Channel names, for the message.
    source : str | os.PathLike
        The file (or series) read, for the message.
    on_nonfinite : "raise" | "warn"
        "raise" (default): :class:`~neurofm.errors.DataError`. "warn": a
        :class:`~neurofm.errors.NeurofmWarning`, and the affected channels are returned so the
        reader marks them bad (their values are kept as read).

    Returns
    -------
    bad : numpy.ndarray of shape (n_channels,), bool
        Channels holding at least one non-finite sample (all False when there are none).

    Raises
    ------
    DataError
        Non-finite samples and ``on_nonfinite="raise"``.
    """
    check_option("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
    finite = np.isfinite(data)
    if finite.all():
        return np.zeros(data.shape[0], dtype=bool)
    n_bad = (~finite).sum(axis=1)
    bad = n_bad > 0
    names = [str(c) for c, b in zip(channels, bad) if b]
    shown = ", ".join(f"{c} ({int(n)})" for c, n in zip(names, n_bad[bad]))
    if len(names) > 10:
        shown = ", ".join(shown.split(", ")[:10]) + f", ... ({len(names)} channels)"
    message = (f"{source}: {int(n_bad.sum())} non-finite (NaN/Inf) sample(s) in "
               f"{len(names)} channel(s): {shown}")
    if on_nonfinite == "raise":
        raise DataError(message + '; pass on_nonfinite="warn" to keep the recording with '
                        "these channels marked bad")
    warn(message + "; these channels are marked bad")
    return bad


def check_not_empty(shape, source, *, layout="(n_channels, n_times)"):
    """Refuse a recording without channels or without samples.

    Parameters
    ----------
    shape : tuple of int
        Shape of the signal as read, in the order ``layout`` names.
    source : str | os.PathLike
        The file (or series) read, for the message.
    layout : str
        What the axes of ``shape`` are, e.g. "(n_rois, n_frames)" or "(n_volumes, n_rois)".

    Raises
    ------
    DataError
        An axis of length 0.
    """
    if len(shape) != 2 or min(shape) == 0:
        raise DataError(f"{source}: empty recording: the signal {layout} has shape "
                        f"{tuple(int(s) for s in shape)}; expected at least one channel and one "
                        "sample")


def positive_number(value, what):
    """``value`` as a finite float > 0, or a :class:`~neurofm.errors.DataError` naming ``what``.

    For numbers read from a file (a frame rate in a header, an options dict), where a bad
    value is a problem of the data rather than of a parameter.

    Parameters
    ----------
    value : object
        The value as stored (a number, a 0-d array, a string, None, ...).
    what : str
        Names the file and the field, e.g. "rec.nwb: Fluorescence/rate (Hz)".

    Returns
    -------
    value : float
    """
    try:
        number = float(np.asarray(value).item()) if not isinstance(value, (str, bytes)) \
            else float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} must be a finite number > 0; found {value!r}") from err
    if not np.isfinite(number) or number <= 0:
        raise DataError(f"{what} must be a finite number > 0; found {value!r}")
    return number


def read_table(path, what, **kwargs):
    """:func:`read_delimited` for a table that must hold data (an empty file is refused).

    Parameters
    ----------
    path : pathlib.Path
        The table.
    what : str
        What the table is, for the messages.
    **kwargs
        Passed to :func:`pandas.read_csv`.

    Raises
    ------
    DataError
        The file is empty (0 bytes or only whitespace).
    FormatError
        pandas cannot parse it, including a delimiter that cannot be sniffed.
    """
    import csv

    with open(path, "rb") as fh:
        if not fh.read(4096).strip():
            raise DataError(f"{path}: empty {what}: the file holds no rows; expected a header "
                            "and/or rows of numbers")
    try:
        return read_delimited(path, what, **kwargs)
    except csv.Error as err:  # the delimiter sniffer of pandas' python engine
        raise FormatError(f"{path}: not a readable {what} ({err})") from err
