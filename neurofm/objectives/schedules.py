"""Training schedules as pure functions of the optimizer step (resume never replays steps).

``step`` counts optimizer steps from 0 (the value applies to the update made at that step);
``total_steps`` is the number of optimizer steps of the whole run. Steps past the end hold
the final value.
"""

from __future__ import annotations

import math
import numbers

from ..errors import NeurofmError

__all__ = ["EMA_SCHEDULES", "cosine", "ema_momentum", "warmup_cosine"]

EMA_SCHEDULES = ("intended", "reference")


def _check(step, total_steps, warmup_steps=0):
    for name, v in (("step", step), ("total_steps", total_steps),
                    ("warmup_steps", warmup_steps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 0:
            raise NeurofmError(f"{name} must be an integer >= 0; got {v!r}")
    if int(total_steps) < 1:
        raise NeurofmError(f"total_steps must be >= 1; got {total_steps!r}")
    if int(warmup_steps) > int(total_steps):
        raise NeurofmError(f"warmup_steps ({warmup_steps}) exceeds total_steps ({total_steps})")
    return int(step), int(total_steps), int(warmup_steps)


def warmup_cosine(step, *, total_steps, warmup_steps, start=5e-5, peak=1e-3, final=1e-6):
    """Linear warmup from ``start`` to ``peak``, then half-cosine down to ``final``.

    ``lr(s) = start + s / warmup * (peak - start)`` for ``s < warmup``, else
    ``final + (peak - final) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2``. The
    Brain-JEPA reference (5e-5 -> 1e-3 over 40 epochs, cosine to 1e-6 at 300 epochs) gives
    the same value at every step except its very first update, which runs at AdamW's
    default lr because its scheduler is stepped after the optimizer.
    """
    s, total, warm = _check(step, total_steps, warmup_steps)
    if s < warm:
        return start + s / warm * (peak - start)
    progress = min(1.0, (s - warm) / max(1, total - warm))
    return max(final, final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine(step, *, total_steps, start=0.04, end=0.4):
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total_steps``).

    Brain-JEPA's weight decay: 0.04 -> 0.4.
    """
    s, total, _ = _check(step, total_steps)
    progress = min(1.0, s / total)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step, *, total_steps, start=0.996, end=1.0, schedule="intended",
                 reference_accumulation=8):
    """EMA momentum of the target encoder at optimizer step ``step``.

    Parameters
    ----------
    step, total_steps : int
        Optimizer steps so far, and in the run.
    start, end : float
        0.996 -> 1.0 in Brain-JEPA.
    schedule : {"intended", "reference"}
        ``"intended"``: linear from ``start`` to ``end`` over the run. ``"reference"``: the
        released code's curve: its momentum generator has one value per *iteration* but
        advances once per optimizer step, with 8 iterations per step (gradient
        accumulation), so it ends at ``start + (end - start) / 8`` (0.9965).
    reference_accumulation : int
        Iterations per optimizer step of the reference run (8).

    Returns
    -------
    m : float
        ``m = start + (end - start) * step / (total_steps * a)`` with a = 1 (intended) or
        ``reference_accumulation``.
    """
    s, total, _ = _check(step, total_steps)
    if schedule not in EMA_SCHEDULES:
        raise NeurofmError(f"ema schedule must be one of {EMA_SCHEDULES}; got {schedule!r}")
    denom = total * (int(reference_accumulation) if schedule == "reference" else 1)
    return start + (end - start) * min(1.0, s / denom)
