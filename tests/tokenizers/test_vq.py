"""VQTokenizer and its EMA codebook: update rule, dead-code restart, metrics, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizer_helpers import meg_like

from neurofm.errors import DataError, NeurofmError
from neurofm.tokenizers import VectorQuantizerEMA, VQTokenizer, load
from neurofm.tokenizers.vq import codebook_perplexity, codebook_usage

SMALL = {"n_fft": 64, "hop": 32, "n_freq": 30, "freq_patch": 5, "dim": 16, "depth": 1, "heads": 2,
             "codebook_size": 32}


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(4, 3, decay=0.9, eps=1e-5, dead_threshold=0.0, normalize=False,
                            data_init=False)
    codes0 = vq.codebook.clone()
    z = codes0[[0, 0, 2]] + 0.01 * torch.randn(3, 3)  # two vectors near code 0, one near 2
    q, codes, loss = vq.train()(z)
    np.testing.assert_array_equal(codes.numpy(), [0, 0, 2])
    n = 0.9 * torch.ones(4) + 0.1 * torch.tensor([2.0, 0, 1, 0])
    m = 0.9 * codes0.clone()
    m[0] += 0.1 * (z[0] + z[1])
    m[2] += 0.1 * z[2]
    smoothed = (n + 1e-5) / (n.sum() + 4e-5) * n.sum()
    torch.testing.assert_close(vq.cluster_size, n)
    torch.testing.assert_close(vq.codebook, m / smoothed[:, None])
    # straight-through: the forward value is the (old) code, the gradient is the identity
    torch.testing.assert_close(q, codes0[[0, 0, 2]])
    torch.testing.assert_close(loss, F.mse_loss(z, codes0[[0, 0, 2]]))
    # eval mode leaves the codebook alone
    before = vq.codebook.clone()
    vq.eval()(z)
    torch.testing.assert_close(vq.codebook, before)


def test_dead_codes_restart_from_batch():
    torch.manual_seed(1)
    vq = VectorQuantizerEMA(8, 4, decay=0.5, dead_threshold=0.2, data_init=False).train()
    z = F.normalize(vq.codebook[:1] + 0.01 * torch.randn(16, 4), dim=-1)  # all near code 0
    vq(z)  # unused codes: 0.5 -> not dead yet
    assert vq.n_restarted == 0
    vq(z)  # 0.25
    vq(z)  # 0.125 < 0.2: codes 1..7 restart
    assert vq.n_restarted == 7
    restarted = vq.codebook[1:]
    # every restarted code is one of the batch vectors
    dist = torch.cdist(restarted, z).min(dim=1).values
    assert float(dist.max()) < 1e-6
    assert torch.all(vq.cluster_size[1:] == 1.0)


def test_codes_start_from_the_first_training_batch():
    torch.manual_seed(2)
    vq = VectorQuantizerEMA(6, 4, decay=0.99)
    z = F.normalize(torch.randn(20, 4), dim=-1)
    vq.eval()(z)  # evaluation does not initialize
    assert not bool(vq.initialized)
    vq.train()(z)
    assert bool(vq.initialized)
    # before the EMA step every code was a batch vector; one step moves it by at most 1 - d
    assert float(torch.cdist(vq.codebook, z).min(dim=1).values.max()) < 0.05
    assert codebook_usage(vq.assign(z), 6) > 0.5


def test_usage_and_perplexity():
    assert codebook_usage(np.array([0, 1, 1, 3]), 8) == 3 / 8
    assert codebook_perplexity(np.array([5, 5, 5]), 8) == pytest.approx(1.0)
    assert codebook_perplexity(np.arange(8), 8) == pytest.approx(8.0)
    p = np.array([0.5, 0.25, 0.25])
    assert codebook_perplexity(np.array([0, 0, 1, 2]), 4) == pytest.approx(
        math.exp(-(p * np.log(p)).sum()))


def test_vq_tokenizer_shapes_training_and_save_load(tmp_path):
    rng = np.random.default_rng(0)
    data = meg_like(rng, 4, 800, sfreq=200.0)
    tok = VQTokenizer(**SMALL, decay=0.9)
    tok.fit(data, window_frames=6, max_epochs=6, batch_size=8, lr=3e-3, seed=0)
    losses = [row["train_loss"] for row in tok.history_]
    assert losses[-1] < losses[0], losses
    assert {"train_usage", "train_perplexity"} <= set(tok.history_[-1])
    x = meg_like(rng, 3, 500, sfreq=200.0)
    tokens = tok.encode(x)
    assert tokens.shape == (3, tok.n_frames(500)) == (3, 14) and tokens.dtype == np.int64
    assert tokens.min() >= 0 and tokens.max() < 32
    spec = tok.decode(tokens)
    assert spec.shape == (3, 30, 14) and spec.dtype == np.float32
    assert tok.spectrogram(x).shape == spec.shape
    stats = tok.codebook_stats(x)
    assert 0 < stats["usage"] <= 1 and 1 <= stats["perplexity"] <= 32
    assert np.isfinite(tok.pve(x))
    tok.save(tmp_path)
    back = load(tmp_path)
    np.testing.assert_array_equal(back.encode(x), tokens)
    np.testing.assert_allclose(back.decode(tokens), spec, atol=1e-6)
    torch.testing.assert_close(back.net_.quantizer.cluster_size,
                               tok.net_.quantizer.cluster_size)


def test_vq_tokenizer_spectrogram_is_stft_magnitude():
    tok = VQTokenizer(**SMALL, standardize=False)
    t = np.arange(640) / 200.0
    x = np.sin(2 * np.pi * 25.0 * t)[None].astype(np.float32)  # 25 Hz = bin 8 at n_fft 64
    spec = tok.spectrogram(x)
    assert spec.shape == (1, 30, 19)
    assert np.all(np.argmax(spec[0], axis=0) == 8)
    win = np.hanning(65)[:-1]  # periodic Hann
    ref = np.abs(np.fft.rfft(x[0, :64] * win))[:30] / 8.0  # normalized by sqrt(n_fft)
    np.testing.assert_allclose(spec[0, :, 0], ref, rtol=1e-4, atol=1e-5)


def test_vq_bad_input_and_config():
    tok = VQTokenizer(**SMALL)
    with pytest.raises(NeurofmError, match="not fitted"):
        tok.encode(np.zeros((2, 200)))
    with pytest.raises(DataError, match="at least 64 time samples"):
        tok.spectrogram(np.zeros((2, 50)))
    with pytest.raises(NeurofmError, match="freq_patch must divide n_freq"):
        VQTokenizer(**{**SMALL, "freq_patch": 7}).spectrogram(np.zeros((1, 100)))
    with pytest.raises(DataError, match="need 192"):
        VQTokenizer(**SMALL).fit(np.zeros((1, 100)), window_frames=5)
