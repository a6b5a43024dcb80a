"""DSE / DSMI: neurofm vs dse-dsmi, measured in the same run on the same generated data.

DSE of N points in 64 dimensions (N = 1000, 2000, 4000 by default; sigma = 10, t = 1, the
reference defaults) and DSMI with 10 equal classes. Each timing is the best of ``--repeat``
runs; the values of both libraries are printed with their difference. ``--torch`` adds
neurofm's torch backend (``--device cuda`` on a GPU, float64 and float32).

Usage::

    python benchmarks/bench_entropy.py                 # N = 1000, 2000, 4000
    python benchmarks/bench_entropy.py --small         # N = 300, 600 (seconds)
    python benchmarks/bench_entropy.py --sizes 4000 --torch --device cuda

The cost of both is dominated by the dense symmetric eigensolver (O(N^3)); neurofm saves the
reference's two dense diagonal-matrix products, its symmetry check and the temporaries, and
computes each random subset shared by equal-sized classes once in DSMI.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def _best(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _row(name, t_nf, t_ref, v_nf, v_ref):
    print(f"  {name:<28} neurofm {t_nf:8.3f} s   dse-dsmi {t_ref:8.3f} s   "
          f"ratio {t_ref / t_nf:5.2f}x   value {v_nf:.10f}  |diff| {abs(v_nf - v_ref):.1e}",
          flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--small", action="store_true", help="N = 300, 600")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
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
    print(f"DSE (sigma=10, t=1, D={args.dim}), best of {args.repeat}")
    for n in sizes:
        X = rng.normal(size=(n, args.dim))
        t_ref, v_ref = _best(lambda X=X: dse_dsmi.diffusion_spectral_entropy(X), args.repeat)
        t_nf, v_nf = _best(lambda X=X: diffusion_spectral_entropy(X), args.repeat)
        _row(f"DSE N={n}", t_nf, t_ref, v_nf, v_ref)
        if args.torch:
            for dt in ("float64", "float32"):
                f = lambda X=X, dt=dt: diffusion_spectral_entropy(
                    X, backend="torch", device=args.device, dtype=dt)
                f()  # warm-up (CUDA context, kernels)
                t_t, v_t = _best(f, args.repeat)
                _row(f"DSE N={n} torch {dt}", t_t, t_ref, v_t, v_ref)
    if not args.no_dsmi:
        print("DSMI (10 equal classes, 5 repetitions)")
        for n in sizes:
            X = rng.normal(size=(n, args.dim))
            y = np.repeat(np.arange(10), n // 10)[rng.permutation(n - n % 10)]
            X = X[: len(y)]
            t_ref, v_ref = _best(
                lambda X=X, y=y: dse_dsmi.diffusion_spectral_mutual_information(X, y)[0],
                args.repeat)
            t_nf, v_nf = _best(lambda X=X, y=y: diffusion_spectral_mutual_information(X, y),
                               args.repeat)
            _row(f"DSMI N={n}", t_nf, t_ref, v_nf, v_ref)


if __name__ == "__main__":
    main()
