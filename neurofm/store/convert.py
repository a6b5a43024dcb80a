"""Convert recording files, or a whole BIDS dataset, into a training store.

This module sits above the readers (:mod:`neurofm.io`) and the stores (:mod:`neurofm.store`);
``neurofm convert`` calls it.

- **Idempotent.** Every recording remembers its source (``source_file``: the resolved input
  path, ``source_hash``: :func:`source_hash` of its bytes). Converting again skips a source
  already in the store with the same content; a source whose content changed is converted
  again and replaces its stale recordings (with a warning); ``overwrite=True`` rebuilds the
  store from scratch.
- **Options are checked first.** Reader options (``montage=``, ``standardize=`` ...) are
  validated against the signatures of the readers of the inputs before anything is read: a
  typo raises :class:`ReaderOptionError` naming the option and the accepted ones.
- **Failures are per file.** A file whose reader raises a
  :class:`~neurofm.errors.NeurofmError` is reported and skipped (``strict=True`` stops
  instead); any other exception is a bug and propagates. Each recording is added atomically,
  so the store stays consistent whatever happens. When nothing could be converted no store is
  created (an existing one is left untouched) and :class:`ConversionError` lists every failure.
- **BIDS names are used.** Subject, session, task, acquisition and run come from the BIDS
  entities of the file name (or of the enclosing ``*_suite2p`` folder and the ``sub-*`` /
  ``ses-*`` folders) and build the recording id (``sub-01_task-rest_eeg``,
  ``sub-07_task-spont_plane0``).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import re
from pathlib import Path

from .._logging import logger, progress, use_log_level
from ..errors import FormatError, NeurofmError
from ..io.bids import (
    DATATYPES,
    RECORDING_COLUMNS,
    find_recordings,
    is_bids_root,
    parse_entities,
)
from .core import entity_id, is_store, open_store, write_store

__all__ = [
    "ConversionError",
    "ReaderOptionError",
    "bids_recordings",
    "convert_bids",
    "convert_files",
    "source_entities",
    "source_hash",
]

#: Entities that land in the recording attrs and the manifest (BIDS order).
_ENTITIES = ("subject", "session", "task", "acquisition", "run")
#: Entities that make up recording ids.
_ID_KEYS = ("subject", "session", "task", "acquisition", "run", "space")
#: Datatypes :func:`convert_bids` knows: the BIDS ones plus suite2p calcium imaging.
BIDS_DATATYPES = (*DATATYPES, "ophys")
_PLANE = re.compile(r"plane(\d+)")
#: Files that share the stem of a multi-file format and hold its data.
_COMPANIONS = {".vhdr": (".eeg", ".vmrk"), ".ahdr": (".eeg", ".amrk"), ".set": (".fdt",)}
#: suite2p's registered movies: never read by neurofm, often gigabytes; left out of hashes.
_UNHASHED = {"data.bin", "data_raw.bin", "data_chan2.bin", "data_raw_chan2.bin"}
_SKIP_DIRS = {"sourcedata", "code", "stimuli", "phenotype"}


class ConversionError(NeurofmError):
    """Nothing was converted: every input failed (or none could be converted).

    Attributes
    ----------
    failures : list of dict
        ``{"path", "error"}`` for every input that failed.
    skipped : list of str
        Inputs left out on purpose (BOLD runs without an atlas).
    """

    def __init__(self, message, failures=(), skipped=()):
        super().__init__(message)
        self.failures = list(failures)
        self.skipped = list(skipped)


class ReaderOptionError(NeurofmError, TypeError):
    """A reader option that none of the readers of the inputs accepts (or a missing one)."""


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------
def convert_files(inputs, out, *, strict=False, overwrite=False, chunk_seconds=None,
                  compressor=None, verbose=None, **read_kwargs):
    """Read recording files with the readers of :mod:`neurofm.io` and add them to a store.

    Parameters
    ----------
    inputs : sequence of str | os.PathLike
        Files or directory formats (suite2p plane folders, CTF ``.ds``) that
        :func:`neurofm.io.read` reads.
    out : str | os.PathLike
        Store location; an existing store is appended to (sources already in it with the same
        content are skipped, changed ones are replaced) unless ``overwrite``.
    strict : bool
        Stop at the first failing file (re-raising its error) instead of skipping it.
    overwrite : bool
        Replace an existing store (only once a first recording is ready: when every input
        fails the existing store is left as it was).
    chunk_seconds, compressor
        Store layout (see :meth:`neurofm.store.Store.add`).
    verbose : bool | str | None
        Log level and progress bar.
    **read_kwargs
        Reader options (e.g. ``montage=``, ``modality=``, ``atlas=``); each reader gets the
        ones its signature accepts, and every option must be accepted by at least one of the
        readers of ``inputs``.

    Returns
    -------
    store : neurofm.store.Store
        With ``store.failures`` (``{"path", "error"}`` for every skipped file),
        ``store.unchanged`` (sources already in the store, not converted again),
        ``store.added`` and ``store.replaced`` (recording ids written by this call).

    Raises
    ------
    ReaderOptionError
        An option no reader of the inputs accepts, or a BOLD image without ``atlas=``.
    ConversionError
        Nothing could be converted (every input failed); no store was created or changed.
    NeurofmError
        With ``strict=True``, the first failure.
    """
    with use_log_level(verbose):
        paths = [Path(p) for p in inputs]
        if not paths:
            raise NeurofmError("convert_files: no input files given")
        jobs, failures = [], []
        for path in paths:
            try:
                name, func = _reader_of(path)
            except NeurofmError as err:  # no reader for this file: a failure like any other
                if strict:
                    raise
                failures.append(_failure(path, err))
                continue
            jobs.append((path, name, func))
        _check_options(read_kwargs, [(name, func, path) for path, name, func in jobs])
        bold = [str(path) for path, name, _ in jobs if name == "read_fmri"]
        if bold and "atlas" not in read_kwargs:
            raise ReaderOptionError(
                f"{bold[0]}: converting a BOLD image needs atlas= (--atlas): a labels/maps "
                "image, a coordinate table or an offline atlas name such as 'power_2011'")
        conv = _Converter(out, overwrite=overwrite, chunk_seconds=chunk_seconds,
                          compressor=compressor, unique_ids=True)
        conv.failures.extend(failures)
        for path, _, func in progress(jobs, verbose=verbose, desc="converting", unit="file"):
            ents, base_id = source_entities(path)

            def read(path=path, func=func):
                return func(path, **_accepted(func, read_kwargs, path))

            conv.convert(path, read, ents, base_id, strict=strict)
        return conv.finish(what=f"{len(paths)} input(s)")


def convert_bids(root, out, *, datatype=None, atlas=None, strict=False, overwrite=False,
                 chunk_seconds=None, compressor=None, verbose=None, **read_kwargs):
    """Convert every recording of a BIDS dataset into a training store.

    EEG/MEG/iEEG files go through the reader :func:`neurofm.io.read` picks; BOLD runs through
    :func:`neurofm.io.fmri.read_fmri` with ``atlas`` (fMRIPrep ``desc-preproc`` outputs under
    ``derivatives/`` replace the raw run of the same entities and bring their confounds);
    suite2p plane folders (``*_suite2p/planeN``, datatype "ophys") through
    :func:`neurofm.io.calcium.read_calcium`. One recording per file (see
    :func:`bids_recordings`); subject, session, task and run land in the manifest.

    A file that fails is logged, collected in ``store.failures`` and skipped; each recording
    is added atomically, so the store stays consistent whatever happens. An existing store
    is resumed: sources already in it with the same content are not converted again, changed
    ones are converted again and replace their stale recordings.

    Parameters
    ----------
    root : str | os.PathLike
        BIDS dataset root.
    out : str | os.PathLike
        Store location.
    datatype : str | sequence of str, optional
        Restrict to these datatypes ("eeg", "meg", "ieeg", "func", "ophys").
    atlas : optional
        Atlas for BOLD runs (see :func:`~neurofm.io.fmri.read_fmri`); a path holding
        ``{subject}`` (``{session}``, ``{task}``, ``{run}``) names each subject's own atlas.
        Without it BOLD runs are skipped with a warning naming them, and listed in
        ``store.skipped``.
    strict : bool
        Stop at the first failing file (re-raising its error) instead of skipping it.
    overwrite : bool
        Replace an existing store at ``out`` instead of resuming it.
    chunk_seconds, compressor
        Store layout (see :meth:`neurofm.store.Store.add`).
    verbose : bool | str | None
        Log level and progress bar.
    **read_kwargs
        Reader options (e.g. ``montage=`` for EEG, ``standardize=`` or ``confounds=`` for
        fMRI); each reader gets the ones it accepts, and every option must be accepted by at
        least one reader of the recordings converted.

    Returns
    -------
    store : neurofm.store.Store
        The store; ``store.failures`` lists ``{"path", "error"}`` for every failed file,
        ``store.skipped`` the BOLD runs left out for want of an atlas, ``store.unchanged``
        the sources already converted, ``store.added`` / ``store.replaced`` the ids written.

    Raises
    ------
    FormatError
        ``root`` is not a BIDS dataset.
    ReaderOptionError
        An option that no reader of the recordings accepts.
    ConversionError
        Nothing could be converted (no recording found, all failed, or only BOLD runs and no
        atlas); no store was created or changed.
    """
    with use_log_level(verbose):
        root = Path(root)
        if not is_bids_root(root):
            raise FormatError(f"{root}: not a BIDS dataset; expected a directory with "
                              "dataset_description.json or sub-* folders")
        recs = _conversion_plan(bids_recordings(root, datatype=datatype))
        if not recs:
            raise ConversionError(f"{root}: no recordings found to convert (datatypes "
                                  f"{list(datatype) if datatype else list(BIDS_DATATYPES)})")
        skipped = [rec["path"] for rec in recs if rec["datatype"] == "func" and atlas is None]
        todo = [rec for rec in recs if not (rec["datatype"] == "func" and atlas is None)]
        if skipped:
            logger.warning(
                "%s: %d BOLD run(s) NOT converted because no atlas was given (pass atlas=, "
                "--atlas on the command line, e.g. 'power_2011' or a labels image):\n  %s",
                root, len(skipped), "\n  ".join(skipped))
        if atlas is not None and not any(rec["datatype"] == "func" for rec in todo):
            logger.warning("%s: atlas= given but there is no BOLD run to convert; it is not "
                           "used", root)
        _check_options(read_kwargs, [(*_reader_of(rec["path"], datatype=rec["datatype"]),
                                      rec["path"]) for rec in todo])
        conv = _Converter(out, overwrite=overwrite, chunk_seconds=chunk_seconds,
                          compressor=compressor, unique_ids=False)
        conv.skipped = skipped
        if is_store(out) and not overwrite:
            logger.info("%s: resuming an existing store (%d recordings)", out,
                        len(conv.store))
        for rec in progress(todo, verbose=verbose, desc="converting BIDS", unit="file"):
            conv.convert(rec["path"], lambda rec=rec: _read_bids(rec, atlas, read_kwargs),
                         _rec_entities(rec), _bids_id(rec), strict=strict)
        store = conv.finish(what=f"{len(todo)} recording(s) of {root}")
        logger.info("converted %s into %s: %d recordings", root, out, len(store))
        return store


def bids_recordings(root, *, datatype=None):
    """The recordings of a BIDS tree that :func:`convert_bids` knows about.

    :func:`neurofm.io.bids.find_recordings` (with derivatives) plus suite2p outputs: every
    folder named ``sub-<s>[_ses-<s>]_task-<t>[_run-<r>]_suite2p`` (raw ``ophys/`` folders or
    ``derivatives/<pipeline>/``) gives one row per plane folder (``planeN`` holding
    ``F.npy``), with datatype "ophys" and suffix "suite2p".

    Parameters
    ----------
    root : str | os.PathLike
        BIDS dataset root.
    datatype : str | sequence of str, optional
        Among "eeg", "meg", "ieeg", "func", "ophys"; all by default.

    Returns
    -------
    recordings : pandas.DataFrame
        One row per recording, columns :data:`neurofm.io.bids.RECORDING_COLUMNS`, sorted by
        subject, session, task, run, derivatives and path.
    """
    import pandas as pd

    if datatype is None:
        types = list(BIDS_DATATYPES)
    else:
        types = [datatype] if isinstance(datatype, str) else [str(t) for t in datatype]
        unknown = [t for t in types if t not in BIDS_DATATYPES]
        if unknown:
            raise NeurofmError(f"datatype must be among {BIDS_DATATYPES}; got {unknown}")
    bids_types = [t for t in types if t in DATATYPES]
    df = find_recordings(root, datatype=bids_types, derivatives=True) if bids_types else \
        pd.DataFrame(columns=list(RECORDING_COLUMNS))
    if "ophys" in types:
        rows = _suite2p_rows(Path(root))
        if rows:
            extra = pd.DataFrame(rows, columns=list(RECORDING_COLUMNS))
            df = extra if not len(df) else pd.concat([df, extra], ignore_index=True)
    df = df.sort_values(["subject", "session", "task", "run", "derivatives", "path"])
    return df.reset_index(drop=True)


def source_hash(path):
    """SHA-256 of a recording source: what decides whether it changed since conversion.

    Parameters
    ----------
    path : str | os.PathLike
        A file, or a directory format (suite2p plane folder, CTF ``.ds``).

    Returns
    -------
    digest : str
        64 hex digits. For a single file, the SHA-256 of its bytes (what ``sha256sum``
        prints). Multi-file formats also hash their companions of the same stem (BrainVision
        ``.eeg``/``.vmrk``, EEGLAB ``.fdt``); a directory hashes every file below it in
        sorted order of relative path, each preceded by its path and size (suite2p's
        ``data*.bin`` movies, which no reader uses, are left out).

    Raises
    ------
    FormatError
        ``path`` does not exist or cannot be read.
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{path}: file not found")
    h = hashlib.sha256()
    try:
        if p.is_dir():
            files = sorted((f.relative_to(p).as_posix(), f) for f in p.rglob("*")
                           if f.is_file() and f.name not in _UNHASHED)
            for rel, f in files:
                _hash_member(h, rel, f)
            return h.hexdigest()
        companions = [p.with_suffix(ext) for ext in _COMPANIONS.get(p.suffix.lower(), ())]
        companions = [c for c in companions if c.is_file()]
        if not companions:
            _hash_bytes(h, p)
            return h.hexdigest()
        for f in [p, *companions]:
            _hash_member(h, f.name, f)
        return h.hexdigest()
    except OSError as err:
        raise FormatError(f"{path}: cannot read the source to hash it ({err})") from err


def _hash_bytes(h, path):
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)


def _hash_member(h, name, path):
    """One member of a multi-file source: its name and size, then its bytes."""
    h.update(name.encode("utf-8") + b"\0" + str(path.stat().st_size).encode() + b"\0")
    _hash_bytes(h, path)


def source_entities(path):
    """BIDS entities and recording id of a source file or folder, from its name and path.

    The file name's entities come first (``sub-01_task-rest_eeg.edf``); a suite2p plane folder
    (``planeN``) takes those of its ``*_suite2p`` parent; ``sub-*`` / ``ses-*`` folders among
    the four enclosing folders fill a missing subject / session.

    Parameters
    ----------
    path : str | os.PathLike
        A recording file or directory format.

    Returns
    -------
    entities : dict of str -> str
        subject, session, task, acquisition, run (and space) where found; empty when the
        path carries no subject.
    base_id : str | None
        ``sub-01_task-rest_eeg`` (entities plus the BIDS suffix, "func" for "bold") or
        ``sub-07_task-spont_plane0``; None without entities (the store then derives the id
        from the file name).
    """
    p = Path(path)
    plane = _PLANE.fullmatch(p.name)
    ents = parse_entities(p.parent.name if plane else p.name)
    if plane and ents.get("suffix") != "suite2p":
        ents = {}
    for parent in list(p.resolve().parents)[:4]:
        key, _, value = parent.name.partition("-")
        if key in ("sub", "ses") and value and "_" not in parent.name:
            ents.setdefault("subject" if key == "sub" else "session", value)
    if not ents.get("subject"):
        return {}, None
    suffix = f"plane{plane.group(1)}" if plane else \
        {"bold": "func"}.get(ents.get("suffix", ""), ents.get("suffix", ""))
    found = {k: str(ents[k]) for k in (*_ENTITIES, "space") if ents.get(k)}
    return found, entity_id(found, keys=_ID_KEYS, suffix=suffix or None) or None


# --------------------------------------------------------------------------------------------
# the conversion loop shared by convert_files and convert_bids
# --------------------------------------------------------------------------------------------
class _Converter:
    """Adds sources to a store, skipping unchanged ones and replacing changed ones.

    The store is created only when the first recording is ready, so that a conversion in
    which everything fails leaves no empty store behind (and an existing store untouched).
    """

    def __init__(self, out, *, overwrite, chunk_seconds, compressor, unique_ids):
        self.out, self.overwrite = out, overwrite
        self.layout = {"chunk_seconds": chunk_seconds, "compressor": compressor}
        self.unique_ids = unique_ids
        self.store = open_store(out) if is_store(out) and not overwrite else None
        self.failures, self.skipped, self.unchanged = [], [], []
        self.added, self.replaced = [], []
        self.by_path, self.by_id = {}, {}
        if self.store is not None:
            for rec_id, src, digest in _stored_sources(self.store):
                self.by_path.setdefault(src, []).append((rec_id, digest))
                self.by_id[rec_id] = (src, digest)

    def convert(self, path, read, ents, base_id, *, strict):
        """Convert one source (``read()`` returns a Dataset or a list of them)."""
        try:
            src = str(Path(path).resolve())
            digest = source_hash(path)
            status, stale = self._status(path, src, digest, base_id)
            if status == "unchanged":
                self.unchanged.append(str(path))
                return
            result = read()
            datasets = result if isinstance(result, list) else [result]
            if not datasets:
                raise FormatError(f"{path}: the reader returned no recording")
            datasets = [_with_source(ds, ents, src, digest) for ds in datasets]
            if stale:
                for ds, rec_id in zip(datasets, stale):
                    self._add(ds, rec_id, replace=True)
                for ds in datasets[len(stale):]:
                    self._add(ds, None)
                if len(stale) > len(datasets):
                    logger.warning("%s: now gives %d recording(s) instead of %d; %s kept "
                                   "from the previous version", path, len(datasets),
                                   len(stale), stale[len(datasets):])
            else:
                self._add(datasets[0], base_id if len(datasets) == 1 else None)
                for ds in datasets[1:]:
                    self._add(ds, None)
        except NeurofmError as err:
            if strict:
                raise
            self.failures.append(_failure(path, err))
            logger.warning("skipped: %s", self.failures[-1]["error"])
        except Exception as err:  # a bug in a reader: stop, but say which file it was
            err.add_note(f"while converting {path} into {self.out}")
            raise

    def _status(self, path, src, digest, base_id):
        rows = self.by_path.get(src, [])
        if rows:
            old = {h for _, h in rows}
            if old <= {digest, ""}:
                if "" in old:
                    logger.info("%s: already in the store as %s (stored without a content "
                                "hash, by an older neurofm); not converted again", path,
                                [r for r, _ in rows])
                else:
                    logger.info("%s: already in the store as %s, unchanged", path,
                                [r for r, _ in rows])
                return "unchanged", []
            ids = [r for r, _ in rows]
            logger.warning("%s changed since it was converted (sha256 %s -> %s): converting it "
                           "again and replacing %s", path, ", ".join(sorted(old - {""}))[:12],
                           digest[:12], ", ".join(ids))
            return "changed", ids
        if base_id is not None and base_id in self.by_id:
            other, other_digest = self.by_id[base_id]
            if other_digest == digest:
                logger.info("%s: the same content is already in the store as %s (converted "
                            "from %s); not converted again", path, base_id, other)
                return "unchanged", []
            if not self.unique_ids:
                raise NeurofmError(
                    f"{path}: the store already holds {base_id!r} converted from a different "
                    f"source ({other}); convert into another store or pass overwrite=True to "
                    "rebuild this one")
        return "new", []

    def _add(self, ds, rec_id, *, replace=False):
        if self.store is None:  # first recording ready: create (or replace) the store now
            self.store = write_store([], self.out, overwrite=self.overwrite)
        if rec_id is not None and not replace and rec_id in self.store:
            rec_id = _unique(self.store, rec_id)
        rec_id = self.store.add(ds, id=rec_id, overwrite=replace, **self.layout)
        (self.replaced if replace else self.added).append(rec_id)
        self.by_id[rec_id] = (ds.attrs["source_file"], ds.attrs["source_hash"])

    def finish(self, *, what):
        if not self.added and not self.replaced and not self.unchanged:
            lines = [f"  {f['error']}" for f in self.failures]
            lines += [f"  {p}: BOLD run skipped, no atlas given" for p in self.skipped]
            state = ("the existing store was left unchanged" if is_store(self.out)
                     else "no store was created")
            raise ConversionError(
                f"nothing was converted into {self.out} ({state}): of {what}, "
                f"{len(self.failures)} failed and {len(self.skipped)} were skipped:\n"
                + "\n".join(lines), self.failures, self.skipped)
        store = self.store
        store.failures, store.skipped, store.unchanged = (self.failures, self.skipped,
                                                          self.unchanged)
        store.added, store.replaced = self.added, self.replaced
        return store


def _stored_sources(store):
    """(id, resolved source path, source hash) of every recording in the store.

    From the manifest's ``source_file`` / ``source_hash`` columns; rows without a source
    (manifests written before those columns existed) read it from the recording's attrs.
    """
    m = store.manifest
    files = m["source_file"] if "source_file" in m.columns else [""] * len(m)
    hashes = m["source_hash"] if "source_hash" in m.columns else [""] * len(m)
    out = []
    for rec_id, src, digest in zip(m["id"], files, hashes):
        src, digest = str(src or ""), str(digest or "")
        if not src:
            attrs = store.open(rec_id).attrs
            src = str(attrs.get("source_file", "") or "")
            digest = str(attrs.get("source_hash", "") or "")
        out.append((str(rec_id), src, digest))
    return out


def _with_source(ds, ents, src, digest):
    """A shallow copy of ``ds`` with the BIDS entities and the source path and hash."""
    out = ds.copy(deep=False)
    out.attrs = dict(ds.attrs)
    for key, value in ents.items():
        if key in _ENTITIES:
            out.attrs[key] = str(value)
    out.attrs["source_file"] = src
    out.attrs["source_hash"] = digest
    return out


def _unique(store, base):
    taken = set(store.ids)
    k = 2
    while f"{base}-{k}" in taken:
        k += 1
    return f"{base}-{k}"


def _failure(path, err):
    """``{"path", "error"}``; the error names the file (readers' errors already do)."""
    message = str(err)
    if str(path) not in message:
        message = f"{path}: {message}"
    return {"path": str(path), "error": message}


# --------------------------------------------------------------------------------------------
# readers and their options
# --------------------------------------------------------------------------------------------
def _reader_of(path, datatype=None):
    """(name, function) of the reader that converts ``path``."""
    if datatype == "func":
        from ..io.fmri import read_fmri

        return "read_fmri", read_fmri
    from ..io import find_reader

    reader = find_reader(Path(path))
    if reader.name == "fmri":  # io.read's entry only adds a message about atlas=
        from ..io.fmri import read_fmri

        return "read_fmri", read_fmri
    func = reader.load()
    return getattr(func, "__name__", reader.name), func


def _options_of(func, path):
    """Keyword options ``func`` accepts when reading ``path``; None when that cannot be told.

    The named parameters after the first (the path); for a reader that also takes
    ``**kwargs`` (:func:`~neurofm.io.ephys.read_ephys` passes them to MNE's reader of the
    format) the options that reader takes for this file's format.
    """
    params = list(inspect.signature(func).parameters.values())
    named = {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return named
    extra = _passthrough_options(func, path)
    return None if extra is None else named | extra


def _passthrough_options(func, path):
    """The MNE options :func:`~neurofm.io.ephys.read_ephys` passes on for ``path``'s format
    (None for another reader taking ``**kwargs``: it checks its options itself)."""
    from ..io import ephys

    if func is not getattr(ephys, "read_ephys", None):
        return None
    try:
        readers = ephys._MNE_READERS.get(ephys._source_format(path), ())
        own = set(ephys._OWN_ARGS)
    except AttributeError:  # pragma: no cover - read_ephys checks them when reading
        return None
    import mne

    accepted = set()
    for name in readers:
        if hasattr(mne.io, name):
            accepted |= {p.name for p in inspect.signature(getattr(mne.io, name)).parameters
                         .values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return accepted - own


def _check_options(options, jobs):
    """Every option must be accepted by the reader of at least one input.

    Parameters
    ----------
    options : dict
        Reader options.
    jobs : iterable of (name, function, path)
        The reader of every input.
    """
    if not options:
        return
    accepted = {}
    for name, func, path in jobs:
        key = (name, _format_of(path))
        if key not in accepted:
            accepted[key] = _options_of(func, path)
    if not accepted:
        return
    known = sorted(set().union(*[a for a in accepted.values() if a is not None]))
    for key in options:
        if any(a is None or key in a for a in accepted.values()):
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        readers = ", ".join(sorted({f"{name} ({fmt} files)" if fmt else name
                                    for name, fmt in accepted}))
        raise ReaderOptionError(
            f"unknown reader option {key!r}{hint}: no reader of these inputs takes it "
            f"({readers}); accepted options: {known}")


def _format_of(path):
    p = Path(path)
    if p.is_dir() and not p.suffix:
        return "folder"
    name = p.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else p.suffix.lower()


def _accepted(func, kwargs, path):
    options = _options_of(func, path)
    if options is None:
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in options}


# --------------------------------------------------------------------------------------------
# BIDS
# --------------------------------------------------------------------------------------------
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


def _suite2p_rows(root):
    """One :data:`RECORDING_COLUMNS` row per plane folder of every ``*_suite2p`` folder."""
    from ..io.calcium import _is_suite2p_dir

    rows = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).parts
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (not rel and d in _SKIP_DIRS))
        ents = parse_entities(here.name)
        if ents.get("suffix") != "suite2p" or "subject" not in ents:
            continue
        dirnames[:] = []  # a recording: do not look further down
        planes = [here / d for d in sorted(os.listdir(here), key=_plane_order)
                  if _PLANE.fullmatch(d) and _is_suite2p_dir(here / d)]
        if not planes:
            logger.warning("%s: a suite2p folder without plane folders holding F.npy; "
                           "skipped", here)
            continue
        pipeline = rel[1] if len(rel) > 1 and rel[0] == "derivatives" else ""
        for plane in planes:
            rows.append({
                "subject": ents.get("subject", ""), "session": ents.get("session", ""),
                "task": ents.get("task", ""), "acquisition": ents.get("acquisition", ""),
                "run": ents.get("run", ""), "datatype": "ophys", "suffix": "suite2p",
                "extension": "", "space": "", "desc": "", "derivatives": pipeline,
                "path": str(plane), "confounds": "", "sidecar": "",
            })
    return rows


def _plane_order(name):
    m = _PLANE.fullmatch(name)
    return (0, int(m.group(1))) if m else (1, 0)


def _rec_entities(rec):
    return {k: str(rec[k]) for k in (*_ENTITIES, "space") if rec.get(k)}


def _bids_id(rec):
    if rec["datatype"] == "ophys":
        plane = _PLANE.fullmatch(Path(rec["path"]).name)
        return entity_id(rec, keys=_ID_KEYS, suffix=f"plane{plane.group(1)}")
    return entity_id(rec, keys=_ID_KEYS, suffix=rec["datatype"])


def _atlas_for(atlas, rec):
    """A path with ``{subject}`` (``{session}``, ``{task}``, ``{run}``) placeholders names each
    subject's own (native-space) atlas; anything else is used as is."""
    if isinstance(atlas, (str, os.PathLike)) and "{" in os.fspath(atlas):
        try:
            return os.fspath(atlas).format(**{k: rec.get(k) or "" for k in
                                              ("subject", "session", "task", "run")})
        except (KeyError, IndexError, ValueError) as err:
            raise FormatError(f"atlas {os.fspath(atlas)!r}: bad placeholder ({err}); use "
                              "{subject}, {session}, {task} or {run}") from None
    return atlas


def _read_bids(rec, atlas, read_kwargs):
    path = rec["path"]
    name, func = _reader_of(path, datatype=rec["datatype"])
    kwargs = _accepted(func, read_kwargs, path)
    if name == "read_fmri":
        if rec["confounds"] and "confounds" not in kwargs:
            kwargs["confounds"] = "fmriprep"
        kwargs["atlas"] = _atlas_for(atlas, rec)
    elif "modality" in inspect.signature(func).parameters and "modality" not in kwargs:
        kwargs["modality"] = rec["datatype"]
    ds = func(path, **kwargs)
    if isinstance(ds, list):
        raise FormatError(f"{path}: the reader returned {len(ds)} recordings; expected one")
    out = ds.copy(deep=False)
    out.attrs = dict(ds.attrs)
    out.attrs["bids_datatype"] = rec["datatype"]
    return out
