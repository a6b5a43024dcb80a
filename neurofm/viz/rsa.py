"""RSA plots: RDM heat maps and model-comparison bar charts."""

from __future__ import annotations

import numpy as np

from .._checks import check_option
from ..analysis.rsa import as_rdm, square, upper
from ..errors import NeurofmError


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'neurofm[all]'") from None
    return plt


def plot_rdm(rdm, *, ax=None, cmap="viridis", rank=False, labels=True, colorbar=True,
             title=None, vmin=None, vmax=None, max_panels=16):
    """Heat map of an RDM (or a grid of panels for a stack).

    Parameters
    ----------
    rdm : xr.DataArray or ndarray
        One RDM (K, K) / (n_pairs,) or a stack (n, K, K); NaN entries are left blank.
    ax : matplotlib Axes, optional
        Axes for a single RDM (a new figure otherwise).
    cmap : str
    rank : bool
        Show percentile ranks of the dissimilarities instead of their values.
    labels : bool
        Tick labels with the condition labels (only drawn for up to 40 conditions).
    colorbar : bool
    title : str, optional
    vmin, vmax : float, optional
    max_panels : int
        Largest number of RDMs of a stack drawn in a grid.

    Returns
    -------
    matplotlib Axes (one RDM) or ndarray of Axes (stack).
    """
    plt = _pyplot()
    rdm = as_rdm(rdm)                       # (K, K) or (n, K, K), labelled
    single = rdm.ndim == 2
    if rank:
        from scipy.stats import rankdata

        vecs = np.atleast_2d(upper(rdm))    # (n, n_pairs)
        for i, v in enumerate(vecs):
            ok = np.isfinite(v)
            vecs[i, ok] = 100 * (rankdata(v[ok]) - 1) / max(ok.sum() - 1, 1)
        mats = np.array(square(vecs).values, dtype=float)
    else:
        mats = np.array(rdm.values, dtype=float)
        if single:
            mats = mats[None]
    n_cond = mats.shape[-1]
    idx = np.arange(n_cond)
    mats[:, idx, idx] = np.nan if rank else 0.0
    if single:
        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4))
        axes = np.array([ax])
    else:
        if ax is not None:
            raise NeurofmError("ax: a stack of RDMs is drawn on its own figure; pass ax=None")
        n = min(mats.shape[0], max_panels)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        _fig, grid = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), squeeze=False)
        axes = grid.ravel()
        for extra in axes[n:]:
            extra.set_axis_off()
        axes = axes[:n]
    lo = np.nanmin(mats) if vmin is None else vmin
    hi = np.nanmax(mats) if vmax is None else vmax
    names = [str(v) for v in rdm.coords["condition"].values]
    panel_names = None if single else rdm.coords[rdm.dims[0]].values
    for i, a in enumerate(axes):
        im = a.imshow(np.ma.masked_invalid(mats[i]), cmap=cmap, vmin=lo, vmax=hi,
                      interpolation="nearest")
        if labels and n_cond <= 40:
            a.set_xticks(idx, names, rotation=90, fontsize=7)
            a.set_yticks(idx, names, fontsize=7)
        else:
            a.set_xticks([])
            a.set_yticks([])
        if not single:
            a.set_title(str(panel_names[i]), fontsize=9)
        if colorbar:
            a.figure.colorbar(im, ax=a, fraction=0.046, pad=0.04,
                              label="percentile" if rank else rdm.attrs.get("method", ""))
    if title is not None and single:
        axes[0].set_title(title)
    elif title is not None:
        axes[0].figure.suptitle(title)
    return axes[0] if single else axes


def _fdr(p):
    """Benjamini-Hochberg adjusted p-values of a flat array."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    ranked = p[order] * len(p) / (np.arange(len(p)) + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adj, 1.0)
    return out


def plot_model_comparison(result, *, ax=None, sort=False, error_bars="ci", alpha=0.05,
                          pairwise=True, colors=None, title=None):
    """Bar chart of model scores with error bars, noise ceiling band and significance.

    Parameters
    ----------
    result : EvalResult
        From :func:`neurofm.analysis.rsa.evaluate`.
    ax : matplotlib Axes, optional
    sort : bool
        Order models by score (best first).
    error_bars : {"ci", "sem"}
        The result's confidence interval or +- one standard error.
    alpha : float
        Significance level; tests are FDR-corrected (Benjamini-Hochberg) across models
        (against 0) and across model pairs.
    pairwise : bool
        Draw a line above the bars for every significantly different pair of models.
    colors : sequence of colours, optional
    title : str, optional

    Returns
    -------
    matplotlib Axes
        Stars above a bar mark scores significantly above 0; bars whose score is not
        significantly below the lower noise-ceiling bound are drawn with a hatched edge.
    """
    plt = _pyplot()
    check_option("error_bars", error_bars, ("ci", "sem"))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.8 * len(result.models), 4))
    n = len(result.models)
    order = np.argsort(-result.scores) if sort else np.arange(n)
    scores = result.scores[order]
    if error_bars == "ci":
        low = scores - result.ci[0][order]
        high = result.ci[1][order] - scores
    else:
        low = high = result.sem[order]
    x = np.arange(n)
    colors = colors if colors is not None else ["0.55"] * n
    p_zero = _fdr(result.p_zero[order])
    p_noise = _fdr(result.p_noise[order])
    bars = ax.bar(x, scores, color=[colors[i % len(colors)] for i in range(n)],
                  yerr=np.vstack([low, high]), capsize=3, zorder=2)
    lower, upper = result.noise_ceiling
    if np.isfinite(lower) and np.isfinite(upper):
        ax.axhspan(lower, upper, color="0.85", zorder=1, label="noise ceiling")
    top = np.nanmax(scores + high) if np.isfinite(scores + high).any() else 1.0
    span = max(top - min(0.0, np.nanmin(scores - low)), 1e-6)
    for i, bar in enumerate(bars):
        if p_zero[i] < alpha:
            ax.text(x[i], scores[i] + high[i] + 0.02 * span, "*", ha="center", va="bottom")
        if p_noise[i] >= alpha:
            bar.set_hatch("//")
    if pairwise and n > 1:
        iu, ju = np.triu_indices(n, 1)
        p_pair = result.p_pairwise[np.ix_(order, order)][iu, ju]
        sig = _fdr(p_pair) < alpha
        level = max(top, upper if np.isfinite(upper) else top) + 0.08 * span
        for a, b in zip(iu[sig], ju[sig]):
            ax.plot([x[a], x[b]], [level, level], color="0.3", lw=1)
            level += 0.05 * span
    ax.set_xticks(x, [result.models[i] for i in order], rotation=45, ha="right")
    ax.set_ylabel(f"RDM similarity ({result.method})")
    ax.axhline(0, color="k", lw=0.8)
    if title is not None:
        ax.set_title(title)
    return ax
