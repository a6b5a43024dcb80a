"""Scores of classification and regression predictions."""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSIFICATION_METRICS", "PRIMARY", "REGRESSION_METRICS", "primary_score", "score"]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
REGRESSION_METRICS = ("mse", "pearson_r")
#: the metric the report compares methods on (higher is better)
PRIMARY = {"classification": "balanced_accuracy", "regression": "pearson_r"}


def score(task, y_true, pred, proba=None, classes=None):
    """Metrics of one prediction.

    Parameters
    ----------
    task : {"classification", "regression"}
    y_true, pred : arrays of shape (n,)
    proba : array of shape (n, n_classes), optional
        Class probabilities (columns in the order of ``classes``) for the AUROC.

    Returns
    -------
    scores : dict of str -> float
        accuracy, balanced_accuracy, macro_f1, auroc (NaN when the test set lacks a class or
        no probabilities are given); or mse, pearson_r (NaN for constant predictions).
    """
    from sklearn import metrics

    if task == "classification":
        out = {"accuracy": metrics.accuracy_score(y_true, pred),
               "balanced_accuracy": metrics.balanced_accuracy_score(y_true, pred),
               "macro_f1": metrics.f1_score(y_true, pred, average="macro", zero_division=0),
               "auroc": np.nan}
        if proba is not None and len(np.unique(y_true)) > 1:
            classes = np.asarray(classes)
            if set(np.unique(y_true)) <= set(classes.tolist()):
                if len(classes) == 2:
                    out["auroc"] = metrics.roc_auc_score(y_true == classes[1], proba[:, 1])
                elif len(np.unique(y_true)) == len(classes):
                    out["auroc"] = metrics.roc_auc_score(y_true, proba, multi_class="ovr",
                                                         labels=classes)
        return {k: float(v) for k, v in out.items()}
    y_true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    r = np.nan
    if np.std(pred) > 0 and np.std(y_true) > 0:
        r = float(np.corrcoef(y_true, pred)[0, 1])
    return {"mse": float(np.mean((y_true - pred) ** 2)), "pearson_r": r}


def primary_score(task, y_true, pred):
    """The primary metric alone, in numpy (fast: used to pick epochs on val).

    Balanced accuracy (mean recall over the classes present in ``y_true``) or Pearson r.
    """
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    if task == "classification":
        return float(np.mean([np.mean(pred[y_true == c] == c) for c in np.unique(y_true)]))
    y_true, pred = y_true.astype(np.float64), pred.astype(np.float64)
    if np.std(pred) == 0 or np.std(y_true) == 0:
        return np.nan
    return float(np.corrcoef(y_true, pred)[0, 1])
