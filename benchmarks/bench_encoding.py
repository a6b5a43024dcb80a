"""Encoding models: neurofm vs himalaya, same data, same backend, same run.

Sections:

- ``ridge``: ``RidgeCV`` with ``--n-samples`` x ``--n-features`` x ``--n-targets`` x
  ``--n-alphas`` (default 3000 x 1000 x 20000 x 21, the issue's size; goal >= 1.5x with
  identical alphas), KFold(5);
- ``banded``: ``BandedRidgeCV`` (himalaya ``GroupRidgeCV``) with 3 equal bands and
  ``--n-iter`` band-weight candidates, same ``random_state``;
- ``floor``: the bare LAPACK / BLAS calls that the primal algorithm cannot avoid at that
  size (one SVD per fold and one for the refit, the cross-products ``X^T Y``, the projection
  onto the right singular vectors, one ``(n_val x k) @ (k x n_targets)`` product per alpha
  and fold, and the refit product), timed back to back; neurofm's RidgeCV time is printed
  as a multiple of it.

``--small`` divides the sizes (600 x 200 x 2000 x 21) for a quick run. ``--backend torch
--device cuda`` compares torch on the GPU with himalaya's ``torch_cuda`` backend (float32).

Usage::

    python benchmarks/bench_encoding.py --small
    python benchmarks/bench_encoding.py                      # full size (minutes on 2 cores)
    python benchmarks/bench_encoding.py --backend torch --device cuda --dtype float32

Prints the timings, the ratio himalaya / neurofm, whether every target chose the same
alpha (or deltas) and the largest coefficient difference.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def _sync(device):
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(fn, device=None):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _data(n, p, t, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)).astype(dtype)
    w = (rng.standard_normal((p, t)) * rng.uniform(0, 0.2, t)).astype(dtype)
    y = x @ w + (rng.standard_normal((n, t)) * rng.uniform(0.5, 5, t)).astype(dtype)
    return x, y


def _himalaya_backend(args):
    from himalaya.backend import set_backend

    name = "numpy" if args.backend == "numpy" else (
        "torch_cuda" if (args.device or "").startswith("cuda") else "torch")
    return set_backend(name, on_error="raise")


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def bench_ridge(args, x, y, alphas):
    from himalaya.ridge import RidgeCV as HRidgeCV

    from neurofm.analysis.encoding import RidgeCV

    t_nf, m = _timed(lambda: RidgeCV(alphas=alphas, backend=args.backend, device=args.device,
                                     dtype=args.dtype).fit(x, y), args.device)
    print(f"  neurofm RidgeCV          {t_nf:9.2f} s", flush=True)
    if args.skip_himalaya:
        return t_nf
    _himalaya_backend(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t_h, h = _timed(lambda: HRidgeCV(alphas=alphas).fit(x, y), args.device)
    same = np.isclose(_np(h.best_alphas_), m.best_alphas_, rtol=1e-6)
    diff = np.abs(_np(h.coef_) - m.coef_).max()
    print(f"  himalaya RidgeCV         {t_h:9.2f} s", flush=True)
    print(f"  ratio himalaya/neurofm   {t_h / t_nf:9.2f}x   identical alphas: "
          f"{same.mean() * 100:.2f}% of targets   max|coef diff| {diff:.1e}", flush=True)
    return t_nf


def bench_banded(args, x, y, alphas):
    from himalaya.ridge import GroupRidgeCV

    from neurofm.analysis.encoding import BandedRidgeCV

    groups = np.repeat(np.arange(3), int(np.ceil(x.shape[1] / 3)))[: x.shape[1]]
    t_nf, m = _timed(lambda: BandedRidgeCV(groups=groups, alphas=alphas, n_iter=args.n_iter,
                                           random_state=0, backend=args.backend,
                                           device=args.device, dtype=args.dtype).fit(x, y),
                     args.device)
    print(f"  neurofm BandedRidgeCV    {t_nf:9.2f} s   ({args.n_iter} candidates)", flush=True)
    if args.skip_himalaya:
        return
    _himalaya_backend(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t_h, h = _timed(lambda: GroupRidgeCV(
            groups=groups, random_state=0,
            solver_params={"alphas": alphas, "n_iter": args.n_iter,
                           "progress_bar": False}).fit(x, y), args.device)
    same = np.all(np.isclose(_np(h.deltas_), m.deltas_, rtol=1e-6, atol=1e-8), axis=0)
    diff = np.abs(_np(h.coef_) - m.coef_).max()
    print(f"  himalaya GroupRidgeCV    {t_h:9.2f} s", flush=True)
    print(f"  ratio himalaya/neurofm   {t_h / t_nf:9.2f}x   identical deltas: "
          f"{same.mean() * 100:.2f}% of targets   max|coef diff| {diff:.1e}", flush=True)


def bench_floor(args, x, y, n_alphas, cv=5):
    """Bare decompositions and products of the primal algorithm (see module docstring)."""
    from neurofm.analysis._ridge import make_ops

    ops = make_ops(args.backend, args.device, args.dtype or x.dtype)
    xb = ops.asarray(x)
    n, p = x.shape
    n_val = n // cv
    k = min(n - n_val, p)
    tb = y.shape[1]
    batch = max(1, min(tb, int(2 ** 25 // max(n, p))))

    def run():
        yb0 = ops.asarray(y[:, :batch])
        for _ in range(cv):
            ops.svd(xb[n_val:])
        ops.svd(xb)
        vt = ops.asarray(np.random.default_rng(0).standard_normal((k, p)))
        a = ops.asarray(np.random.default_rng(1).standard_normal((n_val, k)))
        for start in range(0, tb, batch):
            yb = yb0 if start == 0 else ops.asarray(y[:, start:start + batch])
            xty = xb.T @ yb
            p_out = ops.empty((n_val, yb.shape[1]))
            for _ in range(cv):
                c = xty - xb[:n_val].T @ yb[:n_val]
                z = vt @ c
                for _ in range(n_alphas):
                    ops.matmul(a, z, out=p_out)
            vt.T @ (vt @ xty)

    t, _ = _timed(run, args.device)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="600 x 200 x 2000 (quick run)")
    ap.add_argument("--n-samples", type=int, default=3000)
    ap.add_argument("--n-features", type=int, default=1000)
    ap.add_argument("--n-targets", type=int, default=20000)
    ap.add_argument("--n-alphas", type=int, default=21)
    ap.add_argument("--n-iter", type=int, default=None,
                    help="banded candidates (default 20 with --small, else 5)")
    ap.add_argument("--only", nargs="*", default=["ridge", "banded", "floor"],
                    choices=["ridge", "banded", "floor"])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=[None, "float32", "float64"])
    ap.add_argument("--skip-himalaya", action="store_true")
    args = ap.parse_args(argv)
    if args.small:
        args.n_samples, args.n_features, args.n_targets = 600, 200, 2000
    if args.n_iter is None:
        args.n_iter = 20 if args.small else 5
    dtype = args.dtype or ("float32" if (args.device or "").startswith("cuda") else "float64")
    args.dtype = dtype
    x, y = _data(args.n_samples, args.n_features, args.n_targets, dtype)
    alphas = np.logspace(-2, 8, args.n_alphas)
    print(f"encoding benchmark: {args.n_samples} samples x {args.n_features} features x "
          f"{args.n_targets} targets x {args.n_alphas} alphas, KFold(5), backend "
          f"{args.backend} {args.device or 'cpu'} {dtype}", flush=True)
    t_nf = None
    if "ridge" in args.only:
        print("[ridge]", flush=True)
        t_nf = bench_ridge(args, x, y, alphas)
    if "floor" in args.only:
        t_f = bench_floor(args, x, y, args.n_alphas)
        extra = f"   neurofm RidgeCV = {t_nf / t_f:.2f}x floor" if t_nf else ""
        print(f"[floor]\n  bare SVDs + GEMMs        {t_f:9.2f} s{extra}", flush=True)
    if "banded" in args.only:
        print("[banded] 3 bands", flush=True)
        bench_banded(args, x, y, alphas)


if __name__ == "__main__":
    main()
