"""The demo's encoding scores: the repeat-based noise ceiling and the held-out-channel model.

Generated trials with a planted signal-to-noise ratio: the ceiling estimate must match the
planted value, a model with perfect features must score ~1 after normalization, a model
with noise features ~0, and noise shared across channels (which a model fed the target
trials' own other channels could exploit) must not push the normalized score above 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurofm.analysis import condition_averages, explainable_variance, r2_ceiling, r2_score
from neurofm.demo.steps import encoding_scores
from neurofm.errors import DataError, NeurofmError


def _planted(n_per_cond, n_times=40, n_ch=6, noise_sd=1.0, shared=0.0, seed=0):
    """Trials (n, T, C) = a condition's response (its own random topography x waveform)
    plus noise (a ``shared`` fraction of its variance common to all channels)."""
    rng = np.random.default_rng(seed)
    k = len(n_per_cond)
    t = np.linspace(0, 1, n_times)
    waves = np.stack([np.sin(2 * np.pi * (2 + j) * t) * np.exp(-((t - 0.3 - 0.1 * j) / 0.15) ** 2)
                      for j in range(k)])
    topo = rng.standard_normal((k, n_ch)) * np.linspace(0.5, 4.0, n_ch)
    signal = waves[:, :, None] * topo[:, None, :]                       # (K, T, C)
    cond = np.repeat(np.arange(k), n_per_cond)
    n = len(cond)
    common = rng.standard_normal((n, n_times, 1))
    private = rng.standard_normal((n, n_times, n_ch))
    noise = noise_sd * (np.sqrt(shared) * common + np.sqrt(1 - shared) * private)
    clean = signal[cond]
    return clean + noise, clean, cond, signal


def test_ceiling_matches_the_planted_explainable_variance():
    n_per_cond = [9, 12, 15, 10]          # unbalanced repeats
    y, _, cond, signal = _planted(n_per_cond, n_times=400, noise_sd=1.0, seed=1)
    avg, noise, labels, counts = condition_averages(y, cond)
    assert labels.tolist() == [0, 1, 2, 3] and counts.tolist() == n_per_cond
    # the noise variance of each average: sd^2 / n_k, estimated from the repeats
    expected_noise = 1.0 / np.array(n_per_cond, dtype=float)
    np.testing.assert_allclose(noise.mean(axis=(1, 2)), expected_noise, rtol=0.05)
    est = r2_ceiling(avg, noise)
    # planted: the expected R^2 of the noise-free signal against the noisy averages
    s = signal.reshape(-1, signal.shape[-1])
    ss_signal = ((s - s.mean(0)) ** 2).sum(0)
    v = np.repeat(expected_noise, signal.shape[1])[:, None]              # (K*T, 1)
    m = s.shape[0]
    planted = 1 - v.sum() / (ss_signal + (1 - 1 / m) * v.sum())
    assert planted.min() < 0.6 < planted.max()                          # a range of SNRs
    np.testing.assert_allclose(est, planted, atol=0.04)
    # and the oracle (p = signal) reaches it
    oracle = r2_score(avg.reshape(m, -1), s)
    np.testing.assert_allclose(oracle, est, atol=0.04)


def test_ceiling_is_the_spearman_brown_step_up_of_explainable_variance():
    n = 10
    y, _, cond, _ = _planted([n] * 4, n_times=300, noise_sd=1.5, seed=2)
    avg, noise, _, _ = condition_averages(y, cond)
    # explainable_variance wants (repeats, times, targets): the conditions in a row in time
    reps = np.stack([np.concatenate([y[cond == k][r] for k in range(4)]) for r in range(n)])
    ev = explainable_variance(reps, bias_correction=True, do_zscore=False)
    step_up = n * ev / (1 + (n - 1) * ev)
    np.testing.assert_allclose(r2_ceiling(avg, noise), step_up, atol=0.03)


def test_condition_averages_and_ceiling_reject_bad_input():
    y = np.zeros((5, 4, 2))
    with pytest.raises(DataError, match="needs >= 2 trials"):
        condition_averages(y, np.array([0, 0, 1, 1, 2]))
    with pytest.raises(DataError, match="n_trials, n_times, n_targets"):
        condition_averages(y[..., 0], np.zeros(5))
    with pytest.raises(DataError, match="r2_ceiling"):
        r2_ceiling(np.zeros((4, 2)), np.zeros((4, 3)))


def test_perfect_features_score_one_and_noise_features_zero_after_normalization():
    perfect, noise, ceilings, raw_perfect = [], [], [], []
    for seed in (3, 7):
        y, clean, cond, _ = _planted([18] * 4, n_times=30, n_ch=8, noise_sd=0.6, seed=seed)
        rng = np.random.default_rng(seed + 1)
        feats = {"perfect": clean[..., None],                     # the noise-free responses
                 "noise": rng.standard_normal(y.shape + (4,))}    # unrelated to them
        res = encoding_scores(feats, y, cond)
        assert res["trials_per_average"] == 6.0 and res["n_folds"] == 3
        perfect.append(res["normalized"]["perfect"])
        noise.append(res["normalized"]["noise"])
        ceilings.append(res["ceiling"])
        raw_perfect.append(res["r2"]["perfect"])
    perfect, noise, ceilings = np.concatenate(perfect), np.concatenate(noise), \
        np.concatenate(ceilings)
    reliable = ceilings > 0.4
    assert reliable.sum() >= 10 and np.all(ceilings < 0.99)
    assert abs(perfect[reliable].mean() - 1.0) < 0.05, perfect
    assert np.all(perfect[reliable] > 0.85) and np.all(perfect[reliable] < 1.1), perfect
    assert abs(noise.mean()) < 0.05 and np.all(noise < 0.05), noise
    # the raw scores: the perfect model reaches the ceiling, not 1
    np.testing.assert_allclose(np.concatenate(raw_perfect)[reliable], ceilings[reliable],
                               atol=0.06)


def test_shared_noise_does_not_lift_the_normalized_score_above_one():
    # 80 % of the noise is common to all channels: the other channels of the SAME trials
    # would predict it; the fold-disjoint design never scores on the trials it reads
    y, _, cond, _ = _planted([18] * 4, n_times=30, n_ch=8, noise_sd=0.6, shared=0.8, seed=5)
    scores = []
    for seed in range(3):
        yy, _, _, _ = _planted([18] * 4, n_times=30, n_ch=8, noise_sd=0.6, shared=0.8,
                               seed=10 + seed)
        res = encoding_scores({"raw": yy[..., None]}, yy, cond)
        ok = res["ceiling"] > 0.4
        scores.append(res["normalized"]["raw"][ok])
    scores = np.concatenate(scores)
    assert len(scores) >= 15 and np.all(scores < 1.05) and np.median(scores) > 0.7, scores
    # whereas predicting the target trials from their own other channels exceeds the
    # ceiling: the bound is the design's, not luck
    avg, noise, _, _ = condition_averages(y, cond)
    leak = []
    for ch in range(y.shape[2]):
        others = np.delete(avg, ch, axis=2).reshape(-1, y.shape[2] - 1)
        x = np.column_stack([others, np.ones(len(others))])
        beta = np.linalg.lstsq(x, avg[..., ch].reshape(-1), rcond=None)[0]
        leak.append(r2_score(avg[..., ch].reshape(-1), x @ beta))
    ceiling = r2_ceiling(avg, noise)
    assert np.mean(np.array(leak) / ceiling) > 1.1


def test_encoding_scores_reject_bad_input():
    y, clean, cond, _ = _planted([4] * 4, n_times=10, n_ch=3, seed=6)
    with pytest.raises(DataError, match="needs >= 6 trials"):
        encoding_scores({"f": clean[..., None]}, y, cond)
    y, clean, cond, _ = _planted([6] * 4, n_times=10, n_ch=3, seed=6)
    with pytest.raises(DataError, match="features 'f'"):
        encoding_scores({"f": clean}, y, cond)
    with pytest.raises(NeurofmError, match="n_folds must be >= 3"):
        encoding_scores({"f": clean[..., None]}, y, cond, n_folds=2)


def test_report_section_shows_raw_and_normalized_scores_ceiling_and_baseline(tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    from neurofm.demo.report import _encoding
    from neurofm.demo.steps import _encoding_figure

    rows = []
    for k, ch in enumerate(["MEG0111", "MEG0112", "MEG0113", "MEG0121", "MEG0122", "MEG0123"]):
        ceiling = 0.02 + 0.1 * k
        row = {"channel": ch, "ceiling": ceiling}
        for name, r2 in (("meggpt", 0.5 * ceiling), ("meggpt_init", 0.0),
                         ("raw", 0.25 * ceiling)):
            row[f"r2_{name}"] = r2
            row[f"norm_{name}"] = r2 / ceiling if ceiling >= 0.05 else float("nan")
        rows.append(row)
    summary = {n: {"median_r2": float(np.median([r[f"r2_{n}"] for r in rows])),
                   "median_normalized": float(np.nanmedian([r[f"norm_{n}"] for r in rows]))}
               for n in ("meggpt", "meggpt_init", "raw")}
    enc = {"rows": rows, "summary": summary, "figure": _encoding_figure(tmp_path, rows),
           "source": "generated trials", "n_channels": 6, "n_scored": 5, "n_trials": 300,
           "n_subjects": 4, "n_folds": 3, "trials_per_average": 25.0, "n_samples": 50,
           "sfreq": 150.0, "min_ceiling": 0.05, "conditions": ["a", "b", "c", "d"],
           "command": "python -c 'x'"}
    html = _encoding(enc)
    reading = re.search(r"<b>Reading:</b>(.*?)</p>", html, flags=re.S).group(1)
    assert "median noise ceiling 0.27" in reading
    assert "MEG-GPT 0.50" in reading and "raw-signal baseline 0.25" in reading
    assert "MEG-GPT beats the baseline on 5 of 5 scored channels" in reading
    for col in ("noise ceiling", "R² MEG-GPT", "R² / ceiling MEG-GPT", "R² raw baseline",
                "R² / ceiling raw baseline"):
        assert f"<th>{col}</th>" in html
    assert "<td>MEG0123</td><td>0.52</td><td>0.260</td><td>0.50</td>" in html
    assert "<td>MEG0111</td><td>0.02</td><td>0.010</td><td>n/a</td>" in html
    b64 = re.search(r"base64,([A-Za-z0-9+/=]+)'", html).group(1)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), float)
    assert img.shape[0] > 300 and img.std() > 5.0
    assert "Reproduce:" in html and "python -c" in html
    # without the random-init control (--quick): its columns and bars are left out
    enc["features"] = ["meggpt", "raw"]
    enc["figure"] = _encoding_figure(tmp_path, rows, ["meggpt", "raw"])
    html = _encoding(enc)
    assert "random init" not in html and "<th>R² / ceiling raw baseline</th>" in html
    assert "<td>MEG0123</td><td>0.52</td><td>0.260</td><td>0.50</td><td>0.130</td>" in html
