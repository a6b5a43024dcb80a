"""Encoding models: parity with himalaya, dual == primal, banded recovery, noise ceilings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from neurofm.analysis import encoding as enc
from neurofm.analysis.encoding import (
    BandedRidgeCV,
    Delayer,
    KernelRidgeCV,
    RidgeCV,
    correlation_score,
    explainable_variance,
    fit_encoding_model,
    leave_one_run_out,
    noise_normalized,
    r2_score,
)
from neurofm.errors import DataError, NeurofmError

himalaya = pytest.importorskip("himalaya")
from himalaya.kernel_ridge import KernelRidgeCV as HKernelRidgeCV
from himalaya.kernel_ridge import generate_dirichlet_samples
from himalaya.ridge import GroupRidgeCV as HGroupRidgeCV
from himalaya.ridge import RidgeCV as HRidgeCV
from himalaya.scoring import r2_score_split as h_r2_score_split

ALPHAS = np.logspace(-2, 8, 21)
TOL = 1e-8


def _data(n=120, p=30, t=40, seed=0):
    """Targets with very different SNRs so that the best alphas spread over the grid."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    w = rng.standard_normal((p, t)) * rng.uniform(0, 1, t)
    y = x @ w + rng.standard_normal((n, t)) * rng.uniform(0.3, 30, t)
    return x, y


def _banded_data(n=150, sizes=(10, 10, 10), scales=(3.0, 0.7, 0.0), t=30, seed=1):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n, s)) for s in sizes]
    y = sum(sc * (xi @ rng.standard_normal((xi.shape[1], t))) for sc, xi in zip(scales, xs,
                                                                               strict=True))
    y = y + rng.standard_normal((n, t)) * 2.0
    return np.hstack(xs), y, np.repeat(np.arange(len(sizes)), sizes)


def _alpha_index(a):
    return np.searchsorted(ALPHAS, np.asarray(a) * (1 - 1e-9))


# ----------------------------------------------------------------------------- RidgeCV
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_ridgecv_matches_himalaya(backend, fit_intercept):
    x, y = _data()
    h = HRidgeCV(alphas=ALPHAS, fit_intercept=fit_intercept).fit(x, y)
    m = RidgeCV(alphas=ALPHAS, fit_intercept=fit_intercept, backend=backend).fit(x, y)
    assert m.solver_ == "primal"
    # identical alpha choice per target (himalaya returns exp(-log(1/alpha)): compare indices)
    np.testing.assert_array_equal(_alpha_index(m.best_alphas_), _alpha_index(h.best_alphas_))
    assert len(np.unique(m.best_alphas_)) >= 4  # the data really exercise the selection
    np.testing.assert_allclose(m.coef_, np.asarray(h.coef_), rtol=0, atol=TOL)
    np.testing.assert_allclose(m.predict(x), np.asarray(h.predict(x)), rtol=0, atol=TOL)
    if fit_intercept:
        np.testing.assert_allclose(m.intercept_, np.asarray(h.intercept_), atol=TOL)
    np.testing.assert_allclose(m.score(x, y), np.asarray(h.score(x, y)), atol=TOL)


def test_ridgecv_cv_scores_are_negative_mse_per_alpha():
    x, y = _data(n=60, p=8, t=3)
    m = RidgeCV(alphas=[0.1, 10.0], cv=3).fit(x, y)
    from sklearn.model_selection import KFold

    expect = np.zeros((2, 3))
    for tr, va in KFold(3).split(x):
        for j, a in enumerate([0.1, 10.0]):
            b = np.linalg.solve(x[tr].T @ x[tr] + a * np.eye(8), x[tr].T @ y[tr])
            expect[j] -= ((y[va] - x[va] @ b) ** 2).mean(0) / 3
    np.testing.assert_allclose(m.cv_scores_, expect, rtol=1e-10)


def test_ridgecv_global_alpha_matches_himalaya():
    x, y = _data()
    h = HRidgeCV(alphas=ALPHAS, solver_params={"local_alpha": False}).fit(x, y)
    m = RidgeCV(alphas=ALPHAS, local_alpha=False).fit(x, y)
    assert len(np.unique(m.best_alphas_)) == 1
    np.testing.assert_array_equal(_alpha_index(m.best_alphas_), _alpha_index(h.best_alphas_))
    np.testing.assert_allclose(m.coef_, np.asarray(h.coef_), atol=TOL)


def test_ridgecv_tie_break_prefers_larger_alpha():
    # a target that is identically zero has the same CV score for every alpha
    x, y = _data(t=2)
    y[:, 1] = 0.0
    m = RidgeCV(alphas=ALPHAS).fit(x, y)
    assert m.best_alphas_[1] == ALPHAS[-1]


def test_ridgecv_custom_splitter_and_batches():
    x, y = _data(n=100)
    cv = leave_one_run_out([30, 30, 40])
    h = HRidgeCV(alphas=ALPHAS, cv=cv).fit(x, y)
    m = RidgeCV(alphas=ALPHAS, cv=cv, n_targets_batch=7).fit(x, y)
    np.testing.assert_array_equal(_alpha_index(m.best_alphas_), _alpha_index(h.best_alphas_))
    np.testing.assert_allclose(m.coef_, np.asarray(h.coef_), atol=TOL)


def test_dual_form_chosen_automatically_and_equal_to_primal():
    x, y = _data(n=40, p=90, t=12, seed=3)
    auto = RidgeCV(alphas=ALPHAS).fit(x, y)
    assert auto.solver_ == "dual"
    primal = RidgeCV(alphas=ALPHAS, solver="primal").fit(x, y)
    assert primal.solver_ == "primal"
    np.testing.assert_array_equal(auto.best_alphas_, primal.best_alphas_)
    np.testing.assert_allclose(auto.coef_, primal.coef_, atol=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # himalaya: "use KernelRidgeCV"
        h = HRidgeCV(alphas=ALPHAS).fit(x, y)
    np.testing.assert_array_equal(_alpha_index(auto.best_alphas_), _alpha_index(h.best_alphas_))
    np.testing.assert_allclose(auto.coef_, np.asarray(h.coef_), atol=TOL)
    # and with an intercept
    a = RidgeCV(alphas=ALPHAS, fit_intercept=True).fit(x, y)
    b = RidgeCV(alphas=ALPHAS, fit_intercept=True, solver="primal").fit(x, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=TOL)
    np.testing.assert_allclose(a.intercept_, b.intercept_, atol=TOL)


def test_ridgecv_float32_torch_close_to_float64():
    x, y = _data()
    a = RidgeCV(alphas=ALPHAS).fit(x, y)
    b = RidgeCV(alphas=ALPHAS, backend="torch", dtype="float32").fit(x, y)
    assert np.mean(a.best_alphas_ == b.best_alphas_) >= 0.9
    same = a.best_alphas_ == b.best_alphas_
    np.testing.assert_allclose(b.coef_[:, same], a.coef_[:, same], rtol=1e-3, atol=1e-4)


def test_ridgecv_1d_target_and_score_average():
    x, y = _data(t=3)
    m = RidgeCV(alphas=ALPHAS).fit(x, y[:, 0])
    full = RidgeCV(alphas=ALPHAS).fit(x, y)
    assert m.coef_.shape == (x.shape[1],)
    np.testing.assert_allclose(m.coef_, full.coef_[:, 0], atol=1e-12)
    assert isinstance(m.score(x, y[:, 0]), float)
    avg = full.score(x, y, multioutput="uniform_average")
    assert avg == pytest.approx(np.mean(full.score(x, y)))


# ----------------------------------------------------------------------------- KernelRidgeCV
@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly"])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_kernel_ridgecv_matches_himalaya(kernel, fit_intercept):
    x, y = _data(n=80, p=20, t=25, seed=4)
    h = HKernelRidgeCV(alphas=ALPHAS, kernel={"poly": "polynomial"}.get(kernel, kernel),
                       fit_intercept=fit_intercept).fit(x, y)
    m = KernelRidgeCV(alphas=ALPHAS, kernel=kernel, fit_intercept=fit_intercept).fit(x, y)
    np.testing.assert_array_equal(_alpha_index(m.best_alphas_), _alpha_index(h.best_alphas_))
    xt = np.random.default_rng(9).standard_normal((15, 20))
    np.testing.assert_allclose(m.predict(xt), np.asarray(h.predict(xt)), atol=1e-8)
    np.testing.assert_allclose(m.dual_coef_, np.asarray(h.dual_coef_), atol=1e-8)


def test_kernel_ridgecv_torch_equals_numpy():
    x, y = _data(n=80, p=20, t=10, seed=5)
    a = KernelRidgeCV(alphas=ALPHAS, kernel="rbf").fit(x, y)
    b = KernelRidgeCV(alphas=ALPHAS, kernel="rbf", backend="torch").fit(x, y)
    np.testing.assert_array_equal(a.best_alphas_, b.best_alphas_)
    np.testing.assert_allclose(a.dual_coef_, b.dual_coef_, atol=1e-9)


# ----------------------------------------------------------------------------- BandedRidgeCV
def test_dirichlet_candidates_match_himalaya():
    g = enc._ridge.dirichlet_gammas(11, 3, (0.1, 1.0), 42)
    h = generate_dirichlet_samples(11, 3, concentration=[0.1, 1.0], random_state=42)
    h = np.asarray(h)
    h[0] = 1 / 3
    np.testing.assert_array_equal(g, h)
    np.testing.assert_allclose(g[0], [1 / 3] * 3)


@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_banded_ridge_matches_himalaya_deltas(solver, backend):
    x, y, groups = _banded_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        h = HGroupRidgeCV(groups=groups, random_state=0,
                          solver_params={"alphas": ALPHAS, "n_iter": 8,
                                         "progress_bar": False}).fit(x, y)
    m = BandedRidgeCV(groups=groups, alphas=ALPHAS, n_iter=8, random_state=0, solver=solver,
                      backend=backend).fit(x, y)
    np.testing.assert_allclose(m.deltas_, np.asarray(h.deltas_), atol=1e-10)
    np.testing.assert_allclose(m.coef_, np.asarray(h.coef_), atol=TOL)
    assert len({tuple(c) for c in m.best_gammas_.T}) >= 2  # different targets, different bands


def test_banded_ridge_recovers_band_relevance():
    x, y, groups = _banded_data(n=300, scales=(3.0, 0.7, 0.0), t=40)
    m = BandedRidgeCV(groups=groups, alphas=ALPHAS, n_iter=60, random_state=0).fit(x, y)
    gam = m.best_gammas_.mean(1)
    assert gam[0] > gam[1] > gam[2]
    assert gam[2] < 0.1
    # per-band effective penalty alpha / gamma: the irrelevant band is shrunk most
    pen = np.median(-m.deltas_, axis=1)
    assert pen[2] > pen[1] > pen[0]
    xt, yt, _ = _banded_data(n=300, scales=(3.0, 0.7, 0.0), t=40, seed=1)
    split = m.score_split(xt, yt)
    assert split.shape == (3, 40)
    med = np.median(split, axis=1)
    assert med[0] > med[1] > abs(med[2])
    # the bands sum to the R^2 of the centred prediction
    pc = m.predict(xt) - m.predict(xt).mean(0)
    np.testing.assert_allclose(split.sum(0), r2_score(yt, pc + yt.mean(0)), atol=1e-10)


def test_banded_score_split_matches_himalaya():
    x, y, groups = _banded_data()
    x = x - x.mean(0)
    y = y - y.mean(0)
    m = BandedRidgeCV(groups=groups, alphas=ALPHAS, n_iter=10, random_state=0).fit(x, y)
    parts = m.predict(x, split=True)
    assert parts.shape == (3, *y.shape)
    np.testing.assert_allclose(parts.sum(0), m.predict(x), atol=1e-10)
    np.testing.assert_allclose(m.score_split(x, y), np.asarray(h_r2_score_split(y, parts)),
                               atol=1e-10)


def test_banded_groups_as_slices_and_one_band_equals_ridgecv():
    x, y, _ = _banded_data()
    a = BandedRidgeCV(groups=[slice(0, 10), slice(10, 30)], alphas=ALPHAS, n_iter=5,
                      random_state=0).fit(x, y)
    assert a.n_bands_ == 2
    np.testing.assert_array_equal(a.band_of_[:10], 0)
    one = BandedRidgeCV(groups=None, alphas=ALPHAS, n_iter=1).fit(x, y)
    r = RidgeCV(alphas=ALPHAS).fit(x, y)
    np.testing.assert_allclose(one.coef_, r.coef_, atol=1e-12)
    np.testing.assert_array_equal(one.best_alphas_, r.best_alphas_)


# ----------------------------------------------------------------------------- helpers
def test_delayer_shapes_and_zero_fill():
    x = np.arange(12, dtype=float).reshape(6, 2) + 1
    d = Delayer(delays=(0, 1, 3)).fit(x)
    out = d.transform(x)
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[:, :2], x)
    np.testing.assert_array_equal(out[0, 2:4], 0)
    np.testing.assert_array_equal(out[1:, 2:4], x[:-1])
    np.testing.assert_array_equal(out[:3, 4:], 0)
    np.testing.assert_array_equal(out[3:, 4:], x[:-3])
    lead = Delayer(delays=(-1,)).fit_transform(x)
    np.testing.assert_array_equal(lead[:-1], x[1:])
    np.testing.assert_array_equal(lead[-1], 0)
    default = Delayer().fit_transform(x)
    assert default.shape == (6, 8)
    np.testing.assert_array_equal(default[:4, 6:], 0)
    with pytest.raises(DataError, match="delays"):
        Delayer(delays=(1.5,)).fit(x)


def test_leave_one_run_out():
    splits = leave_one_run_out([3, 2, 4])
    assert len(splits) == 3
    np.testing.assert_array_equal(splits[1][1], [3, 4])
    np.testing.assert_array_equal(splits[1][0], [0, 1, 2, 5, 6, 7, 8])
    with pytest.raises(DataError, match="run_lengths"):
        leave_one_run_out([5])


def _tutorial_explainable_variance(data, bias_correction=True, do_zscore=True):
    """voxelwise_tutorials.utils.explainable_variance, copied from the tutorial."""
    from scipy.stats import zscore

    if do_zscore:
        data = zscore(data, axis=1)
    mean_var = data.var(axis=1, dtype=np.float64, ddof=1).mean(axis=0)
    var_mean = data.mean(axis=0).var(axis=0, dtype=np.float64, ddof=1)
    ev = var_mean / mean_var
    if bias_correction:
        n_repeats = data.shape[0]
        ev = ev - (1 - ev) / (n_repeats - 1)
    return ev


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("do_zscore", [True, False])
def test_explainable_variance_matches_tutorial(bias_correction, do_zscore):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((1, 200, 30))
    data = signal * np.linspace(0, 2, 30) + rng.standard_normal((5, 200, 30)) * \
        rng.uniform(0.5, 3, (5, 1, 30))
    ours = explainable_variance(data, bias_correction=bias_correction, do_zscore=do_zscore)
    ref = _tutorial_explainable_variance(data, bias_correction, do_zscore)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    if bias_correction:
        assert abs(ours[0]) < 0.1  # pure noise -> ~0 after bias correction
    assert ours[-1] > 0.5


def test_explainable_variance_noise_free_is_one_and_bad_shape():
    rng = np.random.default_rng(1)
    data = np.repeat(rng.standard_normal((1, 50, 4)), 3, axis=0)
    np.testing.assert_allclose(explainable_variance(data), 1.0)
    with pytest.raises(DataError, match="n_repeats"):
        explainable_variance(data[0])


def test_scores_against_references():
    from scipy.stats import pearsonr
    from sklearn.metrics import r2_score as sk_r2

    rng = np.random.default_rng(2)
    a = rng.standard_normal((50, 4))
    b = a + rng.standard_normal((50, 4))
    a[:, 3] = 1.0
    np.testing.assert_allclose(r2_score(a[:, :3], b[:, :3]),
                               sk_r2(a[:, :3], b[:, :3], multioutput="raw_values"))
    assert r2_score(a, b)[3] == 0.0
    r = correlation_score(a, b)
    np.testing.assert_allclose(r[:3], [pearsonr(a[:, i], b[:, i])[0] for i in range(3)])
    assert r[3] == 0.0
    nn = noise_normalized(np.array([0.2, 0.3, 0.1]), np.array([0.4, 0.6, 0.0]))
    np.testing.assert_allclose(nn[:2], [0.5, 0.5])
    assert np.isnan(nn[2])
    with pytest.raises(DataError, match="shape"):
        r2_score(a, b[:, :2])


def test_bad_inputs_raise_neurofm_errors():
    x, y = _data(t=2)
    with pytest.raises(DataError, match="alphas"):
        RidgeCV(alphas=[-1.0]).fit(x, y)
    with pytest.raises(NeurofmError, match="backend"):
        RidgeCV(backend="jax").fit(x, y)
    with pytest.raises(NeurofmError, match="solver"):
        RidgeCV(solver="cg").fit(x, y)
    with pytest.raises(NeurofmError, match="kernel"):
        KernelRidgeCV(kernel="sigmoid").fit(x, y)
    with pytest.raises(DataError, match="groups"):
        BandedRidgeCV(groups=[0, 1]).fit(x, y)
    with pytest.raises(DataError, match="bands"):
        BandedRidgeCV(groups=np.full(x.shape[1], 1)).fit(x, y)
    with pytest.raises(DataError, match="n_iter"):
        BandedRidgeCV(groups=np.zeros(x.shape[1], int), n_iter=np.ones((3, 2))).fit(x, y)


# ----------------------------------------------------------------------------- xarray
def _voxel_data(n_runs=4, n_t=80, n_feat=6, n_vox=10, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n_runs * n_t, n_feat))
    w = rng.standard_normal((n_feat, n_vox))
    lagged = np.vstack([np.zeros((2, n_feat)), f[:-2]])  # true response lag: 2 samples
    y = lagged @ w + 0.3 * rng.standard_normal((n_runs * n_t, n_vox))
    feats = xr.DataArray(f, dims=("time", "feature"),
                         coords={"feature": [f"f{i}" for i in range(n_feat)],
                                 "band": ("feature", ["a"] * 3 + ["b"] * 3)})
    resp = xr.DataArray(y, dims=("time", "voxel"), coords={"voxel": np.arange(n_vox)})
    return feats, resp, w


def test_fit_encoding_model_recovers_fir_lag():
    feats, resp, w = _voxel_data()
    ds = fit_encoding_model(feats, resp, delays=(1, 2, 3, 4), runs=[80] * 4,
                            alphas=np.logspace(-2, 4, 7))
    assert ds["weights"].dims == ("delay", "feature", "voxel")
    energy = (ds["weights"] ** 2).sum(("feature", "voxel"))
    assert int(energy.idxmax()) == 2
    np.testing.assert_allclose(ds["weights"].sel(delay=2).values, w, atol=0.1)
    assert float(ds["r2"].min()) > 0.8
    assert ds.attrs["cv"] == "leave-one-run-out"
    np.testing.assert_array_equal(ds["voxel"].values, np.arange(10))


def test_fit_encoding_model_banded_with_test_set():
    feats, resp, _ = _voxel_data()
    feats2, resp2, _ = _voxel_data(seed=0)
    ds = fit_encoding_model(feats, resp, delays=(2,), runs=np.repeat(np.arange(4), 80),
                            model="banded", groups="band", n_iter=5, random_state=0,
                            alphas=np.logspace(-2, 4, 7), test=(feats2, resp2))
    assert list(ds["band"].values) == ["a", "b"]
    np.testing.assert_allclose(ds["r2_split"].sum("band"), ds["r2"], atol=1e-2)
    assert ds.attrs["scored_on"] == "test"
    ev = np.ones(10) * 0.9
    assert np.all(noise_normalized(ds["r2"].values, ev) > 0.8 / 0.9)
    with pytest.raises(DataError, match="groups"):
        fit_encoding_model(feats, resp, model="banded")
    with pytest.raises(DataError, match="time points"):
        fit_encoding_model(feats, resp[:10])
