"""Stores of the evaluation tests: planted-structure fMRI (16 subjects) and synthetic EEG."""

from __future__ import annotations

import numpy as np
import pytest
from training.conftest import planted_fmri  # the generator of the Brain-JEPA issue

N_ROIS, N_FRAMES = 40, 48


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory):
    """16 subjects x 144 volumes (3 windows of 48), 40 ROIs; labels: subject -> group."""
    from neurofm.store import write_store

    recs = planted_fmri(n_subjects=16, n_times=144, seed=1)
    store = write_store([r for r, _ in recs], tmp_path_factory.mktemp("evals") / "fmri")
    labels = {str(r.attrs["subject"]): g for r, g in recs}
    return store, labels


def synthetic_eeg(n_subjects=12, n_channels=8, sfreq=100.0, seconds=12.0, seed=0):
    """EEG-like recordings whose group changes alpha (10 Hz) power and its spatial pattern.

    Group 1 has a strong 10 Hz rhythm on channels 0-3, group 0 on channels 4-7; plus
    pink-ish noise. Returns a list of (recording, group).
    """
    from neurofm.schema import make_recording

    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    out = []
    for s in range(n_subjects):
        group = s % 2
        x = np.cumsum(rng.standard_normal((n_channels, n)), axis=1) * 0.05
        x += rng.standard_normal((n_channels, n))
        alpha = np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi)) * 3.0
        chans = slice(0, 4) if group else slice(4, 8)
        x[chans] += alpha * rng.uniform(0.8, 1.2, size=(4, 1))
        rec = make_recording(x.astype(np.float32), channel=[f"E{i}" for i in range(n_channels)],
                             sfreq=sfreq, modality="eeg", subject=f"{s:02d}")
        out.append((rec, group))
    return out


@pytest.fixture(scope="session")
def eeg_store(tmp_path_factory):
    from neurofm.store import write_store

    recs = synthetic_eeg()
    store = write_store([r for r, _ in recs], tmp_path_factory.mktemp("evals") / "eeg")
    return store, {str(r.attrs["subject"]): g for r, g in recs}
