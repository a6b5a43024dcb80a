"""Random training windows: neurofm store vs MNE lazy reads (braindecode style).

A 64-channel, 1-hour EEG recording (generated: random 1/f-like noise) is written to EDF with
MNE's exporter, converted into a neurofm store with ``neurofm convert`` semantics, and then
random 2-second windows are read:

- MNE: ``raw.get_data(start=s, stop=s + n)`` on a non-preloaded raw (what braindecode does);
- neurofm: ``Store.read_window(id, s, s + n)``;
- zarr: the same slice through zarr-python on the store's array (a floor for any zarr reader);
- numpy memmap: the same float32 samples as one contiguous (channel, time) ``.npy`` opened
  with ``np.load(mmap_mode="r")`` and sliced into a fresh array (the floor for any reader of
  uncompressed samples on this disk).

Usage::

    python benchmarks/bench_windows.py [--hours 1] [--sfreq 256] [--n-windows 2000]

Prints windows/s for each and the ratios (goal: neurofm >= 10x MNE; close to the memmap
floor).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_edf(path, n_channels, sfreq, hours, seed=0):
    import mne
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n_times = int(hours * 3600 * sfreq)
    white = rng.standard_normal((n_channels, n_times))
    # 1/f-ish colouring by leaky integration (y[t] = 0.98 y[t-1] + x[t]), then ~20 uV
    data = lfilter([1.0], [1.0, -0.98], white, axis=1)
    data *= 20e-6 / data.std()
    info = mne.create_info([f"EEG{i:03d}" for i in range(n_channels)], sfreq, "eeg")
    raw = mne.io.RawArray(data, info, verbose="error")
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")


def _time_windows(read, starts, length, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for s in starts:
            read(int(s), int(s) + length)
        best = min(best, time.perf_counter() - t0)
    return len(starts) / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--sfreq", type=float, default=256.0)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--n-windows", type=int, default=2000)
    parser.add_argument("--compressor", default=None, choices=[None, "zstd", "blosc"])
    parser.add_argument("--workdir", default=None, help="keep files here (default: tmp)")
    args = parser.parse_args(argv)

    import mne
    import zarr

    from neurofm.io import read_ephys
    from neurofm.store import write_store

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        edf = work / f"bench_{args.channels}ch_{args.hours:g}h.edf"
        t0 = time.perf_counter()
        if not edf.exists():
            _make_edf(edf, args.channels, args.sfreq, args.hours)
        t_edf = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = write_store([read_ephys(edf, preload=False)], work / "store", overwrite=True,
                            compressor=args.compressor, verbose=False)
        t_store = time.perf_counter() - t0
        rid = store.ids[0]
        n_times = int(store.manifest["n_times"].iloc[0])
        length = int(args.window_s * args.sfreq)
        starts = np.random.default_rng(1).integers(0, n_times - length, args.n_windows)

        raw = mne.io.read_raw_edf(edf, preload=False, verbose="error")
        row = store.manifest.iloc[0]
        arr = zarr.open_group(str(work / "store" / row["path"]), mode="r")["signal"]
        flat = work / "flat.npy"
        np.save(flat, np.asarray(arr[:, :], dtype=np.float32))
        mm = np.load(flat, mmap_mode="r")
        assert store._uses_fast_path(rid), "the default layout must take the memory-mapped path"
        # identical values (EDF is 16-bit; both paths see the same decoded samples)
        s0 = int(starts[0])
        np.testing.assert_allclose(store.read_window(rid, s0, s0 + length),
                                   (raw.get_data(start=s0, stop=s0 + length) * 1e6)
                                   .astype(np.float32), rtol=1e-6, atol=1e-6)

        mne_ws = _time_windows(lambda a, b: raw.get_data(start=a, stop=b), starts, length)
        nf_ws = _time_windows(lambda a, b: store.read_window(rid, a, b), starts, length)
        zarr_ws = _time_windows(lambda a, b: arr[:, a:b], starts, length)
        mm_ws = _time_windows(lambda a, b: np.array(mm[:, a:b]), starts, length)
        np.testing.assert_array_equal(store.read_window(rid, s0, s0 + length),
                                      mm[:, s0:s0 + length])
        mm._mmap.close()  # before the temporary folder goes (Windows)

    print(f"recording: {args.channels} channels x {args.hours:g} h at {args.sfreq:g} Hz "
          f"({n_times} samples); windows {args.window_s:g} s ({length} samples); "
          f"{args.n_windows} random windows, best of 3")
    print(f"setup: EDF export {t_edf:.1f} s, store conversion {t_store:.1f} s, "
          f"compressor={args.compressor}")
    print(f"MNE lazy raw.get_data : {mne_ws:12,.0f} windows/s")
    print(f"zarr array slicing    : {zarr_ws:12,.0f} windows/s")
    print(f"numpy memmap (floor)  : {mm_ws:12,.0f} windows/s")
    print(f"neurofm read_window   : {nf_ws:12,.0f} windows/s")
    print(f"ratio neurofm / MNE   : {nf_ws / mne_ws:8.1f}x   (goal >= 10x)")
    print(f"ratio neurofm / zarr  : {nf_ws / zarr_ws:8.1f}x   (goal: within 2x of zarr, >= 0.5x)")
    print(f"ratio neurofm / memmap: {nf_ws / mm_ws:8.2f}x   (1.0 = the floor of a plain memmap)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
