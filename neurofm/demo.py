"""The main job on bundled real data: ``make demo`` (``python -m neurofm.demo``).

Today it converts the real EEG that ships inside PyPI wheels (spkit's 14-channel Emotiv
recording and pyedflib's EDF+ test recording) into a training store, prints the store's
summary and reads a few random training windows back from it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo"]


def run_demo(out="demo_out", *, window_s=2.0, n_windows=256, seed=0, verbose=None):
    """Convert the bundled real EEG into a store and read random windows from it.

    Parameters
    ----------
    out : str | pathlib.Path
        Output directory; the store is written to ``out/store`` (replaced if present).
    window_s : float
        Length of the random windows read back, in seconds.
    n_windows : int
        How many random windows to read per recording.
    seed : int
        Seed of the window positions.

    Returns
    -------
    store : neurofm.store.Store
    """
    from .datasets import pyedflib_file, spkit_eeg
    from .io import read_ephys
    from .store import write_store
    from .store.summary import format_recording, format_store, summarize_recording

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recordings = [spkit_eeg(), read_ephys(pyedflib_file("test_generator.edf"))]
    recordings[1].attrs.update(subject="edfgen", task="generator")
    for ds in recordings:
        print(format_recording(summarize_recording(ds)), end="\n\n")
    store = write_store(recordings, out / "store", overwrite=True, verbose=verbose)
    print(format_store(store))
    rng = np.random.default_rng(seed)
    print()
    for rec_id, row in store.manifest.set_index("id").iterrows():
        length = int(window_s * row["sfreq"])
        starts = rng.integers(0, row["n_times"] - length, n_windows)
        t0 = time.perf_counter()
        windows = np.stack([store.read_window(rec_id, s, s + length) for s in starts])
        dt = time.perf_counter() - t0
        print(f"{rec_id}: {n_windows} random {window_s:g}-s windows {windows.shape[1:]} in "
              f"{dt * 1e3:.1f} ms ({n_windows / dt:,.0f} windows/s); mean |x| = "
              f"{np.abs(windows).mean():.2f} {recordings[0]['signal'].attrs['units']}")
    print(f"\nstore written to {out / 'store'}")
    return store


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m neurofm.demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output directory")
    args = parser.parse_args(argv)
    run_demo(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
