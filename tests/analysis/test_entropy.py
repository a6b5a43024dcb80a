"""DSE / DSMI: parity with dse-dsmi, closed forms, options and bad inputs."""

import warnings

import numpy as np
import pytest
import xarray as xr

from neurofm.analysis.entropy import (
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_information,
)
from neurofm.errors import DataError, NeurofmError

with warnings.catch_warnings():  # dse_dsmi.diffusion calls warnings.filterwarnings("ignore")
    import dse_dsmi


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).uniform(0, 1, (240, 16))


@pytest.mark.parametrize(("sigma", "t"), [(0.5, 1), (0.5, 3), (1.0, 1), (1.0, 2), (3.0, 1),
                                          (3.0, 2), (10.0, 1), (10.0, 2)])
def test_dse_parity_with_dse_dsmi(X, sigma, t):
    ref = dse_dsmi.diffusion_spectral_entropy(X, gaussian_kernel_sigma=sigma, t=t)
    fast = diffusion_spectral_entropy(X, sigma=sigma, t=t)
    faithful = diffusion_spectral_entropy(X, sigma=sigma, t=t, reference=True)
    assert abs(faithful - ref) < 1e-8
    assert abs(fast - ref) < 1e-8
    assert fast == pytest.approx(ref, rel=1e-7, abs=1e-13)  # also relative (DSE can be ~1e-4)
    assert ref > 1e-5  # the values compared are not trivially ~0


def test_dse_subsampling_above_max_n_matches_reference():
    X = np.random.default_rng(1).normal(size=(300, 8))
    for seed in (0, 7):
        ref = dse_dsmi.diffusion_spectral_entropy(X, gaussian_kernel_sigma=2.0, max_N=120,
                                                  random_seed=seed)
        ours = diffusion_spectral_entropy(X, sigma=2.0, max_n=120, seed=seed)
        assert abs(ours - ref) < 1e-8
    full = diffusion_spectral_entropy(X, sigma=2.0, max_n=None)
    assert abs(full - diffusion_spectral_entropy(X, sigma=2.0, max_n=120)) > 1e-3


def test_fast_path_equals_reference_path_on_varied_inputs():
    rng = np.random.default_rng(2)
    for X in (rng.normal(size=(150, 3)) * 5, rng.exponential(size=(90, 40)),
              np.repeat(rng.normal(size=(30, 4)), 3, axis=0)):  # duplicated rows
        for sigma in (0.7, 4.0):
            a = diffusion_spectral_entropy(X, sigma=sigma)
            b = diffusion_spectral_entropy(X, sigma=sigma, reference=True)
            assert abs(a - b) < 1e-8


def test_torch_backend_matches_numpy(X):
    a = diffusion_spectral_entropy(X, sigma=1.0)
    b = diffusion_spectral_entropy(X, sigma=1.0, backend="torch")
    c = diffusion_spectral_entropy(X, sigma=1.0, backend="torch", dtype="float32")
    assert abs(a - b) < 1e-8
    assert abs(a - c) < 1e-3


def test_dse_closed_forms():
    # k far-apart tight clusters: K is block diagonal with k rank-one blocks -> log2(k) bits
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 5)) * 1000
    X = np.repeat(centers, 25, axis=0) + rng.normal(size=(100, 5)) * 1e-4
    assert diffusion_spectral_entropy(X, sigma=1.0) == pytest.approx(2.0, abs=1e-5)
    # identical points: one eigenvalue -> ~0 bits
    assert diffusion_spectral_entropy(np.ones((50, 3))) < 1e-10


def test_dse_sigma_options_and_standardize(X):
    assert diffusion_spectral_entropy(X, sigma="sqrt_dim") == pytest.approx(
        diffusion_spectral_entropy(X, sigma=4.0), abs=1e-12)
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    med = np.median(d[np.triu_indices(len(X), 1)])
    assert diffusion_spectral_entropy(X, sigma="median") == pytest.approx(
        diffusion_spectral_entropy(X, sigma=med), abs=1e-10)
    # not scale-invariant by default, scale-invariant with standardize or sigma="median"
    assert abs(diffusion_spectral_entropy(10 * X, sigma=1.0)
               - diffusion_spectral_entropy(X, sigma=1.0)) > 0.5
    assert diffusion_spectral_entropy(10 * X, sigma=1.0, standardize=True) == pytest.approx(
        diffusion_spectral_entropy(X, sigma=1.0, standardize=True), abs=1e-9)
    assert diffusion_spectral_entropy(10 * X, sigma="median") == pytest.approx(
        diffusion_spectral_entropy(X, sigma="median"), abs=1e-9)


def test_dataarray_input_sample_dim_first(X):
    da = xr.DataArray(X.T, dims=("feature", "sample"))
    assert diffusion_spectral_entropy(da, sigma=1.0) == pytest.approx(
        diffusion_spectral_entropy(X, sigma=1.0), abs=1e-12)


def test_dsmi_integer_labels_parity(X):
    y = np.random.default_rng(4).integers(0, 6, len(X))
    ref, _ = dse_dsmi.diffusion_spectral_mutual_information(X, y, gaussian_kernel_sigma=1.0)
    assert abs(diffusion_spectral_mutual_information(X, y, sigma=1.0) - ref) < 1e-8
    assert abs(diffusion_spectral_mutual_information(X, y, sigma=1.0, reference=True) - ref) < 1e-8


def test_dsmi_informative_labels_positive_and_parity():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(5), 40)
    X = rng.normal(size=(200, 6)) * 0.3 + np.eye(6)[y % 6][:, :6] * 3
    ref, _ = dse_dsmi.diffusion_spectral_mutual_information(X, y, gaussian_kernel_sigma=1.0,
                                                            t=2)
    ours = diffusion_spectral_mutual_information(X, y, sigma=1.0, t=2)
    assert abs(ours - ref) < 1e-8
    assert ours > 0.5  # classes carry information about X


def test_dsmi_float_labels_binned_parity(X):
    y = np.random.default_rng(6).normal(size=len(X)) + X[:, 0]
    ref, ref_labels = dse_dsmi.diffusion_spectral_mutual_information(X, y,
                                                                     gaussian_kernel_sigma=1.0)
    ours, labels = diffusion_spectral_mutual_information(X, y, sigma=1.0, return_labels=True)
    assert abs(ours - ref) < 1e-8
    np.testing.assert_array_equal(labels, ref_labels.reshape(-1))
    assert labels.min() == 1 and labels.max() == 10  # 10 bins of the range, as the reference


def test_dsmi_vector_labels_spectral_clustering_parity(X):
    Y = np.random.default_rng(7).normal(size=(len(X), 5))
    ref, ref_labels = dse_dsmi.diffusion_spectral_mutual_information(
        X, Y, gaussian_kernel_sigma=2.0, n_clusters=4)
    ours, labels = diffusion_spectral_mutual_information(X, Y, sigma=2.0, n_clusters=4,
                                                         return_labels=True)
    assert abs(ours - ref) < 1e-8
    np.testing.assert_array_equal(labels, ref_labels)


def test_dsmi_label_coordinate_name(X):
    y = np.arange(len(X)) % 3
    da = xr.DataArray(X, dims=("sample", "feature"), coords={"label": ("sample", y)})
    assert diffusion_spectral_mutual_information(da, "label", sigma=1.0) == pytest.approx(
        diffusion_spectral_mutual_information(X, y, sigma=1.0), abs=1e-12)


def test_bad_inputs(X):
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        diffusion_spectral_entropy(Xn)
    with pytest.raises(DataError, match="at least 2 samples"):
        diffusion_spectral_entropy(X[:1])
    with pytest.raises(NeurofmError, match="sigma"):
        diffusion_spectral_entropy(X, sigma=-1)
    with pytest.raises(NeurofmError, match="sigma"):
        diffusion_spectral_entropy(X, sigma="silverman")
    with pytest.raises(NeurofmError, match="t must"):
        diffusion_spectral_entropy(X, t=0)
    with pytest.raises(NeurofmError, match="backend"):
        diffusion_spectral_entropy(X, backend="jax")
    with pytest.raises(NeurofmError, match="float32"):
        diffusion_spectral_entropy(X, dtype="float32")
    with pytest.raises(DataError, match="rows"):
        diffusion_spectral_mutual_information(X, np.zeros(5, dtype=int))
    with pytest.raises(DataError, match="constant"):
        diffusion_spectral_mutual_information(X, np.ones(len(X)))
    with pytest.raises(NeurofmError, match="coordinate"):
        diffusion_spectral_mutual_information(X, "label")


# ------------------------------------------------------------------- over training
@pytest.fixture(scope="module")
def two_group_store(tmp_path_factory):
    """8 subjects x 4 windows; group 1 has 4x the variance on channels 0-1."""
    from neurofm.schema import make_recording
    from neurofm.store import write_store

    rng = np.random.default_rng(0)
    recs, labels = [], {}
    for s in range(8):
        x = rng.normal(size=(4, 400)).astype(np.float32)
        if s % 2:
            x[:2] *= 4
        recs.append(make_recording(x, channel=[f"E{i}" for i in range(4)], sfreq=100.0,
                                   modality="eeg", subject=f"{s:02d}"))
        labels[f"{s:02d}"] = s % 2
    return write_store(recs, tmp_path_factory.mktemp("dse") / "eeg"), labels


class _LogPower(__import__("torch").nn.Module):
    """(B, C, T) -> (B, 2 * C): per-channel log power, scaled by a 'training' gain."""

    def __init__(self, gain):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        import torch

        p = torch.log(x.pow(2).mean(-1))  # (B, C)
        return torch.cat([self.gain * p, 0.0 * p + torch.randn_like(p) * 0.01], dim=1)


def test_dse_over_training_values_and_dsmi(two_group_store):
    import torch

    from neurofm.analysis.entropy import dse_over_training, plot_dse_over_training
    from neurofm.evals import embed

    store, labels = two_group_store
    torch.manual_seed(0)
    encs = [_LogPower(0.0), _LogPower(3.0)]  # untrained (no signal) -> trained
    names = ["epoch=0.ckpt", "epoch=5.ckpt"]
    res = dse_over_training(encs, store, labels=labels, sigma=1.0, window_samples=100,
                            names=names, device="cpu")
    assert res.dims == ("checkpoint",) and list(res["epoch"].values) == [0, 5]
    assert list(res["n_samples"].values) == [32, 32]
    torch.manual_seed(0)
    emb0 = embed(encs[0], store, labels=labels, window_samples=100)
    assert res.values[0] == pytest.approx(diffusion_spectral_entropy(emb0, sigma=1.0),
                                          abs=1e-8)
    # the trained encoder separates the groups: DSMI with the labels rises
    assert res["dsmi"].values[1] > 0.5 > abs(res["dsmi"].values[0])
    import matplotlib

    matplotlib.use("Agg")
    assert plot_dse_over_training(res) is not None
    with pytest.raises(NeurofmError, match="empty"):
        dse_over_training([], store)


def test_inputs_not_mutated(X):
    X0 = X.copy()
    y = np.arange(len(X)) % 4
    diffusion_spectral_entropy(X, sigma=1.0, standardize=True)
    diffusion_spectral_mutual_information(X, y, sigma="median")
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, np.arange(len(X)) % 4)


# ----------------------------------------------------------- fast eigen-solve path
def _numpy_has_scipy_openblas():
    cfg = np.show_config(mode="dicts")["Build Dependencies"]
    return cfg.get("lapack", {}).get("name") == "scipy-openblas"


def test_two_stage_eigensolver_matches_eigvalsh():
    from neurofm.analysis import entropy as E

    solver = E._two_stage()
    if solver is None:
        assert not _numpy_has_scipy_openblas()  # PyPI numpy wheels ship the routines
        pytest.skip("numpy is not linked to scipy-openblas; numpy.linalg.eigvalsh is used")
    rng = np.random.default_rng(8)
    B = rng.normal(size=(40, 40))
    blocks = np.kron(np.eye(5), B @ B.T)  # every eigenvalue 5-fold
    mats = [rng.normal(size=(n, n)) for n in (2, 7, 150)]
    mats = [A + A.T for A in mats] + [blocks, E._kernel_operator(rng.normal(size=(200, 5)), 1.0)]
    for A in mats:
        ref = np.linalg.eigvalsh(A)
        scale = np.abs(ref).max()
        for kd in (1, 8, 32, 500):
            w = solver.eigvalsh(A.copy(), kd)
            np.testing.assert_allclose(w, ref, rtol=0, atol=1e-12 * scale)
    w, stages = solver.eigvalsh(mats[2].copy(), 32, timings=True)
    assert len(stages) == 3 and all(v >= 0 for v in stages.values())
    np.testing.assert_allclose(w, np.linalg.eigvalsh(mats[2]), rtol=0, atol=1e-10)


def test_kernel_operator_equals_reference_matrix(X):
    from sklearn.metrics import pairwise_distances

    from neurofm.analysis.entropy import _kernel_operator

    for sigma in (0.5, 3.0):
        D = pairwise_distances(X)
        G = (1 / (sigma * np.sqrt(2 * np.pi))) * np.exp(-(D**2) / (2 * sigma**2))
        Deg = np.diag(1 / np.sum(G, axis=1) ** 0.5)
        np.testing.assert_allclose(_kernel_operator(X, sigma), Deg @ G @ Deg, rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("two_stage", [True, False])
def test_large_n_path_parity_with_dse_dsmi(X, monkeypatch, two_stage):
    """The path taken from _TWO_STAGE_MIN_N points (lowered here), and its fallback."""
    from neurofm.analysis import entropy as E

    monkeypatch.setattr(E, "_TWO_STAGE_MIN_N", 2)
    if not two_stage:
        monkeypatch.setattr(E, "_TWO_STAGE", [None])
    for sigma, t in ((0.5, 1), (1.0, 2), (10.0, 1)):
        ref = dse_dsmi.diffusion_spectral_entropy(X, gaussian_kernel_sigma=sigma, t=t)
        ours = diffusion_spectral_entropy(X, sigma=sigma, t=t)
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-13)
    y = np.random.default_rng(9).integers(0, 4, len(X))
    ref, _ = dse_dsmi.diffusion_spectral_mutual_information(X, y, gaussian_kernel_sigma=1.0)
    assert abs(diffusion_spectral_mutual_information(X, y, sigma=1.0) - ref) < 1e-8


@pytest.mark.slow
def test_dse_parity_above_two_stage_threshold():
    from neurofm.analysis import entropy as E

    n = E._TWO_STAGE_MIN_N + 100
    X = np.random.default_rng(10).normal(size=(n, 64))  # the benchmark's data
    ref = dse_dsmi.diffusion_spectral_entropy(X)
    assert diffusion_spectral_entropy(X) == pytest.approx(ref, rel=1e-10)
