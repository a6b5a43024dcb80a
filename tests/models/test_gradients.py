"""compute_gradients (BrainSpace parity) and group_fc."""

from __future__ import annotations

import numpy as np
import pytest

from neurofm.errors import DataError, NeurofmError
from neurofm.models import compute_gradients, group_fc
from neurofm.models.gradients import affinity


def _fc(r=90, t=400, seed=0):
    """FC of a few planted networks (mixtures of shared latent time courses plus noise)."""
    rng = np.random.default_rng(seed)
    lat = rng.standard_normal((6, t))
    mix = rng.standard_normal((r, 6)) * (rng.random((r, 6)) < 0.5)
    return np.corrcoef(mix @ lat + rng.standard_normal((r, t)))


@pytest.fixture(scope="module")
def gm():
    gradient = pytest.importorskip("brainspace.gradient")
    return gradient


def test_affinity_matches_brainspace(gm):
    from brainspace.gradient.kernels import compute_affinity

    fc = _fc()
    for kernel, sparsity in (("normalized_angle", 0.9), ("cosine", 0.8), ("cosine", 0.0)):
        ref = compute_affinity(fc, kernel=kernel, sparsity=sparsity or None)
        np.testing.assert_allclose(affinity(fc, kernel=kernel, sparsity=sparsity), ref,
                                   atol=1e-12)


def test_brainspace_solver_reproduces_brainspace(gm):
    fc = _fc()
    ref = gm.GradientMaps(n_components=30, approach="dm", kernel="normalized_angle",
                          random_state=0).fit(fc)
    g, lam = compute_gradients(fc, solver="brainspace", random_state=0, return_lambdas=True)
    assert g.shape == (90, 30)
    np.testing.assert_allclose(g, ref.gradients_, atol=1e-7)
    np.testing.assert_allclose(lam, ref.lambdas_, rtol=0, atol=1e-10)
    ref2 = gm.GradientMaps(n_components=10, approach="dm", kernel="cosine",
                           random_state=3).fit(fc, sparsity=0.8)
    g2 = compute_gradients(fc, 10, "cosine", 0.8, solver="brainspace", random_state=3)
    np.testing.assert_allclose(g2, ref2.gradients_, atol=1e-7)


def test_exact_solver_close_to_brainspace_and_exact(gm):
    fc = _fc()
    ref = gm.GradientMaps(n_components=30, approach="dm", kernel="normalized_angle",
                          random_state=0).fit(fc)
    g, lam = compute_gradients(fc, return_lambdas=True)
    # BrainSpace runs eigsh on the non-symmetric P: close to, not equal to, the eigenvectors
    span = np.abs(ref.gradients_).max()
    assert np.abs(g - ref.gradients_).max() < 0.05 * span
    corr = [np.corrcoef(g[:, j], ref.gradients_[:, j])[0, 1] for j in range(30)]
    assert min(corr) > 0.99
    np.testing.assert_allclose(lam, ref.lambdas_, rtol=5e-3)
    # columns are exact right eigenvectors of the diffusion operator P (alpha = 0.5)
    a = affinity(fc)
    d = a.sum(1) ** -0.5
    w = a * d[:, None] * d[None, :]
    p = w / w.sum(1, keepdims=True)
    mu = lam / (1 + lam)  # undo lambda / (1 - lambda)
    np.testing.assert_allclose(p @ g, g * mu[None, :], atol=1e-10)
    assert np.all(np.diff(lam) <= 0)


def test_signs_are_deterministic():
    fc = _fc(seed=4)
    g = compute_gradients(fc, n_components=8)
    top = g[np.abs(g).argmax(axis=0), np.arange(8)]
    assert np.all(top > 0)
    # the same input permuted gives the permuted gradients, signs included
    perm = np.random.default_rng(1).permutation(90)
    gp = compute_gradients(fc[np.ix_(perm, perm)], n_components=8)
    np.testing.assert_allclose(gp, g[perm], atol=1e-8)


def test_bad_input():
    with pytest.raises(DataError, match="square"):
        compute_gradients(np.zeros((4, 5)))
    fc = _fc()
    fc[0, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        compute_gradients(fc)
    with pytest.raises(NeurofmError, match="kernel"):
        compute_gradients(_fc(), kernel="gaussian")
    with pytest.raises(NeurofmError, match="n_components"):
        compute_gradients(_fc(r=10), n_components=30, sparsity=0.5)


def _store(tmp_path):
    from neurofm.schema import make_recording
    from neurofm.store import write_store

    rng = np.random.default_rng(0)
    recs, xs = [], []
    for k in range(4):
        x = rng.standard_normal((6, 80)).astype(np.float32)
        x[1] += x[0]  # planted coupling
        xs.append(x)
        recs.append(make_recording(x, channel=[f"roi{i}" for i in range(6)], sfreq=1.0,
                                   modality="fmri", subject=f"s{k}"))
    return write_store(recs, tmp_path / "store", splits=["train", "train", "train", "val"]), xs


def test_group_fc_is_the_fisher_z_mean(tmp_path):
    store, xs = _store(tmp_path)
    fc, channels = group_fc(store.path, "train")
    assert channels == [f"roi{i}" for i in range(6)]
    z = np.mean([np.arctanh(np.clip(np.corrcoef(x.astype(np.float64)), -1 + 1e-7, 1 - 1e-7))
                 for x in xs[:3]], axis=0)
    expected = np.tanh(z)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(fc, expected, atol=1e-6)
    assert fc[0, 1] > 0.5
    fc_val, _ = group_fc(store, "val")
    np.testing.assert_allclose(fc_val[0, 2], np.corrcoef(xs[3].astype(np.float64))[0, 2],
                               atol=1e-6)
    with pytest.raises(DataError, match="splits found"):
        group_fc(store, "test")
