"""User-facing exceptions.

Every error raised on bad input is a :class:`NeurofmError` subclass whose message names the
file or parameter concerned, what was expected and what was found.
"""

from __future__ import annotations

__all__ = ["DataError", "FormatError", "NeurofmError", "SchemaError"]


class NeurofmError(Exception):
    """Base class of every error neurofm raises on bad input or bad configuration."""


class SchemaError(NeurofmError):
    """A Dataset does not follow the canonical recording layout.

    Parameters
    ----------
    problems : list of str
        Every problem found; the message lists them all.
    name : str, optional
        What was validated (a variable name or a file path), used in the message.
    """

    def __init__(self, problems, name="recording"):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(
            f"{name} does not follow the neurofm canonical layout "
            f"({n} problem{'s' if n != 1 else ''}):\n{lines}"
        )


class FormatError(NeurofmError, ValueError):
    """A file is missing, unreadable, unsupported or corrupt."""


class DataError(NeurofmError, ValueError):
    """Values are unusable: NaN/Inf, inconsistent shapes, wrong sampling rates."""


class NeurofmWarning(UserWarning):
    """Category of every warning neurofm emits about the data or the parameters.

    Filter it like any warning (``warnings.simplefilter("error", NeurofmWarning)``), or pass
    ``verbose="error"`` to a neurofm function to silence its warnings.
    """
