"""Objectives: losses, EMA target encoders and schedules (pure functions of the step)."""

from __future__ import annotations

from .jepa import JEPAObjective
from .schedules import EMA_SCHEDULES, cosine, ema_momentum, warmup_cosine

__all__ = ["EMA_SCHEDULES", "JEPAObjective", "cosine", "ema_momentum", "warmup_cosine"]
