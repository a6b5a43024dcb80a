"""Small validation helpers that word every error the same way."""

from __future__ import annotations

import math
import numbers

from .errors import NeurofmError


def check_option(name, value, allowed):
    """Raise if ``value`` is not one of ``allowed``; return it otherwise."""
    if value not in allowed:
        raise NeurofmError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        )
    return value


def validate_type(name, value, types, type_name=None):
    """Raise if ``value`` is not an instance of ``types``; return it otherwise."""
    if not isinstance(value, types):
        raise NeurofmError(
            f"{name} must be {type_name or _type_names(types)}; got {type(value).__name__} "
            f"({value!r})"
        )
    return value


def check_positive(name, value, *, allow_none=False):
    """Raise unless ``value`` is a finite number > 0; return it as float."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or not value > 0:
        raise NeurofmError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_positive_int(name, value):
    """Raise unless ``value`` is an integer >= 1 (not a bool); return it as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise NeurofmError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_unit_interval(name, value, what="a number"):
    """Raise unless ``value`` is a real number in [0, 1] (not a bool); return it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise NeurofmError(f"{name} must be {what} in [0, 1]; got {value!r}")
    return value


def _type_names(types):
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return types.__name__
