"""RDM estimation: parity with rsatoolbox, properties, input handling and errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from neurofm.analysis import rsa
from neurofm.errors import DataError, NeurofmError

rsatoolbox = pytest.importorskip("rsatoolbox")
from rsatoolbox.data import Dataset
from rsatoolbox.data.noise import prec_from_residuals as rsat_prec
from rsatoolbox.rdm import calc_rdm

# rsatoolbox's _build_rdms casts NaN into an int array while building descriptors
pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid value encountered in cast:RuntimeWarning:numpy._core.numeric")

TOL = 1e-10
N_COND, N_REP, N_CH = 8, 3, 12


def _data(seed=0, poisson=False):
    rng = np.random.default_rng(seed)
    cond = np.tile(np.array([f"c{i}" for i in range(N_COND)]), N_REP)
    if poisson:
        x = rng.poisson(3.0, (N_COND * N_REP, N_CH)).astype(float)
    else:
        x = rng.standard_normal((N_COND * N_REP, N_CH)) + 0.3
    return x, cond


def _ref(x, cond, method, **kw):
    ds = Dataset(x.copy(), obs_descriptors={"cond": cond})
    return calc_rdm(ds, method=method, descriptor="cond", **kw).get_vectors()[0]


@pytest.mark.parametrize("remove_mean", [False, True])
@pytest.mark.parametrize("method", ["euclidean", "correlation", "mahalanobis", "crossnobis",
                                    "poisson"])
def test_rdm_matches_rsatoolbox(method, remove_mean):
    x, cond = _data(1, poisson=method == "poisson")
    kw = {}
    if method in ("mahalanobis", "crossnobis"):
        kw["noise"] = rsat_prec(np.random.default_rng(9).standard_normal((40, N_CH)))
    ref = _ref(x, cond, method, remove_mean=remove_mean, **kw)
    ours = rsa.compute_rdm(x, conditions=cond, method=method, remove_mean=remove_mean, **kw)
    np.testing.assert_allclose(rsa.upper(ours), ref, atol=TOL, rtol=0)
    assert ours.attrs["method"] == method and ours.attrs["n_channels"] == N_CH
    assert list(ours.coords["condition"].values) == sorted(set(cond))


def test_crossnobis_default_folds_identity_noise_matches_rsatoolbox():
    x, cond = _data(2)
    ours = rsa.compute_rdm(x, conditions=cond, method="crossnobis")
    np.testing.assert_allclose(rsa.upper(ours), _ref(x, cond, "crossnobis"), atol=TOL, rtol=0)
    assert ours.attrs["n_folds"] == N_REP


@pytest.mark.parametrize("remove_mean", [False, True])
@pytest.mark.parametrize("with_noise", [False, True])
def test_crossnobis_two_folds_matches_rsatoolbox(with_noise, remove_mean):
    # two balanced folds take a one-product shortcut; unbalanced ones the general path
    x, cond = _data(17)
    x, cond = x[: 2 * N_COND], cond[: 2 * N_COND]
    kw = {"noise": rsat_prec(np.random.default_rng(17).standard_normal((40, N_CH)))} \
        if with_noise else {}
    ref = _ref(x, cond, "crossnobis", remove_mean=remove_mean, **kw)
    ours = rsa.compute_rdm(x, conditions=cond, method="crossnobis", remove_mean=remove_mean,
                           **kw)
    np.testing.assert_allclose(rsa.upper(ours), ref, atol=TOL, rtol=0)
    tch = rsa.compute_rdm(x, conditions=cond, method="crossnobis", remove_mean=remove_mean,
                          device="cpu", **kw)
    np.testing.assert_allclose(tch.values, ours.values, atol=TOL, rtol=0)
    folds = np.r_[np.zeros(N_COND, int), np.ones(N_COND, int), 1]
    x3 = np.vstack([x, x[:1] + 0.5])
    cond3 = np.r_[cond, cond[:1]]
    ds = Dataset(x3.copy(), obs_descriptors={"cond": cond3, "fold": folds})
    ref3 = calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="fold",
                    remove_mean=remove_mean, **kw).get_vectors()[0]
    ours3 = rsa.compute_rdm(x3, conditions=cond3, folds=folds, method="crossnobis",
                            remove_mean=remove_mean, **kw)
    np.testing.assert_allclose(rsa.upper(ours3), ref3, atol=TOL, rtol=0)


def test_crossnobis_explicit_unbalanced_folds_match_rsatoolbox():
    x, cond = _data(3)
    folds = np.repeat(np.arange(N_REP), N_COND)
    extra = np.random.default_rng(3).standard_normal((2, N_CH))
    x = np.vstack([x, extra])
    cond = np.concatenate([cond, ["c1", "c4"]])
    folds = np.concatenate([folds, [2, 0]])  # c1 and c4 get two observations in one fold
    ds = Dataset(x.copy(), obs_descriptors={"cond": cond, "fold": folds})
    ref = calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="fold")
    ours = rsa.compute_rdm(x, conditions=cond, folds=folds, method="crossnobis")
    np.testing.assert_allclose(rsa.upper(ours), ref.get_vectors()[0], atol=TOL, rtol=0)


def test_crossnobis_one_precision_per_fold_matches_rsatoolbox():
    x, cond = _data(4)
    rng = np.random.default_rng(4)
    precs = [rsat_prec(rng.standard_normal((40, N_CH))) for _ in range(N_REP)]
    ref = _ref(x, cond, "crossnobis", noise=[p.copy() for p in precs])
    ours = rsa.compute_rdm(x, conditions=cond, method="crossnobis", noise=precs)
    np.testing.assert_allclose(rsa.upper(ours), ref, atol=TOL, rtol=0)
    stacked = rsa.compute_rdm(x, conditions=cond, method="crossnobis", noise=np.stack(precs))
    np.testing.assert_allclose(stacked.values, ours.values, atol=TOL, rtol=0)


def test_poisson_cv_averages_all_folds_unlike_rsatoolbox():
    # rsatoolbox's calc_rdm_poisson_cv returns only its last fold (documented bug). Relabel
    # the folds so that each one is last in turn: the mean of those outputs is the correct
    # cross-validated RDM, which neurofm must return.
    x, cond = _data(5, poisson=True)
    folds = np.repeat(np.arange(N_REP), N_COND)
    singles = []
    for last in range(N_REP):
        labels = (folds - last - 1) % N_REP
        ds = Dataset(x.copy(), obs_descriptors={"cond": cond, "fold": labels})
        singles.append(calc_rdm(ds, method="poisson_cv", descriptor="cond",
                                cv_descriptor="fold").get_vectors()[0])
    ours = rsa.upper(rsa.compute_rdm(x, conditions=cond, folds=folds, method="poisson_cv"))
    np.testing.assert_allclose(ours, np.mean(singles, axis=0), atol=TOL, rtol=0)
    assert np.abs(ours - singles[-1]).max() > 1e-3  # rsatoolbox's single fold differs
    default = rsa.compute_rdm(x, conditions=cond, method="poisson_cv")
    np.testing.assert_allclose(rsa.upper(default), ours, atol=TOL, rtol=0)


@pytest.mark.parametrize("shrinkage", ["diag", "eye"])
def test_prec_from_residuals_matches_rsatoolbox(shrinkage):
    res = np.random.default_rng(6).standard_normal((30, 10)) * np.linspace(0.5, 2, 10)
    ref = rsat_prec(res.copy(), method=f"shrinkage_{shrinkage}")
    np.testing.assert_allclose(rsa.prec_from_residuals(res, shrinkage=shrinkage), ref,
                               atol=TOL, rtol=1e-12)
    ref_dof = rsat_prec(res.copy(), method=f"shrinkage_{shrinkage}", dof=25)
    np.testing.assert_allclose(rsa.prec_from_residuals(res, shrinkage=shrinkage, dof=25),
                               ref_dof, atol=TOL, rtol=1e-12)


def test_prec_from_residuals_fixed_shrinkage_and_runs():
    res = np.random.default_rng(7).standard_normal((50, 6))
    cov = np.cov(res, rowvar=False)
    np.testing.assert_allclose(rsa.prec_from_residuals(res, shrinkage=0.0), np.linalg.inv(cov),
                               rtol=1e-10)
    np.testing.assert_allclose(rsa.prec_from_residuals(res, shrinkage=1.0),
                               np.diag(1 / np.diag(cov)), rtol=1e-10)
    half = 0.5 * cov + 0.5 * np.diag(np.diag(cov))
    np.testing.assert_allclose(rsa.prec_from_residuals(res, shrinkage=0.5), np.linalg.inv(half),
                               rtol=1e-10)
    runs = rsa.prec_from_residuals(np.stack([res, res[::-1]]))
    assert runs.shape == (2, 6, 6)
    np.testing.assert_allclose(runs[0], rsa.prec_from_residuals(res), rtol=1e-12)


def test_dataarray_input_with_condition_coordinate():
    x, cond = _data(8)
    da = xr.DataArray(x, dims=("trial", "channel"),
                      coords={"stimulus": ("trial", cond), "channel": np.arange(N_CH)})
    before = da.copy(deep=True)
    rdm = rsa.compute_rdm(da, conditions="stimulus", method="correlation")
    np.testing.assert_allclose(rdm.values,
                               rsa.compute_rdm(x, conditions=cond, method="correlation").values,
                               atol=TOL)
    assert rdm.dims == ("condition", "condition2")
    assert rdm.attrs["condition_name"] == "stimulus"
    assert np.asarray(rdm).shape == (N_COND, N_COND)
    xr.testing.assert_identical(da, before)
    # channel-first layout is found through the coordinate's dimension
    rdm_t = rsa.compute_rdm(da.T, conditions="stimulus", method="correlation")
    np.testing.assert_allclose(rdm_t.values, rdm.values, atol=TOL)


def test_ndarray_without_labels_uses_rows_as_conditions():
    emb = np.random.default_rng(10).standard_normal((6, 20))
    rdm = rsa.compute_rdm(emb, method="euclidean")
    assert rdm.shape == (6, 6)
    d01 = np.sum((emb[0] - emb[1]) ** 2) / 20
    assert rdm.values[0, 1] == pytest.approx(d01, abs=TOL)


@pytest.mark.parametrize("method, noise", [
    ("euclidean", None), ("correlation", None), ("crossnobis", None), ("poisson_cv", None),
    ("mahalanobis", "one"), ("crossnobis", "per_fold"),
])
def test_float32_and_torch_backends_agree(method, noise):
    x, cond = _data(11, poisson=method.startswith("poisson"))
    rng = np.random.default_rng(11)
    precs = [rsat_prec(rng.standard_normal((40, N_CH))) for _ in range(N_REP)]
    kw = {"one": {"noise": precs[0]}, "per_fold": {"noise": precs}, None: {}}[noise]
    ref = rsa.compute_rdm(x, conditions=cond, method=method, remove_mean=True, **kw).values
    f32 = rsa.compute_rdm(x, conditions=cond, method=method, dtype="float32", remove_mean=True,
                          **kw)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32.values, ref, atol=1e-5, rtol=1e-4)
    pytest.importorskip("torch")
    tch = rsa.compute_rdm(x, conditions=cond, method=method, device="cpu", remove_mean=True,
                          **kw)
    np.testing.assert_allclose(tch.values, ref, atol=TOL, rtol=0)


def test_upper_and_square_round_trip_in_squareform_order():
    from scipy.spatial.distance import squareform

    x, cond = _data(12)
    rdm = rsa.compute_rdm(x, conditions=cond)
    vec = rsa.upper(rdm)
    np.testing.assert_array_equal(vec, squareform(rdm.values, checks=False))
    back = rsa.square(vec, labels=rdm.coords["condition"].values)
    xr.testing.assert_allclose(back, rdm.drop_attrs() if hasattr(rdm, "drop_attrs") else rdm)
    stack = rsa.square(np.stack([vec, 2 * vec]))
    assert stack.dims == ("rdm", "condition", "condition2")
    np.testing.assert_array_equal(rsa.upper(stack)[1], 2 * vec)
    vec[0] = -1.0  # upper returns a copy
    assert rdm.values[0, 1] != -1.0


def test_compute_rdms_stacks_and_aligns_labels():
    rng = np.random.default_rng(13)
    cond = np.repeat(["a", "b", "c", "d"], 2)
    sets = [rng.standard_normal((8, 5)) for _ in range(3)]
    rdms = rsa.compute_rdms(sets, conditions=cond, method="correlation", names=["s1", "s2", "s3"])
    assert rdms.dims == ("rdm", "condition", "condition2")
    assert list(rdms.coords["rdm"].values) == ["s1", "s2", "s3"]
    for i, ds in enumerate(sets):
        np.testing.assert_allclose(rdms.values[i],
                                   rsa.compute_rdm(ds, conditions=cond,
                                                   method="correlation").values)
    per = rsa.compute_rdms(sets, conditions=[cond, cond, cond], method="correlation")
    np.testing.assert_allclose(per.values, rdms.values)
    with pytest.raises(DataError, match="same condition labels"):
        rsa.compute_rdms([sets[0], sets[1]], conditions=[cond, np.repeat(list("abcz"), 2)])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_cond=st.integers(2, 7), n_rep=st.integers(2, 3),
       method=st.sampled_from(["euclidean", "correlation", "crossnobis", "poisson"]))
def test_rdm_properties(seed, n_cond, n_rep, method):
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, (n_cond * n_rep, 4)) if method == "poisson" else \
        rng.standard_normal((n_cond * n_rep, 4))
    cond = np.tile(np.arange(n_cond), n_rep)
    x_before = x.copy()
    cond_before = cond.copy()
    rdm = rsa.compute_rdm(x, conditions=cond, method=method).values
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(cond, cond_before)
    np.testing.assert_array_equal(rdm, rdm.T)
    np.testing.assert_array_equal(np.diag(rdm), 0.0)
    # permutation equivariance: shuffle the observations and rename the conditions
    perm_obs = rng.permutation(len(cond))
    relabel = rng.permutation(n_cond)
    folds = np.repeat(np.arange(n_rep), n_cond)
    base = rsa.compute_rdm(x, conditions=cond, folds=folds if method == "crossnobis" else None,
                           method=method).values
    shuffled = rsa.compute_rdm(x[perm_obs], conditions=relabel[cond][perm_obs],
                               folds=folds[perm_obs] if method == "crossnobis" else None,
                               method=method).values
    # condition c of the base is condition relabel[c] of the shuffled RDM
    np.testing.assert_allclose(shuffled[np.ix_(relabel, relabel)], base, atol=1e-10)


def test_rdm_inputs_are_not_mutated():
    x, cond = _data(14)
    noise = rsat_prec(np.random.default_rng(14).standard_normal((40, N_CH)))
    copies = (x.copy(), cond.copy(), noise.copy())
    rsa.compute_rdm(x, conditions=cond, method="crossnobis", noise=noise, remove_mean=True)
    rsa.compute_rdm(x, conditions=cond, method="mahalanobis", noise=noise, remove_mean=True)
    for a, b in zip((x, cond, noise), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"conditions": np.zeros(24)}, DataError, "at least 2 conditions"),
    ({"conditions": np.arange(23)}, DataError, "one label per observation"),
    ({"method": "cityblock"}, NeurofmError, "method must be one of"),
    ({"dtype": "float16"}, NeurofmError, "dtype must be one of"),
    ({"method": "crossnobis", "conditions": np.r_[np.arange(8).repeat(3)[:-1], 0]}, DataError,
     "same number of repetitions"),
    ({"method": "euclidean", "noise": np.eye(12)}, NeurofmError, "noise is only used"),
    ({"method": "mahalanobis", "noise": np.eye(5)}, DataError, r"shape \(12, 12\)"),
    ({"method": "euclidean", "folds": np.zeros(24)}, NeurofmError, "folds are only used"),
    ({"conditions": "stimulus"}, NeurofmError, "needs an xr.DataArray"),
])
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    x, cond = _data(15)
    kwargs = {"conditions": cond, **kwargs}
    with pytest.raises(error, match=match):
        rsa.compute_rdm(x, **kwargs)


def test_bad_data_values_raise():
    x, cond = _data(16)
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(DataError, match="observation 3, channel 5"):
        rsa.compute_rdm(bad, conditions=cond)
    with pytest.raises(DataError, match="2-D"):
        rsa.compute_rdm(x[None], conditions=cond)
    with pytest.raises(DataError, match="Poisson"):
        rsa.compute_rdm(x - 5, conditions=cond, method="poisson")
    flat = x.copy()
    flat[cond == "c2"] = 1.0
    with pytest.raises(DataError, match="constant patterns"):
        rsa.compute_rdm(flat, conditions=cond, method="correlation")
    folds = np.repeat(np.arange(N_REP), N_COND)
    folds[cond == "c3"] = 0  # c3 only in fold 0
    with pytest.raises(DataError, match="'c3' is missing from fold 1"):
        rsa.compute_rdm(x, conditions=cond, folds=folds, method="crossnobis")
    da = xr.DataArray(x, dims=("trial", "channel"))
    with pytest.raises(DataError, match="no coordinate 'condition'"):
        rsa.compute_rdm(da)


def test_rdm_input_validation_for_square_and_upper():
    with pytest.raises(DataError, match="symmetric"):
        rsa.upper(np.array([[0, 1, 2], [1, 0, 3], [2, 4, 0.0]]))
    with pytest.raises(DataError, match="zero"):
        rsa.upper(np.array([[1, 1], [1, 0.0]]))
    with pytest.raises(DataError, match="K\\(K-1\\)/2"):
        rsa.square(np.ones(4))
    with pytest.raises(DataError, match="at least 2 conditions"):
        rsa.upper(np.zeros((1, 1)))
    with pytest.raises(DataError, match="infinite"):
        rsa.upper(np.array([0.0, np.inf, 1.0]))
