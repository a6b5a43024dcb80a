"""Errors of the store package (all :class:`~neurofm.errors.NeurofmError` subclasses).

Those that concern a lookup also subclass the matching built-in exception, so code written
against plain Python containers (``except KeyError``) keeps working.
"""

from __future__ import annotations

from ..errors import DataError, FormatError, NeurofmError

__all__ = ["ArgumentTypeError", "ChannelIndexError", "ConcurrentWriteError",
           "CorruptStoreError", "RecordingNotFound", "WindowIndexError"]


class RecordingNotFound(NeurofmError, KeyError):
    """No recording with this id in the store's manifest."""

    __str__ = Exception.__str__  # KeyError would quote the message


class ArgumentTypeError(NeurofmError, TypeError):
    """An argument has the wrong type (e.g. a float where a sample index is expected)."""


class WindowIndexError(DataError, IndexError):
    """``start``/``stop`` outside ``0 <= start < stop <= n_times``."""


class ChannelIndexError(NeurofmError, IndexError):
    """A channel index outside ``[-n_channels, n_channels)``."""

    __str__ = Exception.__str__


class ConcurrentWriteError(NeurofmError):
    """Another writer is updating a remote store (object stores have no locks)."""


class CorruptStoreError(FormatError):
    """A store failed :meth:`~neurofm.store.Store.verify`.

    Parameters
    ----------
    report : VerifyReport
        Lists every problem found.
    """

    def __init__(self, report):
        self.report = report
        self.problems = list(report.problems)
        super().__init__(str(report))
