"""The seeded train / val / test split of a pipeline's recordings, drawn by subject."""

from __future__ import annotations

from ..errors import NeurofmError

__all__ = ["assign_splits", "recording_splits"]


def assign_splits(subjects, *, train=0.6, val=0.2, test=0.2, seed=0):
    """Assign each subject to train / val / test with a seeded shuffle.

    Counts follow the fractions by largest remainder; every split with a positive fraction
    gets at least one subject when there are enough subjects. All recordings of a subject
    share its split, so no subject leaks across splits.

    Parameters
    ----------
    subjects : iterable of str
        Subject labels (duplicates are ignored).
    train, val, test : float
        Fractions summing to 1.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    splits : dict of str -> str
        Subject -> "train" | "val" | "test".
    """
    import numpy as np

    subs = sorted({str(s) for s in subjects})
    fractions = {"train": float(train), "val": float(val), "test": float(test)}
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise NeurofmError(f"split fractions must be >= 0 and sum to 1; got {fractions}")
    n = len(subs)
    exact = {k: f * n for k, f in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(exact).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    for k in ("train", "val", "test"):
        if fractions[k] > 0 and counts[k] == 0:
            donor = max(counts, key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    perm = np.random.default_rng(seed).permutation(n)
    labels = ["train"] * counts["train"] + ["val"] * counts["val"] + ["test"] * counts["test"]
    return {subs[i]: labels[j] for j, i in enumerate(perm)}


def recording_splits(recordings, split):
    """The split of each recording of a pipeline (all recordings of a subject share one).

    Parameters
    ----------
    recordings : pandas.DataFrame
        Rows of :func:`neurofm.pipelines.discover` (columns ``id`` and ``subject``).
    split : dict
        The ``store.split`` config section: ``train``, ``val``, ``test`` fractions and
        ``seed``.

    Returns
    -------
    splits : dict of str -> str
        Recording id -> "train" | "val" | "test".
    """
    by_subject = assign_splits(recordings["subject"], **split)
    return {r.id: by_subject[r.subject] for r in recordings.itertuples()}
