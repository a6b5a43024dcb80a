"""Quality-control HTML reports of the preprocessing pipelines.

One self-contained page per recording (figures embedded as PNG) comparing the input and the
preprocessed recording:

- EEG / MEG / iEEG: power spectral density before and after (Welch), a few traces;
- fMRI: carpet plots (ROI x time) before and after and the ROI correlation matrix;
- calcium: traces of the first cells before and after.

:func:`summary_report` writes the page of a whole run, one row per recording with a link to
its report. Matplotlib is used through :class:`matplotlib.figure.Figure` (no pyplot, no
global backend change).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import NeurofmError, SchemaError
from ..schema import history

__all__ = [
    "carpet_figure",
    "correlation_figure",
    "psd_figure",
    "qc_report",
    "summary_report",
    "traces_figure",
]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 8px;
font-size:.9em;text-align:left} th{background:#f3f3f3} img{max-width:100%}
.small{color:#666;font-size:.85em} code{font-size:.85em}
"""


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _figure(width=9.0, height=3.5, ncols=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols) if ncols > 1 else fig.subplots()
    return fig, axes


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _segment(ds, max_seconds):
    """The first ``max_seconds`` of the signal as a float64 (channel, time) array."""
    n = min(ds.sizes["time"], max(2, round(max_seconds * float(ds.attrs["sfreq"]))))
    x = ds["signal"].transpose("channel", "time").isel(time=slice(0, n)).values
    return np.asarray(x, dtype=np.float64)


def psd_figure(before, after, *, max_seconds=300.0):
    """Welch PSD (mean over channels, with each channel faint) before and after.

    Parameters
    ----------
    before, after : xarray.Dataset
        Canonical recordings (any sampling rates).
    max_seconds : float
        Seconds of signal used.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from scipy.signal import welch

    fig, axes = _figure(ncols=2)
    for ax, ds, label in ((axes[0], before, "input"), (axes[1], after, "preprocessed")):
        x = _segment(ds, max_seconds)
        sfreq = float(ds.attrs["sfreq"])
        nper = int(min(x.shape[1], max(8, round(4 * sfreq))))
        f, p = welch(x, fs=sfreq, nperseg=nper)
        p = np.maximum(p, np.finfo(float).tiny)
        for row in p[: min(len(p), 64)]:
            ax.semilogy(f, row, color="0.7", lw=0.5)
        ax.semilogy(f, p.mean(axis=0), color="C0" if label == "input" else "C1", lw=1.5)
        units = ds["signal"].attrs.get("units", "a.u.")
        ax.set(xlabel="frequency (Hz)", ylabel=f"PSD ({units}\u00b2/Hz)",
               title=f"{label}: {ds.sizes['channel']} ch, {sfreq:g} Hz")
    return fig


def carpet_figure(before, after, *, max_seconds=3600.0):
    """Carpet plots (z-scored ROI x time images) before and after."""
    fig, axes = _figure(height=4.0, ncols=2)
    for ax, ds, label in ((axes[0], before, "input"), (axes[1], after, "preprocessed")):
        x = _segment(ds, max_seconds)
        sd = x.std(axis=1, keepdims=True)
        z = (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        t = np.asarray(ds["time"].values[: x.shape[1]])
        ax.imshow(z, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest",
                  extent=(t[0], t[-1] if len(t) > 1 else t[0] + 1, x.shape[0], 0))
        ax.set(xlabel="time (s)", ylabel="ROI", title=f"{label} (z-scored per ROI)")
    return fig


def correlation_figure(ds, *, max_seconds=3600.0):
    """ROI x ROI Pearson correlation matrix."""
    x = _segment(ds, max_seconds)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(x) if x.shape[0] > 1 else np.ones((1, 1))
    fig, ax = _figure(width=5.0, height=4.2)
    im = ax.imshow(np.nan_to_num(corr), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    ax.set(xlabel="ROI", ylabel="ROI", title="ROI correlation (preprocessed)")
    return fig


def traces_figure(before, after, *, n_traces=10, max_seconds=300.0):
    """Traces of the first ``n_traces`` channels before and after (offset, normalised)."""
    fig, axes = _figure(height=4.5, ncols=2)
    for ax, ds, label in ((axes[0], before, "input"), (axes[1], after, "preprocessed")):
        x = _segment(ds, max_seconds)[:n_traces]
        t = np.asarray(ds["time"].values[: x.shape[1]])
        span = np.ptp(x, axis=1)
        span = np.where(span > 0, span, 1.0)
        names = [str(c) for c in ds["channel"].values[: x.shape[0]]]
        for i, row in enumerate(x):
            ax.plot(t, (row - row.min()) / span[i] + i, lw=0.6)
        ax.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=7)
        units = ds["signal"].attrs.get("units", "a.u.")
        ax.set(xlabel="time (s)", title=f"{label} ({units}, min-max per trace)")
    return fig


# --------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------
def _describe(ds):
    sfreq = float(ds.attrs["sfreq"])
    bad = [str(c) for c, b in zip(ds["channel"].values, ds["bad"].values) if b] \
        if "bad" in ds.coords else []
    return {"channels": int(ds.sizes["channel"]), "samples": int(ds.sizes["time"]),
            "sfreq (Hz)": f"{sfreq:g}", "duration (s)": f"{ds.sizes['time'] / sfreq:.1f}",
            "units": ds["signal"].attrs.get("units", ""),
            "bad channels": ", ".join(bad) or "none"}


def _table(rows, header):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _history_table(ds):
    try:
        steps = history(ds)
    except SchemaError:
        steps = []
    rows = [(html.escape(s.get("step", "")),
             f"<code>{html.escape(json.dumps(s.get('params', {}), default=str)[:400])}</code>")
            for s in steps]
    return _table(rows, ("step", "parameters"))


def _page(title, body):
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='small'>neurofm {__version__}, {stamp}</p>{body}</body></html>")


def _img(fig, alt):
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{_png(fig)}'/>"


def qc_report(before, after, path, *, title=None, max_seconds=300.0, n_traces=10):
    """Write the QC page of one recording.

    Parameters
    ----------
    before : xarray.Dataset
        The recording as read (canonical layout).
    after : xarray.Dataset
        The preprocessed recording.
    path : str | os.PathLike
        Output ``.html`` file (parent folders are created).
    title : str, optional
        Page title (default: the recording's subject/task).
    max_seconds : float
        Seconds of signal used for spectra and traces.
    n_traces : int
        Number of traces shown for calcium recordings.

    Returns
    -------
    path : pathlib.Path
    """
    modality = str(after.attrs.get("modality", ""))
    if modality not in ("eeg", "meg", "ieeg", "fmri", "calcium"):
        raise NeurofmError(f"qc_report: unknown modality {modality!r} in the recording attrs")
    title = title or f"QC sub-{after.attrs.get('subject', '?')} {modality}"
    d0, d1 = _describe(before), _describe(after)
    parts = ["<h2>Summary</h2>",
             _table([(k, d0[k], d1[k]) for k in d0], ("", "input", "preprocessed")),
             ("<p class='small'>config hash <code>"
             f"{html.escape(str(after.attrs.get('config_hash', '')))}</code></p>")]
    if modality in ("eeg", "meg", "ieeg"):
        parts += ["<h2>Power spectral density</h2>",
                  _img(psd_figure(before, after, max_seconds=max_seconds), "PSD"),
                  "<h2>Traces</h2>",
                  _img(traces_figure(before, after, n_traces=n_traces,
                                     max_seconds=min(max_seconds, 10.0)), "traces")]
    elif modality == "fmri":
        parts += ["<h2>Carpet plots</h2>", _img(carpet_figure(before, after), "carpet"),
                  "<h2>ROI correlation</h2>", _img(correlation_figure(after), "correlation")]
    else:
        parts += ["<h2>Traces</h2>",
                  _img(traces_figure(before, after, n_traces=n_traces,
                                     max_seconds=max_seconds), "traces")]
    parts += ["<h2>Processing history</h2>", _history_table(after)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(title, "\n".join(parts)), encoding="utf-8")
    return path


def summary_report(rows, path, *, title="neurofm pipeline"):
    """Write the summary page of a pipeline run.

    Parameters
    ----------
    rows : list of dict
        One per recording with keys id, report (relative link), subject, split, modality,
        n_channels, n_times, sfreq, config_hash.
    path : str | os.PathLike
        Output ``.html`` file.
    title : str
        Page title.

    Returns
    -------
    path : pathlib.Path
    """
    header = ("recording", "subject", "split", "modality", "channels", "duration (s)",
              "sfreq (Hz)", "config hash")
    table = []
    for r in rows:
        link = f"<a href='{html.escape(str(r['report']))}'>{html.escape(str(r['id']))}</a>"
        table.append((link, html.escape(str(r.get("subject", ""))),
                      html.escape(str(r.get("split", ""))),
                      html.escape(str(r.get("modality", ""))), r.get("n_channels", ""),
                      f"{r['n_times'] / r['sfreq']:.1f}", f"{r['sfreq']:g}",
                      f"<code>{html.escape(str(r.get('config_hash', '')))}</code>"))
    hours = sum(r["n_times"] / r["sfreq"] for r in rows) / 3600.0
    body = (f"<p>{len(rows)} recordings, {hours:.3f} h in total.</p>"
            + _table(table, header))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(title, body), encoding="utf-8")
    return path
