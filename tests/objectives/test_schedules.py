"""Schedules as pure functions of the optimizer step, against closed forms."""

from __future__ import annotations

import math

import pytest

from neurofm.errors import NeurofmError
from neurofm.objectives import cosine, ema_momentum, warmup_cosine


def test_warmup_cosine_closed_form():
    kw = {"total_steps": 300, "warmup_steps": 40, "start": 5e-5, "peak": 1e-3, "final": 1e-6}
    assert warmup_cosine(0, **kw) == pytest.approx(5e-5)
    assert warmup_cosine(20, **kw) == pytest.approx(5e-5 + 0.5 * (1e-3 - 5e-5))
    assert warmup_cosine(40, **kw) == pytest.approx(1e-3)
    assert warmup_cosine(170, **kw) == pytest.approx((1e-3 + 1e-6) / 2)
    s = 100
    expected = 1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (s - 40) / 260))
    assert warmup_cosine(s, **kw) == pytest.approx(expected)
    assert warmup_cosine(300, **kw) == pytest.approx(1e-6)
    assert warmup_cosine(10_000, **kw) == pytest.approx(1e-6)  # holds after the end
    assert warmup_cosine(5, total_steps=10, warmup_steps=0, peak=1.0, final=0.0) == \
        pytest.approx(0.5)


def test_weight_decay_cosine():
    assert cosine(0, total_steps=100) == pytest.approx(0.04)
    assert cosine(50, total_steps=100) == pytest.approx(0.22)
    assert cosine(25, total_steps=100) == pytest.approx(
        0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine(100, total_steps=100) == pytest.approx(0.4)
    assert cosine(500, total_steps=100) == pytest.approx(0.4)


def test_ema_momentum_intended_and_reference():
    assert ema_momentum(0, total_steps=1000) == pytest.approx(0.996)
    assert ema_momentum(500, total_steps=1000) == pytest.approx(0.998)
    assert ema_momentum(1000, total_steps=1000) == pytest.approx(1.0)
    # the reference's generator runs 8x too long: it ends at 0.996 + 0.004 / 8
    assert ema_momentum(1000, total_steps=1000, schedule="reference") == \
        pytest.approx(0.9965)
    assert ema_momentum(500, total_steps=1000, schedule="reference") == \
        pytest.approx(0.996 + 0.004 * 500 / 8000)
    assert ema_momentum(1000, total_steps=1000, schedule="reference",
                        reference_accumulation=1) == pytest.approx(1.0)


def test_schedule_arguments_are_checked():
    with pytest.raises(NeurofmError, match="step"):
        cosine(-1, total_steps=10)
    with pytest.raises(NeurofmError, match="total_steps"):
        cosine(0, total_steps=0)
    with pytest.raises(NeurofmError, match="warmup_steps"):
        warmup_cosine(0, total_steps=10, warmup_steps=11)
    with pytest.raises(NeurofmError, match="schedule"):
        ema_momentum(0, total_steps=10, schedule="other")
