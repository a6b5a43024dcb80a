"""Convert recording files, or a whole BIDS dataset, into a training store.

This module sits above the readers (:mod:`neurofm.io`) and the stores (:mod:`neurofm.store`);
``neurofm convert`` calls it. Each recording is added atomically, a file that fails is
reported and skipped (``strict=True`` stops instead), and the store stays consistent
whatever happens.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from .._logging import logger, progress, use_log_level
from ..errors import FormatError, NeurofmError
from ..io.bids import find_recordings, is_bids_root
from .core import entity_id, is_store, open_store, write_store

__all__ = ["convert_bids", "convert_files"]


def convert_files(inputs, out, *, strict=False, overwrite=False, chunk_seconds=None,
                  compressor=None, verbose=None, **read_kwargs):
    """Read recording files with :func:`neurofm.io.read` and add them to a store.

    Parameters
    ----------
    inputs : sequence of str | os.PathLike
        Files or directory formats that :func:`neurofm.io.read` reads.
    out : str | os.PathLike
        Store location; an existing store is appended to unless ``overwrite``.
    strict : bool
        Stop at the first failing file (re-raising its error) instead of skipping it.
    overwrite : bool
        Replace an existing store.
    chunk_seconds, compressor
        Store layout (see :meth:`neurofm.store.Store.add`).
    verbose : bool | str | None
        Log level and progress bar.
    **read_kwargs
        Passed to the reader (e.g. ``montage=``, ``modality=``, ``atlas=``).

    Returns
    -------
    store : neurofm.store.Store
        With ``store.failures``: a list of ``{"path", "error"}`` for every skipped file.
    """
    from ..io import read

    with use_log_level(verbose):
        if is_store(out) and not overwrite:
            store = open_store(out)
        else:
            store = write_store([], out, overwrite=overwrite)
        failures = []
        for path in progress(list(inputs), verbose=verbose, desc="converting", unit="file"):
            try:
                result = read(path, **read_kwargs)
                for ds in (result if isinstance(result, list) else [result]):
                    store.add(ds, chunk_seconds=chunk_seconds, compressor=compressor)
            except NeurofmError as err:
                if strict:
                    raise
                failures.append({"path": str(path), "error": str(err)})
                logger.warning("skipped %s: %s", path, err)
        store.failures = failures
        return store


def convert_bids(root, out, *, datatype=None, atlas=None, strict=False, overwrite=False,
                 chunk_seconds=None, compressor=None, verbose=None, **read_kwargs):
    """Convert every recording of a BIDS dataset into a training store.

    EEG/MEG/iEEG files go through :func:`neurofm.io.read`; BOLD runs through
    :func:`neurofm.io.fmri.read_fmri` with ``atlas`` (fMRIPrep ``desc-preproc`` outputs under
    ``derivatives/`` replace the raw run of the same entities and bring their confounds).
    One recording per file; subject, session, task and run land in the manifest. A file that
    fails is logged, collected in ``store.failures`` and skipped; each recording is added
    atomically, so the store stays consistent whatever happens. An existing store is
    resumed: recordings already in it are not converted again.

    Parameters
    ----------
    root : str | os.PathLike
        BIDS dataset root.
    out : str | os.PathLike
        Store location.
    datatype : str | sequence of str, optional
        Restrict to these datatypes ("eeg", "meg", "ieeg", "func").
    atlas : optional
        Atlas for BOLD runs (see :func:`~neurofm.io.fmri.read_fmri`). Without it BOLD runs
        are skipped (with a warning).
    strict : bool
        Stop at the first failing file (re-raising its error) instead of skipping it.
    overwrite : bool
        Replace an existing store at ``out`` instead of resuming it.
    chunk_seconds, compressor
        Store layout (see :meth:`neurofm.store.Store.add`).
    verbose : bool | str | None
        Log level and progress bar.
    **read_kwargs
        Passed to the readers that accept them (e.g. ``montage=`` for EEG, ``standardize=``
        or ``confounds=`` for fMRI).

    Returns
    -------
    store : neurofm.store.Store
        The store; ``store.failures`` lists ``{"path", "error"}`` for every skipped file and
        ``store.skipped`` the BOLD runs left out for want of an atlas.

    Raises
    ------
    FormatError
        ``root`` is not a BIDS dataset.
    """
    with use_log_level(verbose):
        root = Path(root)
        if not is_bids_root(root):
            raise FormatError(f"{root}: not a BIDS dataset; expected a directory with "
                              "dataset_description.json or sub-* folders")
        recs = _conversion_plan(find_recordings(root, datatype=datatype, derivatives=True))
        if is_store(out) and not overwrite:
            store = open_store(out)
            logger.info("%s: resuming an existing store (%d recordings)", out, len(store))
        else:
            store = write_store([], out, overwrite=overwrite)
        failures, skipped = [], []
        todo = []
        for rec in recs:
            if rec["datatype"] == "func" and atlas is None:
                skipped.append(rec["path"])
                continue
            todo.append(rec)
        if skipped:
            logger.warning("%s: %d BOLD run(s) skipped: pass atlas= to convert fMRI (e.g. "
                           "atlas='power_2011')", root, len(skipped))
        for rec in progress(todo, verbose=verbose, desc="converting BIDS", unit="file"):
            rec_id = entity_id(rec, keys=("subject", "session", "task", "acquisition", "run",
                                          "space"), suffix=rec["datatype"])
            if rec_id in store:
                logger.info("%s: already in the store as %s", rec["path"], rec_id)
                continue
            try:
                ds = _read_one(rec, atlas, read_kwargs)
                ds = _with_entities(ds, rec)
                store.add(ds, id=rec_id, chunk_seconds=chunk_seconds,
                          compressor=compressor)
            except Exception as err:  # any reader error: report, skip, go on
                if strict:
                    raise
                message = f"{type(err).__name__}: {err}"
                failures.append({"path": rec["path"], "error": message})
                logger.warning("%s: skipped (%s)", rec["path"], message)
        if failures:
            logger.warning("%s: %d of %d file(s) failed and were skipped", root, len(failures),
                           len(todo))
        store.failures = failures
        store.skipped = skipped
        logger.info("converted %s into %s: %d recordings", root, out, len(store))
        return store


def _conversion_plan(df):
    """Rows to convert: fMRIPrep preproc runs replace the raw BOLD of the same entities."""
    rows = df.to_dict("records")
    key_cols = ("subject", "session", "task", "acquisition", "run")
    derived = {tuple(r[c] for c in key_cols) for r in rows
               if r["datatype"] == "func" and r["derivatives"]}
    plan = []
    for r in rows:
        if r["datatype"] == "func" and not r["derivatives"] and \
                tuple(r[c] for c in key_cols) in derived:
            continue
        plan.append(r)
    return plan


def _accepted(func, kwargs):
    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def _read_one(rec, atlas, read_kwargs):
    path = rec["path"]
    if rec["datatype"] == "func":
        from ..io.fmri import read_fmri

        kwargs = _accepted(read_fmri, read_kwargs)
        if rec["confounds"] and "confounds" not in kwargs:
            kwargs["confounds"] = "fmriprep"
        return read_fmri(path, atlas=atlas, **kwargs)
    from ..io import find_reader

    reader = find_reader(Path(path)).load()
    kwargs = _accepted(reader, read_kwargs)
    if "modality" in inspect.signature(reader).parameters and "modality" not in kwargs:
        kwargs["modality"] = rec["datatype"]
    ds = reader(path, **kwargs)
    if isinstance(ds, list):
        raise FormatError(f"{path}: the reader returned {len(ds)} recordings; expected one")
    return ds


def _with_entities(ds, rec):
    out = ds.copy(deep=False)
    out.attrs = dict(ds.attrs)
    for key in ("subject", "session", "task", "run"):
        if rec.get(key):
            out.attrs[key] = str(rec[key])
    out.attrs["bids_datatype"] = rec["datatype"]
    if rec.get("acquisition"):
        out.attrs["acquisition"] = str(rec["acquisition"])
    return out
