"""spectral_similarity: values against direct scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import hilbert, welch

from neurofm.errors import DataError
from neurofm.evals import spectral_similarity
from neurofm.schema import make_recording

SFREQ = 200.0


def _rec(x, names=None):
    names = names or [f"C{i}" for i in range(len(x))]
    return make_recording(x.astype(np.float32), channel=names, sfreq=SFREQ, modality="meg",
                          ch_type="misc")


def _oscillation(freqs, n=4000, seed=0, noise=0.2, burst=False):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SFREQ
    env = 1 + 0.8 * np.sin(2 * np.pi * 0.3 * t) if burst else 1.0
    return np.stack([env * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
                     + noise * rng.standard_normal(n) for f in freqs])


def test_identical_signals_match_perfectly():
    x = _rec(_oscillation([10.0, 21.0, 6.0]))
    res = spectral_similarity(x, x)
    ch = res["channels"]
    np.testing.assert_allclose(ch["log_psd_corr"], 1.0, atol=1e-12)
    np.testing.assert_array_equal(ch["peak_error_hz"], 0.0)
    np.testing.assert_allclose(ch["peak_freq_real"], [10.0, 21.0, 6.0])
    ratios = [c for c in ch if c.endswith("_ratio")]
    assert len(ratios) == 8
    np.testing.assert_allclose(ch[ratios].to_numpy(), 1.0, rtol=1e-12)
    assert res["summary"]["log_psd_corr"] == pytest.approx(1.0)
    assert res["figure"] is None


def test_values_equal_direct_scipy_computations():
    real = _oscillation([10.0, 20.0], seed=1)
    gen = _oscillation([11.0, 20.0], seed=2, noise=0.5, burst=True)
    res = spectral_similarity(_rec(real), _rec(gen), fmax=60.0)
    f, pr = welch(real.astype(np.float32).astype(np.float64), fs=SFREQ, nperseg=400)
    _, pg = welch(gen.astype(np.float32).astype(np.float64), fs=SFREQ, nperseg=400)
    np.testing.assert_allclose(res["psd_real"], pr, rtol=1e-10)
    sel = (f > 0) & (f <= 60)
    for c in range(2):
        want = np.corrcoef(np.log10(pr[c, sel]), np.log10(pg[c, sel]))[0, 1]
        assert res["channels"]["log_psd_corr"].iloc[c] == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(res["channels"]["peak_freq_generated"], [11.0, 20.0])
    np.testing.assert_allclose(res["channels"]["peak_error_hz"], [1.0, 0.0])
    a = (f >= 8) & (f < 13)
    want_alpha = pg[:, a].sum(1) / pr[:, a].sum(1)
    np.testing.assert_allclose(res["channels"]["alpha_power_ratio"], want_alpha, rtol=1e-9)
    er = np.abs(hilbert(real.astype(np.float32) - real.astype(np.float32).mean(1,
                                                                              keepdims=True)))
    eg = np.abs(hilbert(gen.astype(np.float32) - gen.astype(np.float32).mean(1, keepdims=True)))
    np.testing.assert_allclose(res["channels"]["envelope_std_ratio"], eg.std(1) / er.std(1),
                               rtol=1e-5)
    cv = (eg.std(1) / eg.mean(1)) / (er.std(1) / er.mean(1))
    np.testing.assert_allclose(res["channels"]["envelope_cv_ratio"], cv, rtol=1e-5)
    assert res["channels"]["envelope_cv_ratio"].min() > 1.5  # the bursts of the generated one
    # gamma (30-45 Hz) holds only noise: more noise, more power
    assert (res["channels"]["gamma_power_ratio"] > 3).all()


def test_channels_matched_by_name_and_plot():
    x = _oscillation([7.0, 15.0])
    res = spectral_similarity(_rec(x, ["A", "B"]), _rec(x[::-1], ["B", "A"]), plot=True)
    np.testing.assert_array_equal(res["channels"]["peak_error_hz"], 0.0)
    fig = res["figure"]
    assert fig is not None and len(fig.axes[0].lines) == 2
    with pytest.raises(DataError, match="sampled at"):
        other = make_recording(x.astype(np.float32), channel=["A", "B"], sfreq=100.0,
                               modality="meg", ch_type="misc")
        spectral_similarity(_rec(x, ["A", "B"]), other)
