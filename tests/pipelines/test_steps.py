"""The per-job steps of the pipelines, without Snakemake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurofm.pipelines.steps import apply_chain, preprocess_step, read_done, write_zarr
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


EEG_STEPS = {"dff": None, "notch": {"freqs": [50.0]},
             "bandpass": {"l_freq": 1.0, "h_freq": 40.0, "method": "fir"},
             "resample": {"sfreq": 64.0, "method": "polyphase"}, "reference": "average",
             "scale": {"method": "robust"}}


@pytest.mark.parametrize("block_seconds", [4.0, 120.0])
def test_preprocess_step_equals_the_in_memory_chain(spkit_eeg, tmp_path, block_seconds):
    """Blocked (4 s blocks of a 16 s recording), checkpointed, then scaled: the same values
    as the chain on the whole recording in memory."""
    raw = write_zarr(spkit_eeg, tmp_path / "work" / "raw.zarr")
    done = tmp_path / "work" / "sub-01_task-rest_desc-preproc.json"
    target = tmp_path / "store" / "sub-01_task-rest.zarr"
    written = preprocess_step(str(raw), str(done), target=str(target), modality="eeg",
                              steps=EEG_STEPS, block_seconds=block_seconds,
                              store={"chunk_seconds": 2.0}, config_hash="abcdefabcdef")
    expected = apply_chain(spkit_eeg, EEG_STEPS, modality="eeg")
    got = open_recording(written)
    assert got.sizes == expected.sizes and got.attrs["sfreq"] == 64.0
    np.testing.assert_allclose(got["signal"].values, expected["signal"].values,
                               rtol=1e-4, atol=1e-4)
    # robust scaling: per channel, median 0 and IQR 1 over the whole recording
    q25, q50, q75 = np.percentile(got["signal"].values, [25, 50, 75], axis=1)
    np.testing.assert_allclose(q50, 0.0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1.0, rtol=1e-5)
    assert got.attrs["config_hash"] == "abcdefabcdef"
    assert got["signal"].encoding["chunks"] == (14, 128)        # store.chunk_seconds = 2 s
    marker = read_done(done)
    assert marker["id"] == "sub-01_task-rest" and marker["config_hash"] == "abcdefabcdef"
    assert Path(marker["path"]) == Path(written)
    assert not [p for p in done.parent.iterdir() if p.name.startswith(".ckpt")]


def test_preprocess_step_zscore_dff_calcium(tmp_path):
    """The calcium chain (dF/F -> resample -> z-score) too, on generated traces."""
    from neurofm.schema import make_recording

    rng = np.random.default_rng(0)
    x = (100 + np.cumsum(rng.standard_normal((6, 3000)), axis=1)).astype(np.float32)
    ds = make_recording(x, channel=[f"c{i}" for i in range(6)], sfreq=30.0,
                        modality="calcium", ch_type="cell", units="a.u.")
    steps = {"dff": {"method": "maximin", "window_s": 10.0, "sigma": 2.0},
             "resample": {"sfreq": 5.0}, "scale": {"method": "zscore"}}
    raw = write_zarr(ds, tmp_path / "raw.zarr")
    written = preprocess_step(str(raw), str(tmp_path / "x_desc-preproc.json"),
                              target=str(tmp_path / "store" / "x.zarr"), modality="calcium",
                              steps=steps, block_seconds=20.0)
    expected = apply_chain(ds, steps, modality="calcium")["signal"].values
    got = open_recording(written)["signal"].values
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.mean(axis=1), 0.0, atol=1e-5)
