"""RSA plots (matplotlib, Agg backend)."""

from __future__ import annotations

import numpy as np
import pytest

from neurofm.analysis import rsa
from neurofm.errors import NeurofmError

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
import matplotlib.pyplot as plt

from neurofm.viz import plot_model_comparison, plot_rdm


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_plot_rdm_single_and_stack():
    rng = np.random.default_rng(0)
    rdm = rsa.compute_rdm(rng.standard_normal((12, 8)), conditions=np.repeat(list("abcd"), 3),
                          method="correlation")
    ax = plot_rdm(rdm, title="one")
    image = ax.images[0].get_array()
    np.testing.assert_allclose(np.ma.filled(image, np.nan), rdm.values)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcd")
    assert ax.get_title() == "one"
    stack = rsa.square(rng.random((3, 6)))
    axes = plot_rdm(stack, rank=True, colorbar=False)
    assert len(axes) == 3
    ranked = np.ma.filled(axes[0].images[0].get_array(), np.nan)
    assert np.nanmin(ranked) == 0 and np.nanmax(ranked) == 100
    with pytest.raises(NeurofmError, match="own figure"):
        plot_rdm(stack, ax=ax)


def test_plot_model_comparison_draws_bars_ceiling_and_significance():
    rng = np.random.default_rng(1)
    n = 45
    true = rng.random(n)
    data = true + 0.3 * rng.standard_normal((8, n))
    models = {"true": true, "noise": rng.random(n), "half": true + rng.random(n)}
    res = rsa.evaluate(models, data, inference="fixed")
    ax = plot_model_comparison(res, sort=True)
    heights = [p.get_height() for p in ax.patches if p.get_width() < 1 and p.get_height() != 0]
    np.testing.assert_allclose(sorted(heights, reverse=True), np.sort(res.scores)[::-1])
    assert next(t.get_text() for t in ax.get_xticklabels()) == "true"
    band = [c for c in ax.get_children() if c.get_label() == "noise ceiling"]
    assert len(band) == 1
    ys = band[0].get_path().transformed(band[0].get_patch_transform()).vertices[:, 1] \
        if hasattr(band[0], "get_patch_transform") else band[0].get_xy()[:, 1]
    np.testing.assert_allclose([ys.min(), ys.max()], res.noise_ceiling, atol=1e-12)
    assert any(t.get_text() == "*" for t in ax.texts)
    assert len(ax.lines) >= 2  # zero line + at least one significant pair
    with pytest.raises(NeurofmError, match="error_bars"):
        plot_model_comparison(res, error_bars="std")
