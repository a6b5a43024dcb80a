"""Real recordings that ship inside PyPI wheels (see DATA.md), for the demo, the sample
dataset and the tests. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import FormatError

__all__ = ["package_file", "pyedflib_file", "spkit_eeg", "spkit_eeg_path"]

#: spkit's 14-channel Emotiv EEG (PhyAAt): 128 Hz, 16 s, uV, standard 10-20 names.
SPKIT_EEG_SFREQ = 128.0


def package_file(package, *parts):
    """Path of a file shipped inside an installed package (no import of the package).

    Raises
    ------
    FormatError
        If the package is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FormatError(f"package {package!r} is not installed; it ships the bundled data "
                          f"file {'/'.join(parts)} (pip install 'neurofm[test]')")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise FormatError(f"{path}: bundled data file missing from package {package!r}")
    return path


def spkit_eeg_path():
    """Path of spkit's real EEG pickle ``data/files/EEG16SecData.pkl``."""
    return package_file("spkit", "data", "files", "EEG16SecData.pkl")


def spkit_eeg():
    """spkit's real 14-channel EEG as a canonical recording.

    The pickle holds ``(X, ch_names)`` with X of shape (2048, 14) in uV; it is read with the
    restricted unpickler (numpy arrays and builtins only). Electrode positions come from
    MNE's ``standard_1020`` montage.

    Returns
    -------
    ds : xarray.Dataset
        ``signal`` (14, 2048) float32 in uV at 128 Hz.
    """
    import mne

    from ..io._pickle import restricted_load
    from ..io.ephys import resolve_montage_name
    from ..schema import append_history, make_recording

    path = spkit_eeg_path()
    with open(path, "rb") as fid:
        X, ch_names = restricted_load(fid)
    names = [str(c) for c in ch_names]
    info = mne.create_info(names, SPKIT_EEG_SFREQ, "eeg", verbose="error")
    montage = mne.channels.make_standard_montage(resolve_montage_name("standard_1020"))
    info.set_montage(montage, verbose="error")  # head frame, as read_ephys(montage=)
    positions = [ch["loc"][:3].copy() for ch in info["chs"]]
    ds = make_recording(X.T, channel=names, sfreq=SPKIT_EEG_SFREQ, modality="eeg",
                        ch_pos=positions,
                        pos_coord_frame="head", pos_units="m", source_file=str(path),
                        source_format="spkit-pickle", subject="phyaat", task="rest")
    return append_history(ds, "read_spkit_eeg", path=str(path), montage="standard_1020")


def pyedflib_file(name="test_generator.edf"):
    """Path of an EDF/BDF file shipped with pyedflib (``data/`` or ``tests/data/``)."""
    for parts in (("data", name), ("tests", "data", name)):
        try:
            return package_file("pyedflib", *parts)
        except FormatError:
            continue
    raise FormatError(f"pyedflib ships no file {name!r} (looked in data/ and tests/data/)")
