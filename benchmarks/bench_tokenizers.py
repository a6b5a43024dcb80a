"""Tokenizers side by side: PVE on held-out data and encode throughput.

Compares mu-law (mu = 255), quantile bins (256, z-scored), a MEG-GPT tokenizer trained here
from scratch (CPU-sized) and the released MEG-GPT tokenizer (Cam-CAN, 250 Hz), all on
per-channel z-scored signals so that the PVEs share one target.

Data: spkit's real 14-channel EEG (128 Hz, 16 s; the first 12 s train, the last 4 s are held
out; also resampled to 250 Hz, the release's rate) and generated MEG-like channels (250 Hz;
16 x 12 s to train, 8 other channels x 4 s held out).

Run::

    .venv/bin/python benchmarks/bench_tokenizers.py            # prints a markdown table
    .venv/bin/python benchmarks/bench_tokenizers.py --epochs 22 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

RELEASE = Path(__file__).resolve().parents[1] / "tests" / "data" / "meg-gpt-tokenizer"


def meg_like(rng, n_channels, n_times, sfreq=250.0):
    """Amplitude-modulated alpha, beta and 1/f noise per channel, (C, T) float32."""
    t = np.arange(n_times) / sfreq
    x = np.empty((n_channels, n_times))
    freqs = np.maximum(np.arange(n_times // 2 + 1), 1.0)
    for c in range(n_channels):
        env = 1 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3))
        s = env * np.sin(2 * np.pi * rng.uniform(8, 12) * t + rng.uniform(0, 6.3))
        s += 0.5 * np.sin(2 * np.pi * rng.uniform(15, 30) * t + rng.uniform(0, 6.3))
        pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(n_times)) / np.sqrt(freqs), n_times)
        s += 0.5 * pink / pink.std()
        x[c] = s * rng.uniform(0.5, 5.0) + rng.uniform(-2, 2)
    return x.astype(np.float32)


def throughput(tok, x, repeats=3):
    """Encoded samples (channels x time points) per second, best of ``repeats``."""
    tok.encode(x[:, : x.shape[1] // 10])  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok.encode(x)
        best = min(best, time.perf_counter() - t0)
    return x.size / best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=22)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from scipy.signal import resample_poly

    import neurofm as nf
    from neurofm.tokenizers import MEGGPTTokenizer, MuLawTokenizer, QuantileTokenizer

    eeg = nf.datasets.spkit_eeg()["signal"].values  # (14, 2048) at 128 Hz
    eeg_train, eeg_test = eeg[:, :1536], eeg[:, 1536:]
    eeg_test_250 = resample_poly(eeg_test.astype(np.float64), 125, 64, axis=1)
    gen_train = meg_like(np.random.default_rng(0), 16, 3000)
    gen_test = meg_like(np.random.default_rng(1), 8, 1000)
    train = [eeg_train, gen_train]
    bulk = meg_like(np.random.default_rng(2), 52, 25_000)  # 100 s of 52 parcels at 250 Hz

    t0 = time.perf_counter()
    learned = MEGGPTTokenizer(n_tokens=64, rnn_units=64, sequence_length=100, token_dim=10)
    learned.fit(train, max_epochs=args.epochs, n_annealing_epochs=max(1, args.epochs * 9 // 11),
                n_stages=max(1, args.epochs * 9 // 22), batch_size=32, lr=1e-3, seed=0)
    fit_s = time.perf_counter() - t0

    tokenizers = {
        "mu-law (mu=255, z-scored)": MuLawTokenizer(mu=255, standardize=True).fit(train),
        "quantile (256 bins, z-scored)": QuantileTokenizer(n_bins=256).fit(train),
        f"MEG-GPT learned here ({args.epochs} epochs, {fit_s:.0f} s CPU)": learned,
        "MEG-GPT released (Cam-CAN)": MEGGPTTokenizer.from_pretrained(RELEASE),
    }
    rows = []
    for name, tok in tokenizers.items():
        rows.append((name, tok.vocab_size, tok.pve(eeg_test), tok.pve(eeg_test_250),
                     tok.pve(gen_test), throughput(tok, bulk)))

    print(f"torch {torch.__version__}, {args.threads} thread(s); held-out PVE in %, "
          "throughput in encoded samples/s (52 channels x 25000 samples)\n")
    print("| tokenizer | vocab | PVE real EEG 128 Hz | PVE real EEG at 250 Hz | "
          "PVE MEG-like 250 Hz | encode samples/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, vocab, p1, p2, p3, tput in rows:
        print(f"| {name} | {vocab} | {p1:.2f} | {p2:.2f} | {p3:.2f} | {tput:,.0f} |")
    ref = rows[0][5]
    print("\nthroughput relative to mu-law: " + ", ".join(
        f"{name.split(' (')[0]}: {tput / ref:.3g}x" for name, *_, tput in rows))


if __name__ == "__main__":
    main()
