"""QC HTML reports of the pipelines (neurofm.viz.qc)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from neurofm import preprocessing as pp
from neurofm.errors import NeurofmError
from neurofm.schema import make_recording
from neurofm.viz.qc import qc_report, summary_report


def _images(path):
    return re.findall(r"data:image/png;base64,", path.read_text())


def test_ephys_report(spkit_eeg, tmp_path):
    after = pp.resample(pp.filter(spkit_eeg, 1.0, 40.0), 100.0)
    path = qc_report(spkit_eeg, after, tmp_path / "qc" / "eeg.html", title="real EEG")
    text = path.read_text()
    assert "<title>real EEG</title>" in text
    assert "Power spectral density" in text and len(_images(path)) == 2
    assert "filter" in text and "resample" in text          # the history table
    assert "128" in text and "100" in text                  # sfreq before / after


def test_fmri_and_calcium_reports(tmp_path):
    rng = np.random.default_rng(0)   # generated ROI / cell traces (layout test only)
    fmri = make_recording(rng.standard_normal((6, 50)), channel=[f"R{i}" for i in range(6)],
                          sfreq=0.5, modality="fmri")
    path = qc_report(fmri, pp.zscore(fmri), tmp_path / "fmri.html")
    assert "Carpet plots" in path.read_text() and len(_images(path)) == 2
    ca = make_recording(rng.random((5, 300)), channel=[f"c{i}" for i in range(5)],
                        sfreq=10.0, modality="calcium")
    path = qc_report(ca, pp.zscore(ca), tmp_path / "ca.html", n_traces=3)
    assert "Traces" in path.read_text() and len(_images(path)) == 1


def test_unknown_modality(spkit_eeg, tmp_path):
    bad = spkit_eeg.copy()
    bad.attrs = {**spkit_eeg.attrs, "modality": "pet"}
    with pytest.raises(NeurofmError, match="modality"):
        qc_report(spkit_eeg, bad, tmp_path / "x.html")


def test_summary_links_every_recording(tmp_path):
    rows = [{"id": f"sub-0{i}_task-rest", "report": f"sub-0{i}_task-rest_qc.html",
             "subject": f"0{i}", "split": "train", "modality": "eeg", "n_channels": 14,
             "n_times": 1600, "sfreq": 100.0, "config_hash": "abc"} for i in (1, 2)]
    text = summary_report(rows, tmp_path / "summary.html").read_text()
    assert text.count("<a href='sub-0") == 2
    assert "2 recordings" in text


# --------------------------------------------------------------------------------------
# figure data: PSD per channel type, clipped y range, ROI labels


def _meg():
    """Generated MEG-like recording: 4 magnetometers (fT) with a 10 Hz rhythm and 6
    gradiometers (fT/cm) with a 20 Hz one, plus a trigger channel (layout test)."""
    rng = np.random.default_rng(4)
    sfreq, n = 200.0, 4000
    t = np.arange(n) / sfreq
    mag = 50 * rng.standard_normal((4, n)) + 200 * np.sin(2 * np.pi * 10 * t)
    grad = 2 * rng.standard_normal((6, n)) + 5 * np.sin(2 * np.pi * 20 * t)
    stim = np.zeros((1, n))
    stim[0, ::400] = 5.0
    names = [f"MAG{i}" for i in range(4)] + [f"GRAD{i}" for i in range(6)] + ["STI"]
    return make_recording(np.vstack([mag, grad, stim]), channel=names, sfreq=sfreq,
                          modality="meg", ch_type=["meg_mag"] * 4 + ["meg_grad"] * 6 + ["stim"],
                          units=["fT"] * 4 + ["fT/cm"] * 6 + ["V"])


def _mean_lines(fig):
    return {line.get_gid(): (ax, line) for ax in fig.axes for line in ax.get_lines()
            if line.get_gid()}


def test_meg_psd_has_one_curve_per_channel_type_in_its_unit():
    from scipy.signal import welch

    from neurofm.viz.qc import psd_figure

    meg = _meg()
    fig = psd_figure(meg, meg)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    assert not any("mixed" in lab for lab in labels)
    assert "PSD (fT\u00b2/Hz)" in labels and "PSD ((fT/cm)\u00b2/Hz)" in labels
    lines = _mean_lines(fig)
    assert set(lines) == {"meg_mag", "meg_grad"}          # no curve for the trigger channel
    x = np.asarray(meg["signal"].values, dtype=np.float64)
    for gid, rows in (("meg_mag", slice(0, 4)), ("meg_grad", slice(4, 10))):
        ax, line = lines[gid]
        f, p = welch(x[rows], fs=200.0, nperseg=800)
        np.testing.assert_allclose(line.get_xdata(), f[1:])
        np.testing.assert_allclose(line.get_ydata(), p.mean(axis=0)[1:], rtol=1e-5)
        unit = "fT" if gid == "meg_mag" else "(fT/cm)"
        assert ax.get_ylabel() == f"PSD ({unit}\u00b2/Hz)"
    # the magnetometer curve peaks at 10 Hz, the gradiometer one at 20 Hz
    assert lines["meg_mag"][1].get_xdata()[np.argmax(lines["meg_mag"][1].get_ydata())] == 10.0
    assert lines["meg_grad"][1].get_xdata()[np.argmax(lines["meg_grad"][1].get_ydata())] == 20.0


def test_psd_curves_group_by_type():
    from neurofm.viz.qc import psd_curves

    groups = psd_curves(_meg())
    assert [(g["ch_type"], g["units"], len(g["channels"])) for g in groups] == \
        [("meg_mag", "fT", 4), ("meg_grad", "fT/cm", 6)]
    for g in groups:
        np.testing.assert_allclose(g["mean"], g["psd"].mean(axis=0))


def test_psd_ylim_ignores_rounding_noise():
    from neurofm.viz.qc import PSD_DYNAMIC_RANGE, psd_ylim

    data = np.geomspace(1.0, 1e4, 1000)
    # a few bins of rounding noise / exact zeros and a NaN do not stretch the axis
    low, high = psd_ylim([np.r_[data, 1e-34, 1e-34, 0.0], np.array([np.nan, 5e3])])
    assert high == 2e4
    assert low == pytest.approx(np.percentile(np.r_[data, 1e-34, 1e-34, 5e3], 0.5) / 2)
    assert 0.4 < low < 0.6
    # a spectrum spanning 24 decades is cut at PSD_DYNAMIC_RANGE below its maximum
    low, high = psd_ylim([np.geomspace(1e-20, 1e4, 1000)])
    assert low == pytest.approx(1e4 / PSD_DYNAMIC_RANGE / 2)
    assert psd_ylim([np.zeros(5)]) == (1e-3, 1.0)


def test_bdf_spectrum_axis_spans_the_data(bdf_path):
    """The real BDF file (square, ramp, pulse channels): the axis used to span 1e-34..1e6."""
    import neurofm as nf
    from neurofm.viz.qc import PSD_DYNAMIC_RANGE, psd_figure

    ds = nf.io.read(bdf_path)
    fig = psd_figure(ds, ds)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        low, high = ax.get_ylim()
        assert high / low <= 4 * PSD_DYNAMIC_RANGE * 1.0001
        top = max(line.get_ydata().max() for line in ax.get_lines())
        assert high == pytest.approx(2 * top)
        assert low > 1e-20


def test_fmri_figures_use_roi_labels():
    from neurofm.viz.qc import carpet_figure, correlation_figure

    rng = np.random.default_rng(2)   # generated ROI series (layout test)
    names = ["Visual_L", "Visual_R", "Motor_L", "Motor_R", "DMN_PCC", "DMN_mPFC"]
    fmri = make_recording(rng.standard_normal((6, 40)), channel=names, sfreq=0.5,
                          modality="fmri")
    fig = carpet_figure(fmri, fmri)
    for ax in fig.axes[:2]:
        assert [t.get_text() for t in ax.get_yticklabels()] == names
        np.testing.assert_allclose(ax.get_yticks(), np.arange(6) + 0.5)
    ax = correlation_figure(fmri).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    many = make_recording(rng.standard_normal((100, 40)), sfreq=0.5, modality="fmri",
                          channel=[f"roi{i:03d}" for i in range(100)])
    ax = correlation_figure(many).axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert shown == [f"roi{i:03d}" for i in range(0, 100, 3)]
