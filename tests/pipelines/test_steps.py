"""The per-job steps of the pipelines, without Snakemake."""

from __future__ import annotations

import numpy as np

from neurofm.pipelines.steps import apply_chain, write_zarr
from neurofm.schema import history, validate
from neurofm.store import open_recording


def test_chain_order_and_skipped_notch(spkit_eeg):
    steps = {"dff": None, "notch": {"freqs": [50.0, 100.0]},
             "bandpass": {"l_freq": 1.0, "h_freq": 40.0}, "resample": {"sfreq": 64.0},
             "reference": "average", "scale": {"method": "zscore"}}
    out = apply_chain(spkit_eeg, steps, modality="eeg")
    names = [h["step"] for h in history(out)]
    assert names[-5:] == ["notch", "filter", "resample", "rereference", "zscore"]
    # 100 Hz is above the 64 Hz Nyquist frequency of the real 128 Hz EEG: skipped
    assert history(out)[-5]["params"]["freqs"] == [50.0]
    assert out.attrs["sfreq"] == 64.0
    # re-reference is EEG only
    meg_like = apply_chain(spkit_eeg, {"reference": "average"}, modality="meg")
    assert "rereference" not in [h["step"] for h in history(meg_like)]


def test_write_zarr_is_atomic_and_stamped(spkit_eeg, tmp_path):
    path = write_zarr(spkit_eeg, tmp_path / "rec.zarr", attrs={"config_hash": "0123456789ab"})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    ds = validate(open_recording(path))
    assert ds.attrs["config_hash"] == "0123456789ab" and ds.attrs["neurofm_version"]
    np.testing.assert_array_equal(ds["signal"].values, spkit_eeg["signal"].values)
    write_zarr(spkit_eeg.isel(channel=[0, 1]), path)        # replaces the old one
    assert open_recording(path).sizes["channel"] == 2
