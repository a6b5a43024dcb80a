"""Subject-disjoint train / val / test splits of windows, one per seed."""

from __future__ import annotations

import numpy as np

from ..errors import DataError, NeurofmError

__all__ = ["assert_subject_disjoint", "subject_splits"]

SPLITS = ("train", "val", "test")


def _counts(n, fractions):
    """Subjects per split for n subjects: at least one test (and val when n >= 3)."""
    n_test = max(1, round(fractions[2] * n))
    n_val = max(1, round(fractions[1] * n)) if fractions[1] > 0 and n >= 3 else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(f"{n} subject(s) cannot make subject-disjoint train/val/test splits "
                        f"with fractions {fractions}")
    return n_train, n_val, n_test


def subject_splits(subjects, y=None, *, seed=0, fractions=(0.6, 0.2, 0.2), stratify=True):
    """Split windows so that every subject is in exactly one of train / val / test.

    Parameters
    ----------
    subjects : array of str of shape (n,)
        Subject of each window (a recording without subject should carry its id).
    y : array of shape (n,), optional
        Class labels; with ``stratify`` the subjects of each class (a subject's most common
        label) are split separately, so every split sees every class when possible.
    seed : int
        Seed of the subject shuffle.
    fractions : (float, float, float)
        Train / val / test fractions of the subjects.

    Returns
    -------
    splits : dict of str -> int64 array
        Window indices of "train", "val" and "test".

    Raises
    ------
    DataError
        Fewer than two subjects (no subject-disjoint split exists).
    """
    subjects = np.asarray(subjects).astype(str)
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise NeurofmError(f"fractions must be three non-negative numbers summing to 1; got "
                           f"{fractions}")
    unique = sorted(set(subjects))
    if len(unique) < 2:
        raise DataError(f"subject-disjoint splits need at least 2 subjects; the windows come "
                        f"from {len(unique)} ({unique})")
    rng = np.random.default_rng(seed)
    groups = {"all": unique}
    if stratify and y is not None:
        y = np.asarray(y)
        groups = {}
        for s in unique:
            values, counts = np.unique(y[subjects == s], return_counts=True)
            groups.setdefault(values[np.argmax(counts)].item(), []).append(s)
        if any(len(g) < 2 for g in groups.values()):
            groups = {"all": unique}  # too few subjects in a class to stratify
    assigned = {}
    for key in sorted(groups, key=str):
        members = list(groups[key])
        rng.shuffle(members)
        n_train, n_val, _ = _counts(len(members), fractions)
        for k, s in enumerate(members):
            assigned[s] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
    out = {name: np.flatnonzero([assigned[s] == name for s in subjects]).astype(np.int64)
           for name in SPLITS}
    assert_subject_disjoint(subjects, out)
    return out


def assert_subject_disjoint(subjects, splits):
    """Raise unless no subject has windows in two splits.

    Raises
    ------
    DataError
        Naming the subjects found in more than one split.
    """
    subjects = np.asarray(subjects).astype(str)
    seen = {}
    for name, idx in splits.items():
        for s in set(subjects[np.asarray(idx, dtype=np.int64)]):
            seen.setdefault(s, set()).add(name)
    leaks = {s: sorted(v) for s, v in seen.items() if len(v) > 1}
    if leaks:
        raise DataError(f"splits are not subject-disjoint: {dict(list(leaks.items())[:10])}")
