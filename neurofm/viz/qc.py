"""Quality-control HTML reports of the preprocessing pipelines.

One self-contained page per recording (figures embedded as PNG) comparing the input and the
preprocessed recording:

- EEG / MEG / iEEG: power spectral density before and after (Welch; one curve per channel
  type in its unit, the y range clipped to the data's meaningful range), a few traces;
- fMRI: carpet plots (ROI x time) before and after and the ROI correlation matrix, labelled
  with the ROI names;
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
    "psd_curves",
    "psd_figure",
    "psd_ylim",
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


#: Channel types without physiological signal: left out of the spectra (as MNE's plots do).
NON_DATA_CH_TYPES = ("stim",)

#: Dynamic range kept on a spectrum's y axis: the PSD of float32 data carries no information
#: more than about 12 decades below its largest value (rounding noise, exact zeros).
PSD_DYNAMIC_RANGE = 1e12


def _channel_units(ds):
    """Unit of every channel: the ``ch_units`` coordinate, else the signal's units."""
    if "ch_units" in ds.coords:
        return [str(u) for u in ds["ch_units"].values]
    return [str(ds["signal"].attrs.get("units", "a.u."))] * ds.sizes["channel"]


def _squared(units):
    """``fT`` -> ``fT²``; ``fT/cm`` -> ``(fT/cm)²``."""
    return f"({units})\u00b2" if any(c in units for c in "/* ") else f"{units}\u00b2"


def psd_curves(ds, *, max_seconds=300.0):
    """Welch power spectra of a recording, one group per channel type.

    Channels of different types (MEG magnetometers in fT and gradiometers in fT/cm, EEG and
    EOG...) are never averaged together: each type gets its own mean curve, in its own
    unit. Trigger channels (``ch_type`` "stim") are left out.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical recording, ``signal`` of shape (n_channels, n_times).
    max_seconds : float
        Seconds of signal used (from the start).

    Returns
    -------
    groups : list of dict
        One per channel type, in order of first appearance, with keys ``ch_type`` (str),
        ``units`` (str, the channels' unit; a type whose channels have several units is
        split into one group per unit), ``channels`` (list of str, n_group), ``freqs``
        (ndarray of shape (n_freqs,), Hz), ``psd`` (ndarray of shape (n_group, n_freqs),
        units^2/Hz) and ``mean`` (ndarray of shape (n_freqs,), the mean over the group).
    """
    from scipy.signal import welch

    x = _segment(ds, max_seconds)                                    # (C, T)
    sfreq = float(ds.attrs["sfreq"])
    nper = int(min(x.shape[1], max(8, round(4 * sfreq))))
    types = [str(t) for t in ds["ch_type"].values]
    units = _channel_units(ds)
    names = [str(c) for c in ds["channel"].values]
    keys = []
    for t, u in zip(types, units):
        if t not in NON_DATA_CH_TYPES and (t, u) not in keys:
            keys.append((t, u))
    groups = []
    for t, u in keys:
        rows = [i for i, (tt, uu) in enumerate(zip(types, units)) if (tt, uu) == (t, u)]
        f, p = welch(x[rows], fs=sfreq, nperseg=nper)
        groups.append({"ch_type": t, "units": u, "channels": [names[i] for i in rows],
                       "freqs": f, "psd": p, "mean": p.mean(axis=0)})
    return groups


def psd_ylim(curves, *, dynamic_range=PSD_DYNAMIC_RANGE):
    """Y range of a log-scale spectrum that shows the data, not its rounding noise.

    Parameters
    ----------
    curves : sequence of ndarray
        The plotted power values (any shapes); zero, negative and non-finite values and the
        DC bin are the caller's to include or not (they are ignored here when not positive).
    dynamic_range : float
        Largest ratio between the top and the bottom of the axis.

    Returns
    -------
    (low, high) : tuple of float
        From the 0.5th percentile of the positive values (but at least
        ``max / dynamic_range``) to the maximum, each padded by a factor 2.
    """
    values = np.concatenate([np.ravel(np.asarray(c, dtype=np.float64)) for c in curves])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return 1e-3, 1.0
    high = float(values.max())
    low = max(float(np.percentile(values, 0.5)), high / dynamic_range)
    return low / 2.0, high * 2.0


def psd_figure(before, after, *, max_seconds=300.0):
    """Welch PSD before (left) and after (right): one mean curve per channel type.

    Every channel is drawn faintly and each channel type has its own mean curve in its own
    unit (see :func:`psd_curves`); types with different units are drawn on separate rows,
    so MEG magnetometers (fT^2/Hz) and gradiometers ((fT/cm)^2/Hz) are never mixed. The y
    axis spans the data's meaningful range (:func:`psd_ylim`), not rounding noise.

    Parameters
    ----------
    before, after : xarray.Dataset
        Canonical recordings (any sampling rates).
    max_seconds : float
        Seconds of signal used.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Axes in row-major order (row = unit, column = input / preprocessed); each mean
        curve is a line labelled ``"<ch_type> mean"`` and has the channel type as its
        ``gid``.
    """
    panels = []
    for ds, label in ((before, "input"), (after, "preprocessed")):
        groups = psd_curves(ds, max_seconds=max_seconds)
        by_unit = {}
        for g in groups:
            by_unit.setdefault(g["units"], []).append(g)
        panels.append((ds, label, by_unit))
    n_rows = max(1, max(len(by_unit) for _, _, by_unit in panels))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.2 * n_rows), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, 2, squeeze=False))
    for col, (ds, label, by_unit) in enumerate(panels):
        sfreq = float(ds.attrs["sfreq"])
        for row in range(n_rows):
            ax = axes[row, col]
            if row >= len(by_unit):
                ax.set_visible(False)
                continue
            units, groups = list(by_unit.items())[row]
            plotted = []
            for k, g in enumerate(groups):
                f = g["freqs"]
                keep = f > 0  # the DC bin is 0 after any high-pass: not a meaningful value
                for p in g["psd"][: 64]:
                    ax.plot(f[keep], p[keep], color="0.75", lw=0.5)
                color = f"C{k + (0 if label == 'input' else 1)}"
                ax.plot(f[keep], g["mean"][keep], color=color, lw=1.5, gid=g["ch_type"],
                        label=f"{g['ch_type']} mean")
                plotted += [g["psd"][:, keep], g["mean"][keep]]
            ax.set_yscale("log")
            ax.set_ylim(*psd_ylim(plotted))
            n_ch = sum(len(g["channels"]) for g in groups)
            ax.set(xlabel="frequency (Hz)", ylabel=f"PSD ({_squared(units)}/Hz)",
                   title=f"{label}: {n_ch} ch, {sfreq:g} Hz")
            ax.legend(fontsize=7, loc="upper right")
    return fig


def _label_axis(ax, names, axis, *, offset=0.0, max_labels=40):
    """Tick labels from the channel names (every k-th when there are many)."""
    step = max(1, int(np.ceil(len(names) / max_labels)))
    idx = np.arange(0, len(names), step)
    labels = [names[i] for i in idx]
    size = 7 if len(idx) <= 20 else 5
    if axis == "y":
        ax.set_yticks(idx + offset, labels, fontsize=size)
    else:
        ax.set_xticks(idx + offset, labels, fontsize=size, rotation=90)


def carpet_figure(before, after, *, max_seconds=3600.0):
    """Carpet plots (z-scored ROI x time images) before and after.

    Rows are labelled with the ROI names (the ``channel`` coordinate, which the fMRI
    reader takes from the atlas labels), every k-th one when there are more than 40.
    """
    fig, axes = _figure(height=4.0, ncols=2)
    for ax, ds, label in ((axes[0], before, "input"), (axes[1], after, "preprocessed")):
        x = _segment(ds, max_seconds)
        sd = x.std(axis=1, keepdims=True)
        z = (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        t = np.asarray(ds["time"].values[: x.shape[1]])
        ax.imshow(z, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest",
                  extent=(t[0], t[-1] if len(t) > 1 else t[0] + 1, x.shape[0], 0))
        _label_axis(ax, [str(c) for c in ds["channel"].values], "y", offset=0.5)
        ax.set(xlabel="time (s)", ylabel="ROI", title=f"{label} (z-scored per ROI)")
    return fig


def correlation_figure(ds, *, max_seconds=3600.0):
    """ROI x ROI Pearson correlation matrix, both axes labelled with the ROI names."""
    x = _segment(ds, max_seconds)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(x) if x.shape[0] > 1 else np.ones((1, 1))
    fig, ax = _figure(width=5.5, height=4.8)
    im = ax.imshow(np.nan_to_num(corr), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    names = [str(c) for c in ds["channel"].values]
    _label_axis(ax, names, "x")
    _label_axis(ax, names, "y")
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
        units = ", ".join(dict.fromkeys(_channel_units(ds)[: x.shape[0]]))
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
