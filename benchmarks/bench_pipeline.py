"""Benchmark: wall time of the EEG pipeline per recording-hour, with 1 and 2 cores.

The EEG chain of ``pipelines/`` (read -> pick -> notch 50/100 Hz -> band-pass 0.5-40 Hz ->
resample 1000 -> 250 Hz -> average reference -> robust scaling -> store) runs through
``neurofm.pipelines.run_pipeline`` (``python -m snakemake``) on GENERATED 64-channel 1 kHz EEG
(1/f noise plus a 10 Hz rhythm and 50 Hz line noise, written as FIF), once with ``--cores 1``
and once with ``--cores 2`` (one job per recording; QC reports off). Prints seconds of wall
time per hour of recording and the scaling ratio t(1 core) / t(2 cores), and, for reference,
the same chain written directly with MNE's Raw methods in one process (no Snakemake, no
intermediate files, everything in memory).

Then, for one recording, the store write of a lazily filtered chain on its own
(``write_recording`` of notch + band-pass, dask blocks of 120 s): wall time and how many
times the filter ran per block (1 = computed once while written; the validation used to
compute the whole graph a second time).

    python benchmarks/bench_pipeline.py                 # 4 recordings x 5 min
    python benchmarks/bench_pipeline.py --minutes 1 --recordings 2
    python benchmarks/bench_pipeline.py --write-only    # only the store-write figure
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_recordings(folder, n_recordings, minutes, sfreq=1000.0, n_channels=64):
    """Write generated 64-channel EEG as FIF files with BIDS names; return their paths."""
    import mne

    montage = mne.channels.make_standard_montage("biosemi64")
    names = montage.ch_names[:n_channels]
    n = int(minutes * 60 * sfreq)
    t = np.arange(n) / sfreq
    paths = []
    for k in range(n_recordings):
        rng = np.random.default_rng(k)
        spec = np.fft.rfft(rng.standard_normal((n_channels, n)).astype(np.float32), axis=1)
        spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / sfreq), 1.0)).astype(np.float32)
        x = np.fft.irfft(spec, n=n, axis=1)
        x *= 10e-6 / x.std(axis=1, keepdims=True)
        x += 5e-6 * np.sin(2 * np.pi * 10.0 * t) + 2e-6 * np.sin(2 * np.pi * 50.0 * t)
        info = mne.create_info(names, sfreq, "eeg", verbose="error")
        raw = mne.io.RawArray(x, info, verbose="error")
        path = Path(folder) / f"sub-{k + 1:02d}_task-bench_eeg.fif"
        raw.save(path, fmt="single", overwrite=True, verbose="error")
        paths.append(str(path))
    return paths


def config(paths, out_dir):
    return {
        "modality": "eeg", "inputs": paths, "out_dir": str(out_dir),
        "pick": {"ch_type": "eeg"}, "notch": {"freqs": [50.0, 100.0]},
        "bandpass": {"l_freq": 0.5, "h_freq": 40.0}, "resample": {"sfreq": 250.0},
        "reference": "average", "scale": {"method": "robust"},
        "qc": {"enabled": False}, "block_seconds": 120,
    }


def run(paths, work, cores):
    from neurofm.pipelines import run_pipeline

    out = work / f"out-{cores}"
    shutil.rmtree(out, ignore_errors=True)
    old = os.getcwd()
    os.chdir(work)
    try:
        t0 = time.perf_counter()
        rc = run_pipeline(config(paths, out), cores=cores, extra_args=("--quiet", "all"))
        elapsed = time.perf_counter() - t0
    finally:
        os.chdir(old)
    if rc:
        sys.exit(f"pipeline failed with cores={cores} (exit status {rc})")
    return elapsed


def run_mne(paths):
    """The same chain with MNE Raw methods, in memory, one recording after the other."""
    import mne

    t0 = time.perf_counter()
    for path in paths:
        raw = mne.io.read_raw_fif(path, preload=True, verbose="error").pick("eeg")
        raw.notch_filter([50.0, 100.0], verbose="error")
        raw.filter(0.5, 40.0, verbose="error")
        raw.resample(250.0, method="polyphase", verbose="error")
        raw.set_eeg_reference("average", verbose="error")
        x = raw.get_data(units="uV")
        q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=1, keepdims=True)
        _ = ((x - q50) / (q75 - q25)).astype(np.float32)
    return time.perf_counter() - t0


def bench_write(path, work, block_seconds=120.0):
    """Write one lazily filtered recording; return (seconds, filter runs, blocks)."""
    import threading

    import dask

    from neurofm.io import read
    from neurofm.preprocessing.filters import filter as band_filter
    from neurofm.preprocessing.filters import notch
    from neurofm.store import write_recording

    ds = read(path)
    block = int(block_seconds * ds.attrs["sfreq"])
    ds = ds.chunk({"time": block, "channel": -1})
    runs, lock = [], threading.Lock()

    def count(x):
        if x.size:  # dask also calls it once on an empty array to learn the output type
            with lock:
                runs.append(x.shape)
        return x

    lazy = notch(ds, [50.0, 100.0])
    lazy = band_filter(lazy, 0.5, 40.0)
    counted = lazy["signal"].data.map_blocks(count, dtype=lazy["signal"].dtype)
    lazy = lazy.assign(signal=lazy["signal"].copy(data=counted))
    n_blocks = lazy["signal"].data.npartitions
    target = Path(work) / "write-bench.zarr"
    shutil.rmtree(target, ignore_errors=True)
    with dask.config.set(scheduler="threads", num_workers=1):
        t0 = time.perf_counter()
        write_recording(lazy, target)
        elapsed = time.perf_counter() - t0
    shutil.rmtree(target, ignore_errors=True)
    return elapsed, len(runs), n_blocks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workdir", default=None, help="keep the files here")
    parser.add_argument("--write-only", action="store_true",
                        help="only the store-write figure (one recording)")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="neurofm-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        paths = make_recordings(work, 1 if args.write_only else args.recordings,
                                args.minutes)
        if args.write_only:
            _print_write(paths[0], work, args.minutes)
            return
        hours = args.recordings * args.minutes / 60.0
        print(f"EEG chain, {args.recordings} generated recordings x {args.minutes:g} min, "
              f"64 channels, 1000 -> 250 Hz ({hours:.3f} recording-hours)")
        times = {}
        for cores in (1, 2):
            times[cores] = run(paths, work, cores)
            print(f"  --cores {cores}: {times[cores]:7.1f} s wall, "
                  f"{times[cores] / hours:7.1f} s per recording-hour")
        print(f"  scaling ratio t(1 core) / t(2 cores): {times[1] / times[2]:.2f}x")
        t_mne = run_mne(paths)
        print(f"  reference, MNE Raw methods in memory (1 process): {t_mne:7.1f} s wall, "
              f"{t_mne / hours:7.1f} s per recording-hour; pipeline(1 core) / MNE: "
              f"{times[1] / t_mne:.2f}x")
        _print_write(paths[0], work, args.minutes)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _print_write(path, work, minutes):
    elapsed, runs, blocks = bench_write(path, work)
    print(f"  store write of one lazily filtered recording ({minutes:g} min, notch + "
          f"band-pass, 1 thread): {elapsed:7.1f} s; filter ran {runs} times for {blocks} "
          f"blocks ({runs / blocks:.2f} per block)")


if __name__ == "__main__":
    main()
