"""RSA edge cases: mahalanobis without noise, 2-condition comparisons, the device rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from neurofm.analysis import rsa
from neurofm.errors import DataError, NeurofmError

rsatoolbox = pytest.importorskip("rsatoolbox")
torch = pytest.importorskip("torch")
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import calc_rdm

# rsatoolbox's _build_rdms casts NaN into an int array while building descriptors
pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid value encountered in cast:RuntimeWarning:numpy._core.numeric")


def _data(seed=0, n_cond=6, n_rep=3, n_ch=10):
    rng = np.random.default_rng(seed)
    cond = np.tile(np.arange(n_cond), n_rep)
    return rng.standard_normal((n_cond * n_rep, n_ch)) + 0.5, cond


@pytest.mark.parametrize("remove_mean", [False, True])
def test_mahalanobis_without_noise_is_rsatoolbox_identity(remove_mean, caplog):
    x, cond = _data(1)
    with caplog.at_level(logging.INFO, logger="neurofm"):
        ours = rsa.compute_rdm(x, conditions=cond, method="mahalanobis",
                               remove_mean=remove_mean)
    ref = calc_rdm(Dataset(x.copy(), obs_descriptors={"cond": cond}), method="mahalanobis",
                   descriptor="cond", remove_mean=remove_mean).get_vectors()[0]
    np.testing.assert_allclose(rsa.upper(ours), ref, atol=1e-10, rtol=0)
    # the identity precision is the squared Euclidean distance
    eucl = rsa.compute_rdm(x, conditions=cond, method="euclidean", remove_mean=remove_mean)
    np.testing.assert_allclose(ours.values, eucl.values, atol=1e-12, rtol=0)
    assert ours.attrs["method"] == "mahalanobis"
    assert any("identity" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)
    # same on the torch backend
    tch = rsa.compute_rdm(x, conditions=cond, method="mahalanobis", remove_mean=remove_mean,
                          device="cpu")
    np.testing.assert_allclose(tch.values, ours.values, atol=1e-10, rtol=0)


def _two_condition_rdms():
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    return a, 2.0 * a


@pytest.mark.parametrize("method", rsa.COMPARE_METHODS)
def test_two_condition_comparisons_raise_for_every_method(method):
    a, b = _two_condition_rdms()
    with pytest.raises(DataError, match="at least 3 conditions"):
        rsa.compare_rdms(a, b, method=method)
    with pytest.raises(DataError, match="at least 3 conditions"):
        rsa.noise_ceiling(np.stack([a, b, 3 * a]), method=method)
    with pytest.raises(DataError, match="at least 3 conditions"):
        rsa.evaluate({"m": a}, np.stack([a, b, 3 * a]), method=method, inference="fixed")


def test_three_condition_cosine_still_compares():
    a = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0.0]])
    b = np.array([[0, 2, 1], [2, 0, 3], [1, 3, 0.0]])
    va, vb = rsa.upper(a), rsa.upper(b)
    expected = va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)
    assert rsa.compare_rdms(a, b, method="cosine") == pytest.approx(expected, abs=1e-12)


def test_searchlight_models_with_two_conditions_raise():
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((4, 4, 4, 4))
    mask = np.ones((4, 4, 4), bool)
    with pytest.raises(DataError, match="at least 3 conditions"):
        rsa.searchlight_rdms(vol, mask=mask, radius=1, conditions=[0, 1, 0, 1],
                             models={"m": np.array([[0, 1.0], [1.0, 0]])}, compare="cosine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unusable_cuda_device_is_a_clear_error():
    x, cond = _data(2)
    with pytest.raises(NeurofmError, match=r"device='cuda' is not usable.*device=None"):
        rsa.compute_rdm(x, conditions=cond, device="cuda")
    with pytest.raises(NeurofmError, match=r"device='cuda' is not usable"):
        rsa.compute_rdms([x, x], conditions=cond, device="cuda")
    vol = np.random.default_rng(0).standard_normal((4, 4, 4, 6))
    with pytest.raises(NeurofmError, match=r"device='cuda' is not usable"):
        rsa.searchlight_rdms(vol, mask=np.ones((4, 4, 4), bool), radius=1,
                             conditions=[0, 1, 2] * 2, device="cuda")


@pytest.mark.parametrize("device", ["nonsense", "meta", 3])
def test_invalid_device_is_a_clear_error(device):
    x, cond = _data(3)
    with pytest.raises(NeurofmError, match="device"):
        rsa.compute_rdm(x, conditions=cond, device=device)


def test_one_device_rule(monkeypatch):
    """None is the CPU for both functions; 'auto' takes a GPU only when there is one."""
    from neurofm.analysis import _rdm_calc

    assert _rdm_calc.resolve_device(None) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _rdm_calc.resolve_device("auto") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _rdm_calc.resolve_device("auto") == torch.device("cuda")
    # with a GPU "available", device=None must still compute on the CPU in both functions
    x, cond = _data(4)
    cpu = rsa.compute_rdm(x, conditions=cond)
    np.testing.assert_allclose(cpu.values, rsa.compute_rdm(x, conditions=cond,
                                                           device="cpu").values, atol=1e-10)
    seen = []
    real_as_tensor = torch.as_tensor

    def spy(*args, **kwargs):
        seen.append(torch.device(kwargs.get("device") or "cpu").type)
        return real_as_tensor(*args, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(torch, "as_tensor", spy)
    rng = np.random.default_rng(5)
    vol = rng.standard_normal((4, 4, 4, 6))
    rsa.searchlight_rdms(vol, mask=np.ones((4, 4, 4), bool), radius=1,
                         conditions=[0, 1, 2] * 2, dtype="float64")
    assert seen and set(seen) == {"cpu"}


def test_as_rdm_gives_the_square_layout_of_any_input():
    import xarray as xr

    mat = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0.0]])
    out = rsa.as_rdm(mat)
    assert out.dims == ("condition", "condition2")
    np.testing.assert_array_equal(out.values, mat)
    np.testing.assert_array_equal(out.coords["condition"].values, [0, 1, 2])
    np.testing.assert_array_equal(rsa.as_rdm(rsa.upper(mat)).values, mat)
    stack = xr.DataArray(np.stack([mat, 2 * mat]), dims=("subject", "condition", "condition2"),
                         coords={"subject": ["s1", "s2"], "condition": list("abc"),
                                 "condition2": list("abc")}, attrs={"method": "euclidean"})
    out = rsa.as_rdm(stack)
    assert out.dims == ("subject", "condition", "condition2")
    assert list(out.coords["subject"].values) == ["s1", "s2"]
    assert list(out.coords["condition"].values) == list("abc")
    assert out.attrs["method"] == "euclidean"
    np.testing.assert_array_equal(out.values[1], 2 * mat)
    with_nan = mat.copy()
    with_nan[0, 1] = with_nan[1, 0] = np.nan
    assert np.isnan(rsa.as_rdm(with_nan).values[0, 1])
    with pytest.raises(DataError, match="symmetric"):
        rsa.as_rdm(np.array([[0, 1, 2], [1, 0, 3], [2, 4, 0.0]]))
