"""DSE / DSMI: neurofm vs dse-dsmi, measured in the same run on the same generated data.

DSE of N points in 64 dimensions (N = 1000, 2000, 4000 by default; sigma = 10, t = 1, the
reference defaults) and DSMI with 10 equal classes. The two libraries are called alternately
(``--repeat`` rounds, the order swapped every round) so that a change of machine load hits
both; the ratio is that of the median times (the best times are printed too), with the load
average before and after each row. The values of both are printed with their difference.
``--profile`` adds a time breakdown of both paths; ``--torch`` adds neurofm's torch backend
(``--device cuda`` on a GPU, float64 and float32).

Usage::

    python benchmarks/bench_entropy.py                 # N = 1000, 2000, 4000
    python benchmarks/bench_entropy.py --small         # N = 300, 600 (seconds)
    python benchmarks/bench_entropy.py --sizes 4000 --profile
    python benchmarks/bench_entropy.py --sizes 4000 --torch --device cuda

Both are dominated by a dense O(N^3) step. dse-dsmi: two N x N x N products with diagonal
matrices plus ``numpy.linalg.eigvalsh`` (one-stage ``syevd``); neurofm: no products, and from
1500 points LAPACK's two-stage tridiagonal reduction (see docs/entropy.md). In DSMI neurofm
computes each random subset shared by equal-sized classes once.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def _load():
    return f"{os.getloadavg()[0]:.1f}"


def _interleaved(f_nf, f_ref, repeat):
    """Times (neurofm, reference) over ``repeat`` alternating rounds; values of the last."""
    t_nf, t_ref = [], []
    v_nf = v_ref = None
    for r in range(repeat):
        order = ((f_nf, t_nf), (f_ref, t_ref)) if r % 2 == 0 else ((f_ref, t_ref), (f_nf, t_nf))
        for f, ts in order:
            t0 = time.perf_counter()
            v = f()
            ts.append(time.perf_counter() - t0)
            if f is f_nf:
                v_nf = v
            else:
                v_ref = v
    return np.array(t_nf), np.array(t_ref), v_nf, v_ref


def _row(name, t_nf, t_ref, v_nf, v_ref, load0):
    m_nf, m_ref = np.median(t_nf), np.median(t_ref)
    rel = abs(v_nf - v_ref) / max(abs(v_ref), 1e-300)
    print(f"  {name:<26} neurofm {m_nf:8.3f} s (best {t_nf.min():.3f})   dse-dsmi {m_ref:8.3f} s "
          f"(best {t_ref.min():.3f})   ratio {m_ref / m_nf:5.2f}x (best/best "
          f"{t_ref.min() / t_nf.min():5.2f}x)   value {v_nf:.12f}  rel diff {rel:.1e}   "
          f"load {load0}->{_load()}", flush=True)


def _timed(label, f, out):
    t0 = time.perf_counter()
    r = f()
    out.append(f"{label} {time.perf_counter() - t0:.3f}")
    return r


def _profile(X):
    """One-shot time breakdown of both paths (seconds)."""
    from sklearn.metrics import pairwise_distances

    from neurofm.analysis import entropy as E

    sigma = 10.0
    ref = []
    D = _timed("distances", lambda: pairwise_distances(X), ref)
    G = _timed("kernel", lambda: (1 / (sigma * np.sqrt(2 * np.pi)))
               * np.exp((-D**2) / (2 * sigma**2)), ref)
    Deg = _timed("degree", lambda: np.diag(1 / np.sum(G, axis=1) ** 0.5), ref)
    K = _timed("2 products", lambda: Deg @ G @ Deg, ref)
    _timed("symmetry check", lambda: np.allclose(K, K.T, rtol=1e-5, atol=1e-8), ref)
    _timed("eigvalsh", lambda: np.linalg.eigvalsh(K), ref)
    ours = []
    n = X.shape[0]
    K = _timed("operator (gram+exp+norm)", lambda: E._kernel_operator(X, sigma), ours)
    solver = E._two_stage() if n >= E._TWO_STAGE_MIN_N else None
    if solver is None:
        _timed("eigvalsh (one-stage)", lambda: np.linalg.eigvalsh(K), ours)
    else:
        kd = E._two_stage_kd(n)
        stages = solver.eigvalsh(K.copy(), kd, timings=True)[1]
        ours += [f"{k} {v:.3f}" for k, v in stages.items()]
    print(f"    dse-dsmi: {', '.join(ref)}", flush=True)
    print(f"    neurofm:  {', '.join(ours)}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--small", action="store_true", help="N = 300, 600")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="time breakdown of both paths")
    p.add_argument("--torch", action="store_true", help="also time the torch backend")
    p.add_argument("--device", default=None)
    p.add_argument("--no-dsmi", action="store_true")
    args = p.parse_args(argv)
    sizes = [300, 600] if args.small else args.sizes

    with warnings.catch_warnings():  # dse_dsmi silences all warnings on import
        import dse_dsmi
    from neurofm.analysis.entropy import (
        diffusion_spectral_entropy,
        diffusion_spectral_mutual_information,
    )

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, args.dim))  # warm-up: imports, LAPACK look-up, thread pools
    diffusion_spectral_entropy(X)
    dse_dsmi.diffusion_spectral_entropy(X)
    print(f"DSE (sigma=10, t=1, D={args.dim}), median of {args.repeat} interleaved rounds, "
          f"{os.cpu_count()} CPUs, load average {_load()}")
    for n in sizes:
        X = rng.normal(size=(n, args.dim))
        load0 = _load()
        t_nf, t_ref, v_nf, v_ref = _interleaved(
            lambda X=X: diffusion_spectral_entropy(X),
            lambda X=X: dse_dsmi.diffusion_spectral_entropy(X), args.repeat)
        _row(f"DSE N={n}", t_nf, t_ref, v_nf, v_ref, load0)
        if args.profile:
            _profile(X)
        if args.torch:
            for dt in ("float64", "float32"):
                f = lambda X=X, dt=dt: diffusion_spectral_entropy(
                    X, backend="torch", device=args.device, dtype=dt)
                f()  # warm-up (CUDA context, kernels)
                ts = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    v_t = f()
                    ts.append(time.perf_counter() - t0)
                m = np.median(ts)
                name = f"DSE N={n} torch {dt}"
                print(f"  {name:<26} neurofm {m:8.3f} s   "
                      f"ratio {np.median(t_ref) / m:5.2f}x   value {v_t:.12f}  "
                      f"|diff| {abs(v_t - v_ref):.1e}", flush=True)
    if not args.no_dsmi:
        print(f"DSMI (10 equal classes, 5 repetitions), median of {args.repeat} interleaved rounds")
        for n in sizes:
            X = rng.normal(size=(n, args.dim))
            y = np.repeat(np.arange(10), n // 10)[rng.permutation(n - n % 10)]
            X = X[: len(y)]
            load0 = _load()
            t_nf, t_ref, v_nf, v_ref = _interleaved(
                lambda X=X, y=y: diffusion_spectral_mutual_information(X, y),
                lambda X=X, y=y: dse_dsmi.diffusion_spectral_mutual_information(X, y)[0],
                args.repeat)
            _row(f"DSMI N={n}", t_nf, t_ref, v_nf, v_ref, load0)


if __name__ == "__main__":
    main()
