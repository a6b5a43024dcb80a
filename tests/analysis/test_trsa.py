"""Topological RSA: GT / geodesic transforms vs their published definitions, families,
identification on generated regions."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata

from neurofm.analysis import rsa, trsa
from neurofm.errors import DataError, NeurofmError

K = 12
N_PAIRS = K * (K - 1) // 2


# --- direct implementations of the published definitions (Lin & Kriegeskorte 2024) -------


def _minmax(x):
    return (x - x.min()) / (x.max() - x.min())


def gt_reference(d, lower, upper):
    """GT as defined by the original tRSA code: masks on the rank-scaled vector."""
    x = _minmax(rankdata(d))
    lo, hi = np.quantile(x, lower), np.quantile(x, upper)
    g = x.copy()
    g[x < lo] = 0
    mid = (x >= lo) & (x <= hi)
    g[mid] = (x[mid] - lo) / (hi - lo)
    g[x > hi] = 1
    return g


def geodesic_reference(d, variant, p=0.05, k=1, rank_after=True):
    """The original geodesic transform: a networkx graph from the square matrix (which
    drops zero weights), edge removal by variant, Floyd-Warshall, optional rank."""
    nx = pytest.importorskip("networkx")
    x = _minmax(d) if variant == "twostep" else _minmax(rankdata(d))
    graph = nx.from_numpy_array(squareform(x))
    if variant == "twostep":
        drop = [(a, b) for a, b, w in graph.edges.data("weight") if w == 1]
    elif variant == "p_shortest":
        thr = np.quantile(x, p)
        drop = [(a, b) for a, b, w in graph.edges.data("weight") if w > thr]
    else:
        n_near = k if variant == "k_nearest" else int(p * graph.number_of_nodes())

        def nearest(node):
            ranked = sorted((e[2]["weight"], e[1]) for e in graph.edges(node, data=True))
            return [v for _, v in ranked[:n_near]]

        drop = [(a, b) for a, b, w in graph.edges.data("weight") if b not in nearest(a)]
    graph.remove_edges_from(drop)
    geo = squareform(np.array(nx.floyd_warshall_numpy(graph)))
    return rankdata(geo) if rank_after else geo


@pytest.fixture(scope="module")
def rdm_vec():
    return np.abs(np.random.default_rng(0).standard_normal(N_PAIRS)) + 1.5


# --- GT transform ----------------------------------------------------------------------


@pytest.mark.parametrize("lower, upper", [(0.2, 0.8), (0.4, 0.6), (0.0, 0.075), (0.1, 0.95),
                                          (0.0, 1.0)])
def test_gt_matches_original_definition(rdm_vec, lower, upper):
    np.testing.assert_allclose(trsa.gt_transform(rdm_vec, lower, upper),
                               gt_reference(rdm_vec, lower, upper), atol=1e-12)


def test_gt_is_per_rdm_and_keeps_the_input_form(rdm_vec):
    stack = np.stack([rdm_vec, 10 * rdm_vec ** 2])  # same ranks, different scales
    out = trsa.gt_transform(stack)
    np.testing.assert_allclose(out[0], out[1], atol=1e-12)
    labels = [f"s{i}" for i in range(K)]
    da = rsa.square(rdm_vec, labels=labels)
    before = da.copy(deep=True)
    gt_da = trsa.gt_transform(da, 0.3, 0.7)
    assert isinstance(gt_da, xr.DataArray) and gt_da.dims == ("condition", "condition2")
    assert list(gt_da.condition.values) == labels and gt_da.attrs["gt_upper"] == 0.7
    np.testing.assert_allclose(rsa.upper(gt_da), gt_reference(rdm_vec, 0.3, 0.7), atol=1e-12)
    xr.testing.assert_identical(da, before)
    sq = trsa.gt_transform(squareform(rdm_vec))
    assert sq.shape == (K, K) and np.all(np.diag(sq) == 0)


def test_gt_rsatoolbox_mode_matches_rsatoolbox_where_its_bug_is_silent():
    rtb = pytest.importorskip("rsatoolbox")
    from rsatoolbox.rdm.transform import geotopological_transform

    rng = np.random.default_rng(1)
    stack = np.abs(rng.standard_normal((3, N_PAIRS))) + 2.0  # all quantiles > 1: no bug
    ref = geotopological_transform(rtb.rdm.RDMs(stack.copy()), 0.2, 0.8).get_vectors()
    ours = trsa.gt_transform(stack, 0.2, 0.8, method="rsatoolbox")
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # with values in [0, 1] rsatoolbox saturates rescaled values above the u-quantile to 1
    # (its documented bug); neurofm keeps the clipped linear band of the definition
    unit = rng.random((2, N_PAIRS))
    buggy = geotopological_transform(rtb.rdm.RDMs(unit.copy()), 0.2, 0.8).get_vectors()
    ours = trsa.gt_transform(unit, 0.2, 0.8, method="rsatoolbox")
    lo, hi = np.quantile(unit, 0.2), np.quantile(unit, 0.8)
    np.testing.assert_allclose(ours, np.clip((unit - lo) / (hi - lo), 0, 1), atol=1e-12)
    assert np.abs(buggy - ours).max() > 0.1


def test_gt_sigmoid_and_degenerate_band(rdm_vec):
    x = _minmax(rankdata(rdm_vec))
    np.testing.assert_allclose(trsa.gt_transform(rdm_vec, method="sigmoid"),
                               1 / (1 + np.exp(-10 * (x - 0.5))), atol=1e-12)
    steps = np.repeat([1.0, 2.0, 3.0], [20, 26, 20])
    out = trsa.gt_transform(steps, 0.4, 0.6)
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert np.all(out[steps == 3.0] == 1.0) and np.all(out[steps == 1.0] == 0.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lower=st.floats(0, 0.9), width=st.floats(0.05, 1))
def test_gt_is_monotone_bounded_and_never_mutates(seed, lower, width):
    upper = min(lower + width, 1.0)
    d = np.random.default_rng(seed).gamma(2.0, 1.0, 28)
    d_before = d.copy()
    g = trsa.gt_transform(d, lower, upper)
    np.testing.assert_array_equal(d, d_before)
    order = np.argsort(d)
    assert np.all(np.diff(g[order]) >= -1e-12)
    assert g.min() >= 0 and g.max() <= 1


# --- geodesic transform ----------------------------------------------------------------


@pytest.mark.parametrize("variant, kwargs", [
    ("twostep", {}), ("p_shortest", {"p": 0.05}), ("p_shortest", {"p": 0.3}),
    ("k_nearest", {"k": 1}), ("k_nearest", {"k": 3}), ("p_nearest", {"p": 0.3}),
])
def test_geodesic_reference_mode_matches_original_definition(rdm_vec, variant, kwargs):
    source = gt_reference(rdm_vec, 0.2, 0.8) if variant == "twostep" else rdm_vec
    for rank_after in (True, False):
        ref = geodesic_reference(source, variant, rank_after=rank_after, **kwargs)
        ours = trsa.geodesic_transform(rdm_vec, variant=variant, zero_is_edge=False,
                                       knn_rule="reference", rank_after=rank_after,
                                       finite=False, **kwargs)
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_geodesic_twostep_matches_rsatoolbox(rdm_vec):
    rtb = pytest.importorskip("rsatoolbox")
    from rsatoolbox.rdm.transform import geodesic_transform as rtb_geodesic

    g = gt_reference(rdm_vec, 0.2, 0.8)
    ref = rtb_geodesic(rtb.rdm.RDMs(g[None].copy())).get_vectors()[0]
    ours = trsa.geodesic_transform(rdm_vec, variant="twostep", zero_is_edge=False,
                                   rank_after=False, finite=False)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_zero_weight_edges_are_kept_by_default(rdm_vec):
    gt = trsa.gt_transform(rdm_vec, 0.2, 0.8)
    zero = gt == 0
    fixed = trsa.geodesic_transform(rdm_vec, rank_after=False)
    faithful = trsa.geodesic_transform(rdm_vec, rank_after=False, zero_is_edge=False)
    assert np.all(fixed[zero] == 0)
    assert np.all(faithful[zero] > 0)  # the reference artefact: closest pairs lose their edge


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000),
       variant=st.sampled_from(["twostep", "p_shortest", "k_nearest"]))
def test_geodesic_never_exceeds_the_direct_edge(seed, variant):
    d = np.random.default_rng(seed).gamma(2.0, 1.0, N_PAIRS)
    geo = trsa.geodesic_transform(d, variant=variant, p=0.3, k=2, rank_after=False,
                                  finite=False)
    weights = _minmax(trsa.gt_transform(d)) if variant == "twostep" else _minmax(rankdata(d))
    if variant == "twostep":
        edges = weights < 1
    elif variant == "p_shortest":
        edges = weights <= np.quantile(weights, 0.3)
    else:
        mat = squareform(weights)
        np.fill_diagonal(mat, np.inf)
        near = np.zeros_like(mat, dtype=bool)
        idx = np.argsort(mat, axis=1, kind="stable")[:, :2]
        near[np.repeat(np.arange(K), 2), idx.ravel()] = True
        edges = squareform(near | near.T, checks=False)
    assert np.all(geo[edges] <= weights[edges] + 1e-12)
    assert np.all(np.isfinite(geo[edges]))


def test_geodesic_finite_and_errors(rdm_vec):
    sparse = trsa.geodesic_transform(rdm_vec, variant="k_nearest", k=1, rank_after=False)
    assert np.isfinite(sparse).all()
    with pytest.raises(DataError, match="no edges"):
        trsa.geodesic_transform(rdm_vec, variant="p_nearest", p=0.01)
    with pytest.raises(NeurofmError, match="variant must be one of"):
        trsa.geodesic_transform(rdm_vec, variant="mst")
    with pytest.raises(DataError, match="finite"):
        trsa.geodesic_transform(np.r_[np.nan, rdm_vec[1:]])


# --- families ----------------------------------------------------------------------------


def test_rgtm_families_and_sampling():
    cases = {(0.0, 0.1): "local", (0.1, 0.3): "local", (0.7, 1.0): "global",
             (0.05, 0.9): "geometry", (0.0, 1.0): "geometry", (0.45, 0.55): "topology",
             (0.4, 0.6): "topology", (0.2, 0.7): "intermediate"}
    for (lo, up), fam in cases.items():
        assert trsa.rgtm_family(lo, up) == fam
    for fam in trsa.RGTM_FAMILIES:
        draws = trsa.sample_rgtm(fam, 6, seed=3)
        assert draws.shape == (6, 2)
        assert all(trsa.rgtm_family(lo, up) == fam for lo, up in draws)
        np.testing.assert_array_equal(draws, trsa.sample_rgtm(fam, 6, seed=3))
    with pytest.raises(NeurofmError, match="lower must be <= upper"):
        trsa.rgtm_family(0.6, 0.4)
    with pytest.raises(NeurofmError, match="family must be one of"):
        trsa.sample_rgtm("topological", 2)


# --- identification ----------------------------------------------------------------------


def make_regions(seed, n_subj=8, n_stim=24, n_chan=30, pattern_noise=1.0, gamma=(0.5, 2.0)):
    """RDMs of 4 "regions" with different representational geometries (ring, line, two
    clusters, twisted ring) in noisy subjects; each subject-region RDM is additionally
    distorted by a random monotone power d**g (inter-individual variability)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n_stim, endpoint=False)
    half = n_stim // 2
    latents = {
        "ring": np.c_[np.cos(t), np.sin(t), np.zeros(n_stim)],
        "line": np.c_[np.linspace(-1.5, 1.5, n_stim), np.zeros((n_stim, 2))],
        "clusters": np.r_[np.tile([1.0, 0, 0], (half, 1)),
                          np.tile([-1.0, 0, 0], (n_stim - half, 1))]
        + 0.15 * rng.standard_normal((n_stim, 3)),
        "twist": np.c_[np.cos(t), np.sin(t), np.sin(2 * t)],
    }
    rdms, labels, groups = [], [], []
    for s in range(n_subj):
        for name, z in latents.items():
            x = z @ rng.standard_normal((3, n_chan)) \
                + pattern_noise * rng.standard_normal((n_stim, n_chan))
            g = np.exp(rng.uniform(np.log(gamma[0]), np.log(gamma[1])))
            d = pdist(x) ** g
            rdms.append(d / d.mean())
            labels.append(name)
            groups.append(s)
    return np.array(rdms), np.array(labels), np.array(groups)


def test_identification_is_well_above_chance():
    rdms, labels, groups = make_regions(0)
    before = rdms.copy()
    acc = trsa.identify(rdms, labels, groups)
    assert acc >= 0.9  # chance = 0.25
    assert trsa.identify(rdms, labels, groups, transform=(0.4, 0.6)) >= 0.9
    np.testing.assert_array_equal(rdms, before)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert trsa.identify(rdms, shuffled, groups) < 0.5


def test_topology_sensitive_rgtm_is_robust_to_noise_and_individual_variability():
    # the paper's claim: topology-sensitive RGTMs keep identification accuracy under added
    # noise and inter-individual variability (here strong monotone distortions); noise is
    # added to the RDMs as in the reference analysis: N(0, std(rdms) * k / 10), clipped at 0
    rdms, labels, groups = make_regions(0, gamma=(0.25, 4.0))
    family = trsa.sample_rgtm("topology", 5, seed=0)
    rng = np.random.default_rng(100)
    topo_accs, raw_accs = [], []
    for level in (0, 2, 4):
        noisy = np.clip(rdms + rng.normal(0, rdms.std() * level / 10, rdms.shape), 0, None)
        raw_accs.append(trsa.identify(noisy, labels, groups))
        topo_accs.append(np.mean([trsa.identify(noisy, labels, groups, transform=tuple(lu))
                                  for lu in family]))
    assert min(topo_accs) >= 0.9
    assert topo_accs[0] - topo_accs[-1] <= 0.1
    assert all(t >= r + 0.05 for t, r in zip(topo_accs, raw_accs))


def test_identify_matches_a_direct_nearest_centroid():
    rdms, labels, groups = make_regions(2, n_subj=4, pattern_noise=3.0)
    acc = trsa.identify(rdms, labels, groups)
    correct = 0
    for s in np.unique(groups):
        train, test = groups != s, groups == s
        classes = np.unique(labels[train])
        cents = np.stack([rdms[train & (labels == c)].mean(0) for c in classes])
        for x, lab in zip(rdms[test], labels[test]):
            correct += classes[np.argmin(((cents - x) ** 2).sum(1))] == lab
    assert acc == pytest.approx(correct / len(labels))
    custom = trsa.identify(rdms, labels, groups, transform=np.sqrt)
    assert custom == trsa.identify(np.sqrt(rdms), labels, groups)


def test_identification_grid_and_bootstrap():
    rdms, labels, groups = make_regions(3, n_subj=5, n_stim=12)
    grid = trsa.identification_grid(rdms, labels, groups, step=0.25)
    assert grid.dims == ("lower", "upper") and grid.shape == (4, 4)
    assert np.isnan(grid.sel(lower=0.5, upper=0.5).item())
    cell = grid.sel(lower=0.25, upper=0.75).item()
    assert cell == pytest.approx(trsa.identify(rdms, labels, groups, transform=(0.25, 0.75)))
    boot = trsa.bootstrap_identification(rdms, labels, groups, transform=(0.25, 0.75),
                                         n_boot=40, seed=1)
    assert boot.accuracy == pytest.approx(cell)
    assert boot.samples.shape == (40,) and boot.ci[0] <= boot.ci[1]
    assert 0 < boot.std < 0.5
    again = trsa.bootstrap_identification(rdms, labels, groups, transform=(0.25, 0.75),
                                          n_boot=40, seed=1)
    np.testing.assert_array_equal(boot.samples, again.samples)
    stim_only = trsa.bootstrap_identification(rdms, labels, groups, n_boot=10, boot="stimuli",
                                              nan_policy="mean")
    assert np.isfinite(stim_only.samples).all()


def test_identification_errors():
    rdms, labels, groups = make_regions(4, n_subj=3, n_stim=8)
    with pytest.raises(DataError, match="one entry per RDM"):
        trsa.identify(rdms, labels[:-1], groups)
    with pytest.raises(DataError, match="at least 2 groups"):
        trsa.identify(rdms, labels, np.zeros(len(labels)))
    with pytest.raises(DataError, match="stack"):
        trsa.identify(rdms[0], labels[:1], groups[:1])
    with pytest.raises(NeurofmError, match="transform must be"):
        trsa.identify(rdms, labels, groups, transform="gt")
    with pytest.raises(NeurofmError, match="lower must be < upper"):
        trsa.identify(rdms, labels, groups, transform=(0.6, 0.4))
    with pytest.raises(DataError, match="constant"):
        trsa.gt_transform(np.ones(N_PAIRS))
