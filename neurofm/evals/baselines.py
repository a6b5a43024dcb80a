"""Classical baselines on the same windows and splits as the encoders.

fMRI: functional connectivity (correlation or tangent-space matrices of each window, upper
triangle; nilearn's :class:`~nilearn.connectome.ConnectivityMeasure`). EEG / MEG / iEEG:
covariance matrices in the Riemannian tangent space (pyriemann) and log band power. Each
feature map feeds a standardized logistic regression (classification) or ridge regression
(regression) whose regularization is chosen on the validation split.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..errors import NeurofmError

__all__ = ["BASELINES", "BandPower", "Connectivity", "RiemannTangent", "default_baselines",
           "fit_baseline", "make_baseline", "make_features", "make_head",
           "oas_covariances"]

#: modality -> default baselines
_DEFAULTS = {"fmri": ("fc_correlation", "fc_tangent"),
             "eeg": ("riemann_tangent", "log_bandpower"),
             "meg": ("riemann_tangent", "log_bandpower"),
             "ieeg": ("riemann_tangent", "log_bandpower")}
BASELINES = ("fc_correlation", "fc_tangent", "riemann_tangent", "log_bandpower")
#: frequency bands (Hz) of the log band power features
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0),
         "gamma": (30.0, 45.0)}
_C_GRID = (0.01, 0.1, 1.0, 10.0)
_ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)


def default_baselines(modality):
    """Baseline names for a modality ("fmri", "eeg", "meg", "ieeg"; others: none)."""
    return _DEFAULTS.get(modality, ())


class Connectivity(TransformerMixin, BaseEstimator):
    """(n, C, T) windows -> upper triangle of their connectivity matrices (n, C (C - 1) / 2).

    ``kind`` is nilearn's ("correlation", "tangent", "partial correlation"...); the tangent
    space reference (the group mean) is fitted on the training windows only.
    """

    def __init__(self, kind="correlation"):
        self.kind = kind

    def fit(self, X, y=None):
        from nilearn.connectome import ConnectivityMeasure

        self.measure_ = ConnectivityMeasure(kind=self.kind, vectorize=True,
                                            discard_diagonal=True, standardize=False)
        self.measure_.fit([np.asarray(x, dtype=np.float64).T for x in X])  # (T, C) each
        return self

    def transform(self, X):
        return self.measure_.transform([np.asarray(x, dtype=np.float64).T for x in X])


def oas_covariances(X):
    """Oracle-approximating-shrinkage covariances of windows, vectorized.

    The estimator of :class:`sklearn.covariance.OAS` (Chen et al. 2010) on each window.

    Parameters
    ----------
    X : float array of shape (n, C, T)

    Returns
    -------
    covs : float64 array of shape (n, C, C)
    """
    X = np.asarray(X, dtype=np.float64)
    n_ch, n_t = X.shape[1], X.shape[2]
    X = X - X.mean(axis=2, keepdims=True)
    emp = X @ X.transpose(0, 2, 1) / n_t  # (n, C, C)
    mu = np.trace(emp, axis1=1, axis2=2) / n_ch  # (n,)
    alpha = (emp ** 2).mean(axis=(1, 2))
    num = alpha + mu ** 2
    den = (n_t + 1) * (alpha - mu ** 2 / n_ch)
    shrink = np.where(den == 0, 1.0, np.minimum(num / np.where(den == 0, 1.0, den), 1.0))
    out = (1.0 - shrink)[:, None, None] * emp
    out[:, np.arange(n_ch), np.arange(n_ch)] += (shrink * mu)[:, None]
    return out


class RiemannTangent(TransformerMixin, BaseEstimator):
    """(n, C, T) windows -> tangent-space vectors of their OAS covariance matrices.

    The tangent point (Riemannian mean of the training covariances) is fitted on the
    training windows (pyriemann's :class:`~pyriemann.tangentspace.TangentSpace`).
    """

    def __init__(self, metric="riemann"):
        self.metric = metric

    def fit(self, X, y=None):
        try:
            from pyriemann.tangentspace import TangentSpace
        except ImportError as exc:  # pragma: no cover
            raise ImportError("the riemann_tangent baseline needs pyriemann "
                              "(pip install pyriemann)") from exc
        self.ts_ = TangentSpace(metric=self.metric).fit(oas_covariances(X))
        return self

    def transform(self, X):
        return self.ts_.transform(oas_covariances(X))


class BandPower(TransformerMixin, BaseEstimator):
    """(n, C, T) windows -> log10 Welch band power per channel and band (n, C * n_bands).

    Bands above the Nyquist frequency (or narrower than the frequency resolution) are
    dropped.
    """

    def __init__(self, sfreq=250.0, bands=None):
        self.sfreq, self.bands = sfreq, bands

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        from scipy.signal import welch

        X = np.asarray(X, dtype=np.float64)
        nperseg = min(X.shape[-1], round(2 * self.sfreq))
        freqs, psd = welch(X, fs=self.sfreq, nperseg=nperseg, axis=-1)  # (n, C, F)
        feats = []
        for lo, hi in (self.bands or BANDS).values():
            sel = (freqs >= lo) & (freqs < hi)
            if sel.any():
                feats.append(np.log10(psd[..., sel].mean(axis=-1) + 1e-30))  # (n, C)
        if not feats:
            raise NeurofmError(f"no frequency band fits sfreq={self.sfreq} Hz and "
                               f"{X.shape[-1]} samples")
        return np.concatenate(feats, axis=1)


def make_features(name, *, sfreq):
    """The feature transformer of baseline ``name`` (one of :data:`BASELINES`)."""
    features = {"fc_correlation": lambda: Connectivity("correlation"),
                "fc_tangent": lambda: Connectivity("tangent"),
                "riemann_tangent": RiemannTangent,
                "log_bandpower": lambda: BandPower(sfreq=sfreq)}
    if name not in features:
        raise NeurofmError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return features[name]()


def make_head(task, reg):
    """StandardScaler -> logistic regression (``C=reg``) or ridge (``alpha=reg``)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = (LogisticRegression(C=reg, max_iter=2000) if task == "classification"
            else Ridge(alpha=reg))
    return make_pipeline(StandardScaler(), head)


def make_baseline(name, task, *, sfreq, reg):
    """An sklearn pipeline: features -> StandardScaler -> logistic / ridge regression.

    Parameters
    ----------
    name : one of :data:`BASELINES`
    task : {"classification", "regression"}
    sfreq : float
        Sampling rate (band power).
    reg : float
        ``C`` of the logistic regression or ``alpha`` of the ridge.
    """
    from sklearn.pipeline import make_pipeline

    return make_pipeline(make_features(name, sfreq=sfreq),
                         *[step for _, step in make_head(task, reg).steps])


def fit_baseline(name, task, X, y, splits, *, sfreq):
    """Fit on train with the regularization that scores best on val; predict test.

    The features (tangent-space reference included) are fitted on the training windows only.

    Parameters
    ----------
    X : float array of shape (n, C, T)
    y : array of shape (n,)
    splits : dict of "train" / "val" / "test" -> index arrays

    Returns
    -------
    pred : array of shape (n_test,)
    proba : array of shape (n_test, n_classes) or None
    classes : array or None
    """
    from .metrics import primary_score

    tr, va, te = splits["train"], splits["val"], splits["test"]
    features = make_features(name, sfreq=sfreq).fit(X[tr])
    f_tr, f_te = features.transform(X[tr]), features.transform(X[te])
    grid = _C_GRID if task == "classification" else _ALPHA_GRID
    best, best_reg = -np.inf, 1.0
    if len(va):
        f_va = features.transform(X[va])
        for reg in grid:
            model = make_head(task, reg).fit(f_tr, y[tr])
            s = primary_score(task, y[va], model.predict(f_va))
            if np.isfinite(s) and s > best:
                best, best_reg = s, reg
    model = make_head(task, best_reg).fit(f_tr, y[tr])
    pred = model.predict(f_te)
    if task == "classification":
        return pred, model.predict_proba(f_te), model.classes_
    return pred, None, None
