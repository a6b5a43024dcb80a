"""NTF dynamic connectomes: affinities, NonNegativeCP (vs tensorly), rank selection, SBM,
Leiden, the whole pipeline on generated multi-animal calcium data, bad inputs."""

import numpy as np
import pytest
import xarray as xr
from scipy.ndimage import gaussian_filter1d
from sklearn.metrics import normalized_mutual_info_score as nmi

from neurofm.analysis.connectome import (
    DynamicConnectome,
    NonNegativeCP,
    affinity_tensor,
    differential_affinity,
    dynamic_connectome,
    factor_match_score,
    leiden,
    select_rank,
    weighted_sbm,
)
from neurofm.errors import DataError, NeurofmError, NeurofmWarning
from neurofm.schema import make_recording

SWITCH = 120.0


def _planted_tensor(shape=(30, 8, 40), rank=3, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    F = [rng.random((s, rank)) ** 2 for s in shape]
    T = np.einsum("ir,jr,kr->ijk", *F) + noise * rng.random(shape)
    return T, F


def _recordings(n_animals=3, n=20, sfreq=4.0, dur=240.0, seed=0, drop=None):
    """Calcium recordings whose neurons co-vary in halves before SWITCH, by parity after."""
    rng = np.random.default_rng(seed)
    n_t = int(dur * sfreq)
    t = np.arange(n_t) / sfreq
    comm_a = (np.arange(n) >= n // 2).astype(int)
    comm_b = np.arange(n) % 2
    # stimulus-driven latents shared by the animals (one per community and period)
    # (sparse calcium transients: Poisson onsets at 0.4 Hz, 0.5 s rise, 2 s decay)
    kt = np.arange(int(10 * sfreq)) / sfreq
    kernel = (1 - np.exp(-kt / 0.5)) * np.exp(-kt / 2.0)
    spikes = rng.random((4, n_t)) < 0.4 / sfreq
    latents = np.stack([np.convolve(s, kernel)[:n_t] for s in spikes]) * 3
    recs = []
    for a in range(n_animals):
        sig = 0.05 * rng.normal(size=(n, n_t))
        for p, (comm, sel) in enumerate(((comm_a, t < SWITCH), (comm_b, t >= SWITCH))):
            for c in (0, 1):
                gain = rng.uniform(0.9, 1.1)  # animals differ in gain
                rows = np.flatnonzero(comm == c)
                sig[np.ix_(rows, np.flatnonzero(sel))] += gain * latents[2 * p + c][sel]
        names = [f"N{i:02d}" for i in range(n)]
        if drop is not None:
            keep = [i for i in range(n) if i != drop[a]]
            sig, names = sig[keep], [names[i] for i in keep]
        recs.append(make_recording(
            sig + 1.0, channel=names, sfreq=sfreq, modality="calcium", subject=f"worm{a}",
            events=[(0.0, SWITCH, "stim A"), (SWITCH, dur - SWITCH, "stim B")]))
    return recs, comm_a, comm_b


# ------------------------------------------------------------------------ affinities
def test_differential_affinity_derivative_product_values():
    sfreq = 10.0
    t = np.arange(200) / sfreq
    x = np.stack([np.sin(t), np.sin(t) * 2 + 3, -np.sin(t)])
    ds = make_recording(x, channel=["a", "b", "c"], sfreq=sfreq, modality="calcium")
    aff = differential_affinity(ds, smooth_s=0)
    assert aff.dims == ("time", "pair") and aff.shape == (200, 3)
    assert list(aff["neuron_i"].values) == ["a", "a", "b"]
    assert list(aff["neuron_j"].values) == ["b", "c", "c"]
    dx = np.gradient(np.sin(t)) * sfreq
    z = (dx - dx.mean()) / dx.std()
    np.testing.assert_allclose(aff.values[:, 0], z * z, rtol=1e-4, atol=1e-5)  # a,b same
    np.testing.assert_allclose(aff.values[:, 1], 0.0, atol=1e-6)  # a,c opposite -> 0
    sign = differential_affinity(ds, method="sign_agreement", smooth_s=0)
    np.testing.assert_array_equal(np.unique(sign.values[:, 0]), [1.0])
    corr = differential_affinity(ds, method="windowed_corr", window_s=2.0)
    np.testing.assert_allclose(corr.values[20:-20, 0], 1.0, atol=1e-3)
    np.testing.assert_allclose(corr.values[20:-20, 1], 0.0, atol=1e-6)


def test_differential_affinity_excludes_nan_channels_and_reports():
    recs, _, _ = _recordings(n_animals=1, n=5)
    ds = recs[0].copy(deep=True)
    ds["signal"][1, 10] = np.nan
    with pytest.warns(NeurofmWarning, match="N01"):
        aff = differential_affinity(ds)
    assert aff.attrs["excluded"] == ["N01"]
    assert "N01" not in set(aff["neuron_i"].values) | set(aff["neuron_j"].values)
    assert aff.sizes["pair"] == 6 and float(aff.min()) >= 0


def test_affinity_tensor_common_neurons_and_resampling():
    recs, _, _ = _recordings(n_animals=3, n=6, drop=[0, 5, 3])  # each misses one neuron
    # one animal at twice the rate: resampled to the lowest rate
    ds = recs[2]
    fast = make_recording(np.repeat(ds["signal"].values, 2, axis=1), channel=ds["channel"].values,
                          sfreq=8.0, modality="calcium", subject="worm2")
    tens = affinity_tensor([recs[0], recs[1], fast])
    assert tens.dims == ("time", "animal", "pair")
    assert tens.attrs["neurons"] == ["N01", "N02", "N04"]  # intersection, first's order
    assert tens.sizes["pair"] == 3 and tens.attrs["sfreq"] == 4.0
    assert list(tens["animal"].values) == ["worm0", "worm1", "worm2"]
    assert tens.sizes["time"] == 960
    given = affinity_tensor(recs, neurons=["N04", "N01"])
    assert given.attrs["neurons"] == ["N04", "N01"] and given.sizes["pair"] == 1


# -------------------------------------------------------------------------------- NTF
def test_nonnegative_cp_recovers_planted_factors():
    T, F = _planted_tensor()
    m = NonNegativeCP(3, n_iter_max=500, random_state=0).fit(T)
    assert factor_match_score(F, m.factors_, weights_b=m.weights_) > 0.95
    assert m.reconstruction_error_ < 0.02
    rel = np.linalg.norm(T - m.reconstruct()) / np.linalg.norm(T)
    assert rel == pytest.approx(m.reconstruction_error_, rel=1e-6)
    assert all((f >= 0).all() for f in m.factors_)
    assert np.all(np.diff(m.weights_) <= 0)


@pytest.mark.parametrize("n_iter", [10, 60])
def test_nonnegative_cp_error_not_above_tensorly_hals(n_iter):
    tl_decomp = pytest.importorskip("tensorly.decomposition")
    import tensorly as tl

    T, _ = _planted_tensor(shape=(25, 6, 30), rank=4, noise=0.05, seed=3)
    ours = NonNegativeCP(4, n_iter_max=n_iter, tol=0, random_state=5).fit(T)
    cp = tl_decomp.non_negative_parafac_hals(T, 4, n_iter_max=n_iter, init="random",
                                             random_state=5, tol=0)
    err_tl = np.linalg.norm(T - tl.cp_to_tensor(cp)) / np.linalg.norm(T)
    assert ours.n_iter_ == n_iter
    assert ours.reconstruction_error_ <= err_tl * (1 + 1e-9)


def test_nonnegative_cp_torch_float32_matches_numpy():
    T, _ = _planted_tensor()
    a = NonNegativeCP(3, n_iter_max=60, random_state=0).fit(T)
    b = NonNegativeCP(3, n_iter_max=60, random_state=0, backend="torch",
                      dtype="float32").fit(T)
    assert b.reconstruction_error_ == pytest.approx(a.reconstruction_error_, rel=1e-3)
    assert factor_match_score(a.factors_, b.factors_, a.weights_, b.weights_) > 0.99


def test_nonnegative_cp_missing_entries_mask():
    T, F = _planted_tensor(noise=0.0)
    mask = np.random.default_rng(1).random(T.shape) > 0.3
    Tn = np.where(mask, T, np.nan)
    m = NonNegativeCP(3, n_iter_max=500, random_state=0).fit(Tn, mask=mask)
    assert factor_match_score(F, m.factors_, weights_b=m.weights_) > 0.95
    held = np.linalg.norm((T - m.reconstruct())[~mask]) / np.linalg.norm(T[~mask])
    assert held < 0.02  # the missing entries are predicted
    # without the mask, NaN is refused
    with pytest.raises(DataError, match="mask"):
        NonNegativeCP(3).fit(Tn)


def test_select_rank_reports_elbow_and_stability():
    T, _ = _planted_tensor(shape=(20, 6, 25), rank=3, noise=0.005, seed=2)
    sel = select_rank(T, ranks=[1, 2, 3, 4, 5], n_seeds=3, n_iter_max=300)
    ev = sel.table["explained_variance"].max("seed").values
    assert np.all(np.diff(ev) > -1e-6)  # more components never explain less
    assert ev[2] > 0.999 and ev[1] < 0.99
    assert sel.rank == 3
    assert sel.table["stability"].sel(rank=3) > 0.95
    assert sel.models[3].reconstruction_error_ == pytest.approx(
        sel.table["error"].sel(rank=3).min().item())


# ------------------------------------------------------------------------ communities
def _planted_graph(N=60, B=3, w_in=4.0, w_out=1.0, p_in=0.9, p_out=0.6, theta_sd=0.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.permutation(np.repeat(np.arange(B), N // B))
    mean = np.where(z[:, None] == z[None], w_in, w_out)
    if theta_sd:
        th = np.exp(rng.normal(0, theta_sd, N))
        mean = mean * np.outer(th, th)
    p = np.where(z[:, None] == z[None], p_in, p_out)
    W = rng.exponential(mean) * (rng.random((N, N)) < p)
    W = np.triu(W, 1)
    return W + W.T, z


def test_weighted_sbm_recovers_blocks_and_their_number():
    W, z = _planted_graph(N=60, B=3)
    labels, info = weighted_sbm(W, n_blocks=range(1, 6), return_info=True)
    assert nmi(z, labels) > 0.9
    assert info["n_blocks"] == 3
    assert info["description_length"][(3, False)] < info["description_length"][(1, False)]


def test_weighted_sbm_degree_correction_by_description_length():
    W, z = _planted_graph(N=60, B=3, p_in=1.0, p_out=1.0, theta_sd=0.8, seed=1)
    labels, info = weighted_sbm(W, n_blocks=range(1, 6), return_info=True)
    assert info["degree_corrected"] is True
    assert nmi(z, labels) > 0.9


def test_leiden_wrapper():
    W, z = _planted_graph(N=60, B=3)
    assert nmi(z, leiden(W)) > 0.9
    assert leiden(W, resolution=0.01).max() == 0  # tiny resolution: one community


# ------------------------------------------------------------------- whole pipeline
def test_dynamic_connectome_switching_communities():
    # one component per (period, community): the communities' transients are independent
    recs, comm_a, comm_b = _recordings()
    dc = dynamic_connectome(recs, rank=4, n_blocks=2)
    assert isinstance(dc, DynamicConnectome)
    tf = dc.temporal.values  # (time, 4)
    t = dc.temporal["time"].values
    before, after = tf[t < SWITCH - 5].mean(0), tf[t > SWITCH + 5].mean(0)
    early = np.flatnonzero(before > 2 * after)
    late = np.flatnonzero(after > 2 * before)
    assert len(early) == 2 and len(late) == 2  # the temporal factors switch
    # where the smoothed dominance of the early components flips
    dom = gaussian_filter1d(tf[:, early].sum(1) - tf[:, late].sum(1), 20)
    t_switch = t[np.flatnonzero(dom < 0)[0]]
    assert abs(t_switch - SWITCH) < 10
    for k in early:  # community vs the rest = the planted partition of that period
        assert nmi(comm_a, dc.communities.sel(component=k).values) > 0.9
    for k in late:
        assert nmi(comm_b, dc.communities.sel(component=k).values) > 0.9
    assert dc.animal.shape == (3, 4) and (dc.animal.values > 0.3).all()
    assert dc.affinity.shape == (4, 20, 20)
    np.testing.assert_allclose(dc.affinity.values, dc.affinity.values.transpose(0, 2, 1))
    assert list(dc.events["description"]) == ["stim A", "stim B"]
    import matplotlib

    matplotlib.use("Agg")
    assert dc.plot_temporal() is not None and dc.plot_affinity(int(early[0])) is not None
    assert dc.plot_animals() is not None


# ----------------------------------------------------------------------- bad inputs
def test_bad_inputs():
    recs, _, _ = _recordings(n_animals=2, n=4)
    nan = recs[0].copy(deep=True)
    nan["signal"][:] = np.nan
    with pytest.raises(DataError, match="at least 2 channels"), pytest.warns(NeurofmWarning):
        differential_affinity(nan)
    with pytest.raises(NeurofmError, match="method"):
        differential_affinity(recs[0], method="granger")
    with pytest.raises(NeurofmError, match="smooth_s"):
        affinity_tensor(recs, smooth_s=-1)
    with pytest.raises(DataError, match="missing N09"):
        affinity_tensor(recs, neurons=["N00", "N09"])
    other = make_recording(np.random.rand(3, 100), channel=["x", "y", "z"], sfreq=4.0,
                           modality="calcium")
    with pytest.raises(DataError, match="share fewer than 2 neurons"):
        affinity_tensor([recs[0], other])
    T, _ = _planted_tensor(shape=(5, 2, 3))
    with pytest.raises(DataError, match="rank=7 is larger"):
        NonNegativeCP(7).fit(T)
    with pytest.raises(DataError, match="non-negative"):
        NonNegativeCP(2).fit(-T)
    with pytest.raises(DataError, match="3-way"):
        NonNegativeCP(2).fit(T[0])
    with pytest.raises(DataError, match="all zeros"):
        NonNegativeCP(2).fit(np.zeros((3, 3, 3)))
    with pytest.raises(NeurofmError, match="rank"):
        NonNegativeCP(0).fit(T)
    with pytest.raises(DataError, match="symmetric"):
        weighted_sbm(np.triu(np.ones((4, 4))))
    with pytest.raises(DataError, match="non-negative"):
        weighted_sbm(-np.ones((4, 4)))
    with pytest.raises(NeurofmError, match="n_blocks"):
        weighted_sbm(np.ones((4, 4)), n_blocks=9)
    with pytest.raises(DataError, match="NaN"):
        leiden(np.full((3, 3), np.nan))
    with pytest.raises(DataError):
        dynamic_connectome([recs[0], other], rank=2)
    da = xr.DataArray(T, dims=("time", "animal", "pair"))
    assert NonNegativeCP(2, random_state=0).fit(da).factors_[0].shape == (5, 2)
