"""The package logger, ``verbose=`` handling and progress bars."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

logger = logging.getLogger("neurofm")
logger.addHandler(logging.NullHandler())

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _level(verbose):
    if verbose is None:
        return None
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, int):
        return verbose
    key = str(verbose).lower()
    if key not in _LEVELS:
        from .errors import NeurofmError

        raise NeurofmError(
            f"verbose must be a bool, an int or one of {sorted(_LEVELS)}; got {verbose!r}"
        )
    return _LEVELS[key]


def set_log_level(verbose=True):
    """Set the level of the ``neurofm`` logger.

    Parameters
    ----------
    verbose : bool | int | str
        True -> INFO, False -> WARNING, or a logging level / level name.
    """
    level = _level(verbose)
    logger.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.NullHandler)
               for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s [neurofm] %(message)s"))
        logger.addHandler(handler)


@contextmanager
def use_log_level(verbose):
    """Temporarily set the logger level inside a function taking ``verbose=``."""
    level = _level(verbose)
    if level is None:
        yield
        return
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def progress(iterable=None, *, verbose=None, total=None, desc=None, unit="it"):
    """A tqdm progress bar, shown only on a TTY and when ``verbose`` is not False.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over.
    verbose : bool | None
        False hides the bar; None shows it when stderr is a terminal; True always shows it.
    """
    from tqdm.auto import tqdm

    if verbose is None:
        disable = not sys.stderr.isatty()
    else:
        disable = verbose is False or (isinstance(verbose, str) and verbose.lower() in
                                       ("warning", "error", "critical"))
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False)
