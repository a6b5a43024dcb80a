"""Subject-disjoint train / val / test splits of a store's manifest."""

from __future__ import annotations

from .._logging import logger

__all__ = ["split_by_subject"]


def split_by_subject(store, ratios=(0.6, 0.2, 0.2), seed=0):
    """Rewrite a store's ``split`` column so that no subject is in two splits.

    Parameters
    ----------
    store : neurofm.store.Store | str | os.PathLike
        The store (its manifest is rewritten atomically).
    ratios : (float, float, float) | dict
        Train / val / test fractions summing to 1 (or ``{"train": .., "val": .., "test": ..}``).
    seed : int
        Seed of the subject shuffle (same draw as the pipelines' split).

    Returns
    -------
    splits : dict of str -> str
        Recording id -> split. A recording without a subject is its own subject.
    """
    from ..errors import NeurofmError
    from ..pipelines import assign_splits
    from ..store import Store, open_store

    if not isinstance(store, Store):
        store = open_store(store)
    if isinstance(ratios, dict):
        unknown = sorted(set(ratios) - {"train", "val", "test"})
        if unknown:
            raise NeurofmError(f"ratios has unknown splits {unknown}; use train, val, test")
        fractions = {k: ratios.get(k, 0.0) for k in ("train", "val", "test")}
    else:
        ratios = tuple(ratios)
        if len(ratios) != 3:
            raise NeurofmError(f"ratios must be (train, val, test); got {ratios!r}")
        fractions = dict(zip(("train", "val", "test"), ratios))
    manifest = store.refresh().manifest
    subjects = [s if s else f"recording:{r}" for s, r in zip(manifest["subject"],
                                                             manifest["id"])]
    by_subject = assign_splits(subjects, seed=seed, **fractions)
    splits = {str(r): by_subject[s] for r, s in zip(manifest["id"], subjects)}
    store.set_split(splits)
    logger.info("split %d recordings of %d subjects: %s", len(splits), len(by_subject),
                {k: list(by_subject.values()).count(k) for k in ("train", "val", "test")})
    return splits
