"""The package logger, ``verbose=`` handling, warnings and progress bars.

Like MNE's: the ``neurofm`` logger writes to stderr at WARNING by default (the environment
variable ``NEUROFM_LOGGING_LEVEL`` or :func:`set_log_level` change that), ``verbose=`` on a
public function sets the level for that call, and :func:`warn` emits a
:class:`~neurofm.errors.NeurofmWarning` through :mod:`warnings` (so pytest, filters and
notebooks see it) unless the current level is above WARNING.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager

logger = logging.getLogger("neurofm")
_FORMAT = "%(levelname)s [neurofm] %(message)s"


def _install_handler():
    """One stderr handler on the ``neurofm`` logger (idempotent)."""
    if not any(getattr(h, "_neurofm", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._neurofm = True
        logger.addHandler(handler)

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
    _install_handler()


def warn(message, category=None, *, stacklevel=None):
    """Warn the user about the data or the parameters (a :class:`NeurofmWarning`).

    The warning goes through :mod:`warnings`, attributed to the first frame outside neurofm
    (so it points at the user's call), and is skipped when the ``neurofm`` logger's level is
    above WARNING (``verbose="error"``).

    Parameters
    ----------
    message : str
        What happened, naming the file or parameter.
    category : type of Warning, optional
        Default :class:`~neurofm.errors.NeurofmWarning`.
    stacklevel : int, optional
        Explicit stack level; by default the first caller outside the package.
    """
    if not logger.isEnabledFor(logging.WARNING):
        return
    if category is None:
        from .errors import NeurofmWarning

        category = NeurofmWarning
    if stacklevel is None:
        package = os.path.dirname(os.path.abspath(__file__))
        frame, stacklevel = sys._getframe(1), 2
        while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
                package):
            frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, category, stacklevel=stacklevel)


@contextmanager
def use_log_level(verbose):
    """Temporarily set the logger level inside a function taking ``verbose=``.

    ``verbose=None`` keeps the current level (WARNING unless changed).
    """
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


_install_handler()
_env_level = os.environ.get("NEUROFM_LOGGING_LEVEL")
logger.setLevel(_level(_env_level) if _env_level else logging.WARNING)
