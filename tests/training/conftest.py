"""Fixtures of the training tests: a generated fMRI-like store with planted structure."""

from __future__ import annotations

import numpy as np
import pytest

N_ROIS, TR = 40, 0.72


def planted_fmri(n_subjects=8, n_rois=N_ROIS, n_times=240, seed=0):
    """ROI time series whose coupling depends on the subject's group.

    Four networks of ``n_rois / 4`` ROIs, each driven by its own slow AR(1) latent. Group 0
    couples networks 0 and 1 (they share a latent), group 1 couples networks 2 and 3;
    plus independent noise per ROI. Returns a list of (recording, group).
    """
    from neurofm.schema import make_recording

    rng = np.random.default_rng(seed)
    size = n_rois // 4
    out = []
    for s in range(n_subjects):
        group = s % 2
        latents = np.zeros((5, n_times))
        for t in range(1, n_times):
            latents[:, t] = 0.9 * latents[:, t - 1] + rng.standard_normal(5)
        x = 0.5 * rng.standard_normal((n_rois, n_times))
        for net in range(4):
            coupled = (group == 0 and net in (0, 1)) or (group == 1 and net in (2, 3))
            drive = latents[4] if coupled else latents[net]
            x[net * size:(net + 1) * size] += drive
        rec = make_recording(x.astype(np.float32), channel=[f"roi{i:03d}" for i in range(n_rois)],
                             sfreq=1.0 / TR, modality="fmri", subject=f"{s:02d}",
                             task="rest")
        out.append((rec, group))
    return out


@pytest.fixture(scope="session")
def fmri_store(tmp_path_factory):
    """8 subjects (6 train, 1 val, 1 test), 40 ROIs, 240 volumes each; group = subject % 2."""
    from neurofm.store import write_store

    recs = planted_fmri()
    splits = ["train"] * 6 + ["val", "test"]
    path = tmp_path_factory.mktemp("fmri") / "store"
    return write_store([r for r, _ in recs], path, splits=splits)


def crash_callback(epoch):
    """A Lightning callback that dies at the start of ``epoch`` (after the previous epoch's
    checkpoint was written): a killed run, for the resume tests."""
    from lightning.pytorch.callbacks import Callback

    class Crash(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == epoch:
                raise RuntimeError("simulated kill")

    return Crash()
