"""Non-negative CP (HALS): neurofm.NonNegativeCP vs tensorly's non_negative_parafac_hals.

A generated non-negative rank-10 tensor of shape (600 x 20 x 4950) by default (time x
animals x pairs of 100 neurons; ``--small``: 150 x 10 x 1225), plus 5% noise. Both start from
the same random factors (``RandomState(seed).random_sample``), run the same number of HALS
iterations (``--iters``, tol = 0) and are timed in the same run; the relative errors
||T - T_hat|| / ||T|| and the ratio of times are printed. ``--float32`` and ``--torch``
(``--device cuda``) add neurofm's float32 / torch runs.

Usage::

    python benchmarks/bench_ntf.py               # full size (needs ~3 GB RAM for tensorly)
    python benchmarks/bench_ntf.py --small
    python benchmarks/bench_ntf.py --torch --device cuda --float32
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[600, 20, 4950])
    p.add_argument("--small", action="store_true", help="shape 150 x 10 x 1225")
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--iters", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float32", action="store_true")
    p.add_argument("--torch", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--skip-tensorly", action="store_true")
    args = p.parse_args(argv)
    shape = (150, 10, 1225) if args.small else tuple(args.shape)

    from neurofm.analysis.connectome import NonNegativeCP

    rng = np.random.default_rng(args.seed)
    F = [rng.random((s, args.rank)) ** 2 for s in shape]
    T = np.einsum("ir,jr,kr->ijk", *F)
    T += 0.05 * T.mean() * rng.random(shape)
    print(f"tensor {shape}, rank {args.rank}, {args.iters} HALS iterations, "
          f"{T.nbytes / 1e9:.2f} GB float64", flush=True)

    def run_nf(**kw):
        t0 = time.perf_counter()
        m = NonNegativeCP(args.rank, n_iter_max=args.iters, tol=0, random_state=args.seed,
                          **kw).fit(T)
        return time.perf_counter() - t0, m.reconstruction_error_

    t_nf, e_nf = run_nf()
    print(f"  neurofm numpy float64   {t_nf:8.2f} s   error {e_nf:.8f}", flush=True)
    extra = []
    if args.float32:
        extra.append(("neurofm torch float32", {"backend": "torch", "dtype": "float32",
                                                     "device": args.device}))
    if args.torch:
        extra.append(("neurofm torch float64", {"backend": "torch", "dtype": "float64",
                                                     "device": args.device}))
    results = []
    for name, kw in extra:
        if kw.get("device") == "cuda":
            run_nf(**kw)  # warm-up
        t, e = run_nf(**kw)
        results.append((name, t, e))
        print(f"  {name:<23} {t:8.2f} s   error {e:.8f}", flush=True)
    if args.skip_tensorly:
        return
    import tensorly as tl
    from tensorly.decomposition import non_negative_parafac_hals

    t0 = time.perf_counter()
    cp = non_negative_parafac_hals(T, args.rank, n_iter_max=args.iters, init="random",
                                   random_state=args.seed, tol=0)
    t_tl = time.perf_counter() - t0
    e_tl = float(np.linalg.norm(T - tl.cp_to_tensor(cp)) / np.linalg.norm(T))
    print(f"  tensorly HALS           {t_tl:8.2f} s   error {e_tl:.8f}", flush=True)
    print(f"ratio tensorly / neurofm numpy: {t_tl / t_nf:.2f}x   "
          f"error neurofm - tensorly: {e_nf - e_tl:+.2e}")
    for name, t, e in results:
        print(f"ratio tensorly / {name}: {t_tl / t:.2f}x   error difference {e - e_tl:+.2e}")


if __name__ == "__main__":
    main()
