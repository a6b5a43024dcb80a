"""Training batches through a torch DataLoader: neurofm store vs numpy memmap vs MNE lazy reads.

One 64-channel EEG recording (generated 1/f-like noise, 1 h at 256 Hz) is written to EDF with
MNE's exporter and converted into a neurofm store. Random 2-second windows are then served in
batches of 64 by a ``torch.utils.data.DataLoader`` with 0 and 2 worker processes:

- neurofm: :class:`neurofm.data.WindowDataset` (the full sample: signal, masks, positions,
  metadata) collated by :func:`neurofm.data.collate`;
- memmap (the floor on this machine): the same float32 bytes as one ``numpy.memmap``, a
  Dataset returning ``torch.from_numpy(mm[:, s:s + n].copy())``, default collation;
- MNE: ``raw.get_data(start=s, stop=s + n)`` on a non-preloaded raw (braindecode's lazy
  windows), default collation.

Every reader sees the same shuffled window order (MNE a prefix of it: it is slow). Each rate
is the best of ``--rounds`` passes, the three loaders taking turns pass by pass. Usage::

    python benchmarks/bench_dataloader.py [--hours 1] [--batches 40] [--rounds 5]

Prints windows/s and the ratios (goals: neurofm within 1.5x of memmap, >= 10x MNE).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


class _MemmapWindows:
    def __init__(self, path, shape, length, starts):
        self.path, self.shape, self.length, self.starts = path, shape, length, starts
        self._mm = None

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        import torch

        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.float32, mode="r", shape=self.shape)
        s = int(self.starts[i])
        return torch.from_numpy(np.array(self._mm[:, s:s + self.length]))

    def __getstate__(self):
        return {**self.__dict__, "_mm": None}


class _MNEWindows:
    def __init__(self, path, length, starts):
        self.path, self.length, self.starts = path, length, starts
        self._raw = None

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        import mne
        import torch

        if self._raw is None:
            self._raw = mne.io.read_raw_edf(self.path, preload=False, verbose="error")
        s = int(self.starts[i])
        return torch.from_numpy(self._raw.get_data(start=s, stop=s + self.length)
                                .astype(np.float32))

    def __getstate__(self):
        return {**self.__dict__, "_raw": None}


def _rates(loaders, rounds):
    """Windows/s of each DataLoader: the best of ``rounds`` passes, the loaders taking turns
    (one pass each per round, the order rotated), so a burst of load on the machine hits
    them alike; a first pass of each starts its workers and warms the caches."""
    best = [np.inf] * len(loaders)
    n = [0] * len(loaders)
    for r in range(rounds + 1):
        for j in np.roll(np.arange(len(loaders)), r).tolist():
            t0 = time.perf_counter()
            n[j] = sum(int(b["signal"].shape[0] if isinstance(b, dict) else b.shape[0])
                       for b in loaders[j])
            if r:
                best[j] = min(best[j], time.perf_counter() - t0)
    return [k / t for k, t in zip(n, best)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--sfreq", type=float, default=256.0)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed passes per loader, taken in turns (the best counts)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    import torch
    from bench_windows import _make_edf

    from neurofm.data import WindowDataset, collate
    from neurofm.io import read_ephys
    from neurofm.store import write_store

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        edf = work / f"bench_{args.channels}ch_{args.hours:g}h.edf"
        if not edf.exists():
            _make_edf(edf, args.channels, args.sfreq, args.hours)
        store = write_store([read_ephys(edf, preload=False)], work / "store", overwrite=True)
        rec_id = store.ids[0]
        signal = store[rec_id]["signal"].values
        mm_path = work / "signal.f32"
        signal.astype(np.float32).tofile(mm_path)
        length = round(args.window_s * args.sfreq)
        # a 1-sample grid: every start is a window; all readers get the same random subset
        ds = WindowDataset(store, window_s=args.window_s, stride_s=1.0 / args.sfreq, split=None)
        n = args.batches * args.batch_size
        order = np.random.default_rng(0).choice(len(ds), n, replace=False).tolist()
        starts = np.array([ds.window_info(i)[1] for i in range(len(ds))])
        memmap = _MemmapWindows(mm_path, signal.shape, length, starts)
        mne_ds = _MNEWindows(edf, length, starts)
        # same windows, same values (MNE in V vs uV in the store: scale 1e6)
        i = order[0]
        np.testing.assert_array_equal(ds[i]["signal"].numpy(), memmap[i].numpy())
        np.testing.assert_allclose(mne_ds[i].numpy() * 1e6, memmap[i].numpy(), rtol=1e-5,
                                   atol=1e-3)
        print(f"{args.channels} ch, {args.sfreq:g} Hz, {args.window_s:g}-s windows, batch "
              f"{args.batch_size}, {n} random windows per pass")
        print(f"{'workers':>8} {'neurofm':>10} {'memmap':>10} {'MNE':>10} "
              f"{'memmap/neurofm':>15} {'neurofm/MNE':>12}")
        from torch.utils.data import DataLoader

        for workers in (0, 2):
            kw = {"batch_size": args.batch_size, "num_workers": workers,
                  "persistent_workers": workers > 0}
            loaders = [DataLoader(ds, sampler=order, collate_fn=collate, **kw),
                       DataLoader(memmap, sampler=order, **kw),
                       DataLoader(mne_ds, sampler=order[: max(args.batch_size * 4, n // 8)],
                                  **kw)]
            r_nf, r_mm, r_mne = _rates(loaders, args.rounds)
            del loaders  # their workers exit
            print(f"{workers:>8} {r_nf:>10.0f} {r_mm:>10.0f} {r_mne:>10.0f} "
                  f"{r_mm / r_nf:>14.2f}x {r_nf / r_mne:>11.1f}x")
        print("goals: memmap/neurofm <= 1.5x, neurofm/MNE >= 10x")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
