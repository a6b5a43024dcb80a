"""Spectral similarity of generated and real recordings (the MEG-GPT generation check).

Per channel: Welch power spectra compared through the correlation of their logarithms, the
error of the peak frequency and the ratio of the power in the classical bands; plus the
statistics of the amplitude envelope (the magnitude of the analytic signal): ratios of its
mean, standard deviation and coefficient of variation (burstiness). Ratios are
generated / real, so 1 is a match.
"""

from __future__ import annotations

import numpy as np

from .._logging import warn
from ..errors import DataError, NeurofmError

__all__ = ["BANDS", "spectral_similarity", "welch_psd"]

#: Frequency bands (Hz) of the band-power ratios.
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0),
         "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}


def welch_psd(x, sfreq, *, nperseg=None):
    """Welch power spectral density of each channel (Hann windows, 50 % overlap).

    Parameters
    ----------
    x : float array of shape (C, T)
    sfreq : float
    nperseg : int, optional
        Segment length (default ``min(T, 2 * sfreq)``: 0.5 Hz resolution).

    Returns
    -------
    freqs : array of shape (F,)
    psd : array of shape (C, F)
    """
    from scipy.signal import welch

    x = np.asarray(x, dtype=np.float64)
    n = round(2 * sfreq) if nperseg is None else int(nperseg)
    return welch(x, fs=sfreq, nperseg=min(n, x.shape[-1]), axis=-1)


def _signal(ds, name):
    import xarray as xr

    from ..schema import validate

    if not isinstance(ds, xr.Dataset):
        raise NeurofmError(f"{name} must be a canonical recording (xarray.Dataset); got "
                           f"{type(ds).__name__}")
    validate(ds, name=name)
    return (np.asarray(ds["signal"].transpose("channel", "time").values, dtype=np.float64),
            [str(c) for c in ds["channel"].values], float(ds.attrs["sfreq"]))


def _align(real, generated):
    (xr_, names_r, sf_r), (xg, names_g, sf_g) = real, generated
    if not np.isclose(sf_r, sf_g):
        raise DataError(f"real is sampled at {sf_r} Hz and generated at {sf_g} Hz; resample "
                        "one of them first")
    if set(names_r) == set(names_g):
        order = [names_g.index(c) for c in names_r]
        return xr_, xg[order], names_r, sf_r
    if len(names_r) != len(names_g):
        raise DataError(f"real has {len(names_r)} channels and generated {len(names_g)}; "
                        "they must be the same channels")
    warn(f"real and generated have different channel names ({names_r[:3]}... vs "
         f"{names_g[:3]}...): compared in order")
    return xr_, xg, names_r, sf_r


def _band_power(freqs, psd, lo, hi):
    sel = (freqs >= lo) & (freqs < hi)
    if sel.sum() < 1:
        return np.full(psd.shape[0], np.nan)
    df = freqs[1] - freqs[0]
    return psd[:, sel].sum(axis=1) * df


def _envelope(x, sfreq, band):
    from scipy.signal import butter, hilbert, sosfiltfilt

    x = x - x.mean(axis=1, keepdims=True)
    if band is not None:
        sos = butter(4, band, btype="bandpass", fs=sfreq, output="sos")
        x = sosfiltfilt(sos, x, axis=1)
    return np.abs(hilbert(x, axis=1))


def spectral_similarity(real, generated, *, fmin=None, fmax=None, nperseg=None, bands=None,
                        envelope_band=None, plot=False):
    """Compare the spectra and amplitude envelopes of a generated and a real recording.

    Parameters
    ----------
    real, generated : xarray.Dataset
        Canonical recordings at the same sampling rate, with the same channels (matched by
        name; in order when the names differ, with a warning). Lengths may differ.
    fmin, fmax : float, optional
        Frequency range of the log-PSD correlation and of the peak search (default: the
        first non-zero Welch frequency to Nyquist).
    nperseg : int, optional
        Welch segment length (default 2 s, at most the shorter recording).
    bands : dict of str -> (float, float), optional
        Bands of the power ratios (default :data:`BANDS`; bands above ``fmax`` give NaN).
    envelope_band : (float, float), optional
        Band-pass the signals (4th-order Butterworth, zero phase) before taking the
        envelope; default the broadband signal.
    plot : bool
        Also draw the mean log spectra (real vs generated) with the channel range.

    Returns
    -------
    result : dict
        ``"channels"``: pandas DataFrame indexed by channel with ``log_psd_corr``,
        ``peak_freq_real``, ``peak_freq_generated``, ``peak_error_hz``,
        ``<band>_power_ratio`` for each band, ``envelope_mean_ratio``,
        ``envelope_std_ratio``, ``envelope_cv_ratio``; ``"summary"``: dict of the channel
        means of those columns (``peak_error_hz`` also as its median); ``"freqs"`` (F,),
        ``"psd_real"`` and ``"psd_generated"`` (C, F); ``"figure"``: a matplotlib Figure
        when ``plot``, else None.
    """
    import pandas as pd

    x_real, x_gen, names, sfreq = _align(_signal(real, "real"), _signal(generated, "generated"))
    n = min(x_real.shape[1], x_gen.shape[1])
    if nperseg is None:
        nperseg = min(n, round(2 * sfreq))
    elif isinstance(nperseg, bool) or not isinstance(nperseg, (int, np.integer)) \
            or nperseg < 2:
        raise NeurofmError(f"nperseg must be an integer >= 2; got {nperseg!r}")
    nperseg = min(int(nperseg), n)
    freqs, p_real = welch_psd(x_real, sfreq, nperseg=nperseg)
    _, p_gen = welch_psd(x_gen, sfreq, nperseg=nperseg)
    lo = freqs[1] if fmin is None else float(fmin)
    hi = sfreq / 2 if fmax is None else float(fmax)
    if not lo < hi:
        raise NeurofmError(f"need fmin < fmax; got fmin={lo}, fmax={hi}")
    sel = (freqs >= lo) & (freqs <= hi) & (freqs > 0)
    if sel.sum() < 2:
        raise DataError(f"fewer than 2 Welch frequencies in [{lo}, {hi}] Hz (resolution "
                        f"{freqs[1]:.3g} Hz): widen the range or use longer recordings")
    f_sel = freqs[sel]
    lr, lg = np.log10(p_real[:, sel] + 1e-300), np.log10(p_gen[:, sel] + 1e-300)
    lr_c, lg_c = lr - lr.mean(1, keepdims=True), lg - lg.mean(1, keepdims=True)
    denom = np.sqrt((lr_c ** 2).sum(1) * (lg_c ** 2).sum(1))
    corr = np.where(denom > 0, (lr_c * lg_c).sum(1) / np.where(denom > 0, denom, 1), np.nan)
    peak_r = f_sel[np.argmax(p_real[:, sel], axis=1)]
    peak_g = f_sel[np.argmax(p_gen[:, sel], axis=1)]
    table = {"log_psd_corr": corr, "peak_freq_real": peak_r, "peak_freq_generated": peak_g,
             "peak_error_hz": np.abs(peak_g - peak_r)}
    for band, (b_lo, b_hi) in (BANDS if bands is None else bands).items():
        b_hi = min(b_hi, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            table[f"{band}_power_ratio"] = (_band_power(freqs, p_gen, b_lo, b_hi)
                                            / _band_power(freqs, p_real, b_lo, b_hi))
    env_r = _envelope(x_real, sfreq, envelope_band)
    env_g = _envelope(x_gen, sfreq, envelope_band)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["envelope_mean_ratio"] = env_g.mean(1) / env_r.mean(1)
        table["envelope_std_ratio"] = env_g.std(1) / env_r.std(1)
        table["envelope_cv_ratio"] = (env_g.std(1) / env_g.mean(1)) / (env_r.std(1)
                                                                        / env_r.mean(1))
    channels = pd.DataFrame(table, index=pd.Index(names, name="channel"))
    summary = {k: float(np.nanmean(v)) for k, v in channels.items()}
    summary["peak_error_hz_median"] = float(np.nanmedian(channels["peak_error_hz"]))
    figure = _plot(freqs, p_real, p_gen, lo, hi) if plot else None
    return {"channels": channels, "summary": summary, "freqs": freqs, "psd_real": p_real,
            "psd_generated": p_gen, "figure": figure}


def _plot(freqs, p_real, p_gen, lo, hi):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sel = (freqs >= lo) & (freqs <= hi) & (freqs > 0)
    fig, ax = plt.subplots(figsize=(6, 4))
    for psd, label, color in ((p_real, "real", "C0"), (p_gen, "generated", "C1")):
        logp = np.log10(psd[:, sel] + 1e-300)
        ax.plot(freqs[sel], logp.mean(0), color=color, label=label)
        ax.fill_between(freqs[sel], logp.min(0), logp.max(0), color=color, alpha=0.2)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("log10 PSD (mean, channel range)")
    ax.set_title("Welch spectra: real vs generated")
    ax.legend()
    fig.tight_layout()
    return fig
