"""Searchlight RDMs: parity with rsatoolbox, chunking, model maps, memory guards."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurofm.analysis import rsa
from neurofm.errors import DataError, NeurofmError

pytest.importorskip("torch")
pytest.importorskip("rsatoolbox")
from rsatoolbox.util.searchlight import (
    get_searchlight_RDMs,
    get_volume_searchlight,
)

# rsatoolbox's _build_rdms casts NaN into an int array while building descriptors
pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid value encountered in cast:RuntimeWarning:numpy._core.numeric")

TOL = 1e-10
SHAPE = (7, 6, 5)
N_COND, N_REP = 6, 2
N_PAIRS = N_COND * (N_COND - 1) // 2


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    mask = rng.random(SHAPE) > 0.3
    vol = rng.standard_normal(SHAPE + (N_COND * N_REP,)) + 2.0
    cond = np.tile(np.arange(N_COND), N_REP)
    return vol, mask, cond


def _centre_rows(out):
    return np.ravel_multi_index((out.voxel_x.values, out.voxel_y.values, out.voxel_z.values),
                                SHAPE)


@pytest.mark.parametrize("method", ["correlation", "euclidean"])
def test_searchlight_matches_rsatoolbox(volume, method, capsys):
    vol, mask, cond = volume
    # rsatoolbox keeps voxels at distance < radius; a hair above 2 gives our <= 2 sphere,
    # and truncate_at_boundary=True gives our in-mask-only spheres
    centers, neigh = get_volume_searchlight(mask, radius=2 + 1e-6, threshold=0,
                                            truncate_at_boundary=True)
    ref = get_searchlight_RDMs(vol.reshape(-1, len(cond)).T, centers, neigh, cond,
                               method=method, verbose=False).get_vectors()
    out = rsa.searchlight_rdms(vol, mask=mask, radius=2, method=method, conditions=cond,
                               dtype="float64", device="cpu")
    pos = {c: i for i, c in enumerate(centers)}
    rows = [pos[c] for c in _centre_rows(out)]
    np.testing.assert_allclose(out.values, ref[rows], atol=TOL, rtol=0)
    assert out.dims == ("center", "pair") and out.shape[1] == N_PAIRS


def test_crossnobis_searchlight_equals_compute_rdm_on_each_sphere(volume):
    vol, mask, cond = volume
    out = rsa.searchlight_rdms(vol, mask=mask, radius=1.5, method="crossnobis",
                               conditions=cond, dtype="float64", device="cpu")
    data = vol[mask].T  # (n_obs, n_vox)
    coords = np.argwhere(mask)
    for i in [0, 7, len(out) - 1]:
        c = np.array([out.voxel_x.values[i], out.voxel_y.values[i], out.voxel_z.values[i]])
        inside = np.sum((coords - c) ** 2, axis=1) <= 1.5 ** 2
        ref = rsa.compute_rdm(data[:, inside], conditions=cond, method="crossnobis")
        np.testing.assert_allclose(out.values[i], rsa.upper(ref), atol=TOL, rtol=0)
        assert out.n_voxels.values[i] == inside.sum()
    # explicit folds equal to the default ones (k-th repetition of each condition)
    explicit = rsa.searchlight_rdms(vol, mask=mask, radius=1.5, method="crossnobis",
                                    conditions=cond, folds=np.repeat(np.arange(N_REP), N_COND),
                                    dtype="float64", device="cpu")
    np.testing.assert_array_equal(explicit.values, out.values)
    with pytest.raises(DataError, match="at least 2 folds"):
        rsa.searchlight_rdms(vol, mask=mask, radius=1.5, method="crossnobis", conditions=cond,
                             folds=np.zeros(len(cond)))
    with pytest.raises(DataError, match="one entry per observation"):
        rsa.searchlight_rdms(vol, mask=mask, radius=1.5, method="crossnobis", conditions=cond,
                             folds=np.zeros(3))


def test_chunking_float32_dataarray_and_out(volume, tmp_path):
    vol, mask, cond = volume
    ref = rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, dtype="float64",
                               device="cpu")
    small = rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, dtype="float64",
                                 device="cpu", chunk_size=7)
    np.testing.assert_allclose(small.values, ref.values, atol=TOL)
    f32 = rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, device="cpu")
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32.values, ref.values, atol=1e-5)
    da = xr.DataArray(np.moveaxis(vol, -1, 0), dims=("trial", "i", "j", "k"),
                      coords={"condition": ("trial", cond)})
    from_da = rsa.searchlight_rdms(da, mask=mask, radius=2, dtype="float64", device="cpu")
    np.testing.assert_allclose(from_da.values, ref.values, atol=TOL)
    mm = np.lib.format.open_memmap(tmp_path / "sl.npy", mode="w+", dtype=np.float64,
                                   shape=ref.shape)
    written = rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, dtype="float64",
                                   device="cpu", out=mm, chunk_size=10)
    np.testing.assert_allclose(np.load(tmp_path / "sl.npy"), ref.values, atol=TOL)
    assert np.shares_memory(written.values, mm)


def test_model_maps_equal_comparisons_of_the_rdms(volume):
    vol, mask, cond = volume
    rng = np.random.default_rng(1)
    models = {"a": rng.random(N_PAIRS), "b": rng.random(N_PAIRS)}
    rdms = rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, dtype="float64",
                                device="cpu")
    maps = rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, dtype="float64",
                                device="cpu", models=models, compare="spearman", chunk_size=9)
    assert maps.dims == ("model", "x", "y", "z") and maps.shape == (2,) + SHAPE
    ref = rsa.compare_rdms(np.stack(list(models.values())), rdms.values, method="spearman")
    got = maps.values[:, rdms.voxel_x.values, rdms.voxel_y.values, rdms.voxel_z.values]
    np.testing.assert_allclose(got, ref, atol=TOL)
    assert np.isnan(maps.values[:, ~mask]).all()


def test_searchlight_guards_and_errors(volume):
    vol, mask, cond = volume
    with pytest.raises(DataError, match="max_memory"):
        rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, max_memory=100)
    with pytest.raises(DataError, match="spatial shape"):
        rsa.searchlight_rdms(vol, mask=mask[:-1], radius=2, conditions=cond)
    with pytest.raises(NeurofmError, match="radius"):
        rsa.searchlight_rdms(vol, mask=mask, radius=0, conditions=cond)
    with pytest.raises(DataError, match="one label per observation"):
        rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond[:-1])
    with pytest.raises(DataError, match="required"):
        rsa.searchlight_rdms(vol, mask=mask, radius=2)
    with pytest.raises(NeurofmError, match="method must be one of"):
        rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, method="poisson")
    bad = vol.copy()
    x, y, z = np.argwhere(mask)[0]
    bad[x, y, z, 0] = np.nan
    with pytest.raises(DataError, match="finite"):
        rsa.searchlight_rdms(bad, mask=mask, radius=2, conditions=cond)
    with pytest.raises(DataError, match="out must be"):
        rsa.searchlight_rdms(vol, mask=mask, radius=2, conditions=cond, out=np.zeros((2, 2)))
