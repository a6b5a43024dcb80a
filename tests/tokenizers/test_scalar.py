"""MuLawTokenizer and QuantileTokenizer: round-trip error bounds, fitting, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tokenizer_helpers import meg_like

from neurofm.errors import DataError, NeurofmError, NeurofmWarning
from neurofm.tokenizers import MuLawTokenizer, QuantileTokenizer, load


def _mu_law(u, mu):
    return np.sign(u) * np.log1p(mu * np.abs(u)) / np.log1p(mu)


@pytest.mark.parametrize("mu", [15, 255])
def test_mu_law_roundtrip_within_bound(mu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5000)) * 40.0
    tok = MuLawTokenizer(mu=mu).fit(x)
    scale = tok.scale_
    assert scale == pytest.approx(np.abs(x).max())
    tokens = tok.encode(x)
    assert tokens.dtype == np.int64 and tokens.min() >= 0 and tokens.max() <= mu
    x_hat = tok.decode(tokens).astype(np.float64)
    # companded domain: half a level (1 / mu)
    y, y_hat = _mu_law(x / scale, mu), _mu_law(x_hat / scale, mu)
    assert np.abs(y - y_hat).max() <= 1.0 / mu + 1e-6
    # signal domain: the inverse transform's slope at the upper end of the level
    slope = scale * math.log1p(mu) / mu * (1 + mu) ** (np.abs(y) + 1.0 / mu)
    assert np.all(np.abs(x - x_hat) <= slope / mu + 1e-4 * scale)
    if mu == 255:  # small amplitudes are resolved finely (the point of companding)
        small = np.abs(x) < 0.01 * scale
        assert np.abs(x - x_hat)[small].max() < 0.05 * 0.01 * scale


def test_mu_law_levels_and_clipping():
    tok = MuLawTokenizer(mu=255, scale=2.0)
    x = np.array([[-5.0, -2.0, 0.0, 2.0, 7.0]])
    np.testing.assert_array_equal(tok.encode(x), [[0, 0, 128, 255, 255]])
    np.testing.assert_allclose(tok.decode(np.array([[0, 255]])), [[-2.0, 2.0]], rtol=1e-6)
    assert tok.vocab_size == 256


def test_mu_law_standardized_and_save_load(tmp_path):
    x = meg_like(np.random.default_rng(1), 4, 800)
    tok = MuLawTokenizer(standardize=True).fit(x)
    assert tok.pve(x) > 99.0
    tok.save(tmp_path)
    back = load(tmp_path)
    assert isinstance(back, MuLawTokenizer) and back.scale_ == tok.scale_
    np.testing.assert_array_equal(back.encode(x), tok.encode(x))


def test_mu_law_needs_scale():
    with pytest.raises(NeurofmError, match="call fit"):
        MuLawTokenizer().encode(np.ones((2, 10)))
    with pytest.raises(NeurofmError, match="mu must be a positive integer"):
        MuLawTokenizer(mu=0).fit(np.ones((2, 10)))
    with pytest.raises(DataError, match="all zeros"):
        MuLawTokenizer().fit(np.zeros((2, 10)))


@pytest.mark.parametrize("n_bins", [8, 64, 256])
def test_quantile_roundtrip_within_half_bin(n_bins):
    rng = np.random.default_rng(2)
    train = rng.standard_t(4, size=(5, 4000))
    tok = QuantileTokenizer(n_bins=n_bins, standardize=False).fit(train)
    edges = tok.edges_
    assert edges.shape == (n_bins + 1,) and np.all(np.diff(edges) >= 0)
    x = rng.standard_t(4, size=(3, 2000))
    inside = (x >= edges[0]) & (x <= edges[-1])
    tokens = tok.encode(x)
    x_hat = tok.decode(tokens)
    half = 0.5 * (edges[tokens + 1] - edges[tokens])
    assert np.all(np.abs(x - x_hat)[inside] <= half[inside] + 1e-6)
    # each value lies in its bin
    assert np.all((x[inside] >= edges[tokens][inside] - 1e-12)
                  & (x[inside] <= edges[tokens + 1][inside] + 1e-12))
    # outside the training range: the first / last token
    assert np.all(tokens[x < edges[0]] == 0) and np.all(tokens[x > edges[-1]] == n_bins - 1)
    # equal-count bins on the training data
    counts = np.bincount(tok.encode(train).ravel(), minlength=n_bins)
    assert counts.max() - counts.min() <= 0.02 * train.size / n_bins + 2


def test_quantile_standardized_pve_and_save_load(tmp_path):
    rng = np.random.default_rng(3)
    tok = QuantileTokenizer(n_bins=256).fit([meg_like(rng, 3, 1000), meg_like(rng, 5, 700)])
    x = meg_like(rng, 2, 600)
    assert tok.pve(x) > 99.0
    # per-recording standardization: gains and offsets do not change the tokens
    np.testing.assert_array_equal(tok.encode(10 * x + 4), tok.encode(x))
    tok.save(tmp_path / "q")
    back = load(tmp_path / "q")
    np.testing.assert_array_equal(back.edges_, tok.edges_)
    np.testing.assert_array_equal(back.decode(back.encode(x)), tok.decode(tok.encode(x)))


def test_quantile_warns_on_repeated_values_and_needs_fit():
    with pytest.warns(NeurofmWarning, match="bin edge"):
        QuantileTokenizer(n_bins=16, standardize=False).fit(np.zeros((1, 100)) + [[0, 1] * 50])
    with pytest.raises(NeurofmError, match="not fitted"):
        QuantileTokenizer().encode(np.ones((2, 10)))
    with pytest.raises(DataError, match=r"must lie in \[0, 15\]"):
        QuantileTokenizer(n_bins=16).fit(np.random.default_rng(0).normal(size=(1, 99))) \
            .decode(np.array([[16]]))
