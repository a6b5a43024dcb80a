"""The demo's Brain-JEPA configuration does not collapse onto its position embeddings.

``neurofm demo`` pretrains Brain-JEPA for a few hundred steps on the fMRI example store
(12 parcels, runs centred and robust-scaled by the pipeline). With per-ROI robust
normalization the windows have unit scale, the trunc_normal(0.02) patch embedding makes the
content of a token ~1 % of its variance and the run collapses onto the positions: the
representation-health metric ``target_std`` (std across the batch of the token-averaged
normalized target embeddings) starts near 0.003 and falls. ``configs/demo/brainjepa.yaml``
uses the reference's subject-means scaling instead (see docs/models.md, "Short runs").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning.pytorch")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
N_NETWORKS, PER_NETWORK, N_VOLUMES, TR = 3, 4, 120, 2.0


def _slow(rng, k, n):
    """``k`` centred, unit-variance slow series (AR(1) smoothed by a 5-volume window)."""
    from scipy.signal import lfilter

    x = lfilter([1.0], [1.0, -0.6], rng.standard_normal((k, n + 20)), axis=1)
    x = np.stack([np.convolve(row, np.hanning(7), mode="same") for row in x])[:, 20:]
    x -= x.mean(axis=1, keepdims=True)
    return x / x.std(axis=1, keepdims=True)


def cohort_like_store(path, n_subjects=6, seed=0):
    """A store shaped like the fMRI example's: 12 parcels in 3 networks (a shared latent per
    network plus own noise), 120 volumes at TR 2 s, the global signal regressed out and each
    run robust-scaled per parcel as the pipeline does (median 0, IQR 1)."""
    from neurofm.schema import make_recording
    from neurofm.store import write_store

    rng = np.random.default_rng(seed)
    recs = []
    for s in range(n_subjects):
        latent = _slow(rng, N_NETWORKS, N_VOLUMES)
        x = np.repeat(latent, PER_NETWORK, axis=0) + _slow(rng, N_NETWORKS * PER_NETWORK,
                                                           N_VOLUMES)
        x -= x.mean(axis=0)  # global signal regression (the pipeline's confounds)
        med = np.median(x, axis=1, keepdims=True)
        q75, q25 = np.percentile(x, [75, 25], axis=1, keepdims=True)
        x = (x - med) / (q75 - q25)
        recs.append(make_recording(x.astype(np.float32),
                                   channel=[f"p{j:02d}" for j in range(len(x))],
                                   sfreq=1.0 / TR, modality="fmri", subject=f"{s:02d}",
                                   task="rest"))
    splits = ["train"] * (n_subjects - 2) + ["val", "test"]
    write_store(recs, path, splits=splits)
    return path


@pytest.mark.slow
def test_demo_config_keeps_the_target_embeddings_apart(tmp_path):
    """A short fit with configs/brainjepa.yaml + configs/demo/brainjepa.yaml (through the
    CLI) keeps the target std across windows well above 0 and does not let it shrink.

    Measured (2 epochs, 12 steps): target_std 0.037 -> 0.037 (min 0.030) with the demo
    config; with the previous demo config (robust normalization) 0.0026 -> 0.0027
    (min 0.0018), and on the demo's store it then falls to 0.0006 over the 430 steps of the
    full run. About 12 s of CPU (slow)."""
    import pandas as pd

    from neurofm.training.cli import run_lightning_cli

    store = cohort_like_store(tmp_path / "store")
    run = tmp_path / "run"
    run_lightning_cli([
        "fit", "-c", str(CONFIGS / "brainjepa.yaml"),
        "-c", str(CONFIGS / "demo" / "brainjepa.yaml"),
        f"--data.init_args.store={store}", "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={run}", f"--trainer.logger.init_args.save_dir={run}"])
    (metrics,) = sorted(run.glob("logs/version_*/metrics.csv"))
    df = pd.read_csv(metrics)
    std = df["target_std_step"].dropna().to_numpy()
    assert len(std) == 2 * 6  # 4 train subjects x 12 windows, batches of 8
    first, last = std[:3].mean(), std[-3:].mean()
    print(f"target_std first {first:.4f} last {last:.4f} min {std.min():.4f}")
    assert std.min() > 0.01
    assert last > 0.8 * first
