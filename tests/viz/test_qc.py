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
