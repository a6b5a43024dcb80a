"""RSA: neurofm vs rsatoolbox, measured in the same run on the same generated data.

Sections (``--only`` picks some):

- ``rdm``: RDMs (correlation, euclidean, crossnobis with identity noise) of
  ``--n-cond`` conditions x ``--n-chan`` channels, ``--n-rep`` repetitions per condition
  (default 1000 x 10000 x 2, the DESIGN.md goal size; goal >= 5x);
- ``compare``: all 100 x 100 comparisons between two stacks of RDMs with rho-a and tau-a;
- ``bootstrap``: model evaluation with a bootstrap over subjects and conditions;
- ``searchlight``: a volume searchlight on a generated volume. Each library runs in its own
  subprocess so that peak memory (RSS above the process's baseline after loading the data;
  Linux VmHWM, reset after loading) is measured separately; rsatoolbox holds every
  searchlight RDM in float64, neurofm is timed returning float32 RDMs and returning model
  maps (RDMs never all held).
  ``--full`` uses a whole-brain-sized volume and 1000 conditions, for which only neurofm's
  model-map mode is run and rsatoolbox's memory need is reported.

Usage::

    python benchmarks/bench_rsa.py                 # all sections, default sizes
    python benchmarks/bench_rsa.py --only rdm --n-cond 500 --n-chan 2000
    python benchmarks/bench_rsa.py --only searchlight --full

Prints per section the neurofm and rsatoolbox timings, their ratio and the largest
difference between the two results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
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


def _row(name, t_nf, t_rt, diff=None, extra=""):
    ratio = t_rt / t_nf if t_nf > 0 else float("inf")
    d = "" if diff is None else f"  max|diff|={diff:.1e}"
    print(f"  {name:<34} neurofm {t_nf:8.3f} s   rsatoolbox {t_rt:8.3f} s   "
          f"ratio {ratio:6.1f}x{d}{extra}", flush=True)
    return ratio


# --------------------------------------------------------------------------------------


def bench_rdm(args):
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    from neurofm.analysis import rsa

    rng = np.random.default_rng(0)
    n_obs = args.n_cond * args.n_rep
    print(f"[rdm] {args.n_cond} conditions x {args.n_chan} channels x {args.n_rep} repetitions "
          f"(float64, numpy backend, best of {args.repeat})", flush=True)
    x = rng.standard_normal((n_obs, args.n_chan))
    cond = np.tile(np.arange(args.n_cond), args.n_rep)
    ds = Dataset(x, obs_descriptors={"cond": cond})
    ratios = {}
    for method in ("correlation", "euclidean", "crossnobis"):
        t_nf, ours = _best(lambda m=method: rsa.compute_rdm(x, conditions=cond, method=m),
                           args.repeat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_rt, ref = _best(lambda m=method: calc_rdm(ds, method=m, descriptor="cond"),
                              args.repeat)
        diff = np.abs(rsa.upper(ours) - ref.get_vectors()[0]).max()
        ratios[method] = _row(method, t_nf, t_rt, diff)
        t32, ours32 = _best(lambda m=method: rsa.compute_rdm(x, conditions=cond, method=m,
                                                             dtype="float32"), args.repeat)
        diff32 = np.abs(rsa.upper(ours32) - ref.get_vectors()[0]).max()
        ratios[f"{method} (float32)"] = _row(f"{method} (neurofm float32)", t32, t_rt, diff32)
        if args.device:
            rsa.compute_rdm(x[:10], conditions=cond[:10] % 3, method=method if
                            method != "crossnobis" else "euclidean", device=args.device)
            t_dev, _ = _best(lambda m=method: rsa.compute_rdm(x, conditions=cond, method=m,
                                                              device=args.device),
                             args.repeat)
            ratios[f"{method} ({args.device})"] = _row(f"{method} (neurofm {args.device})",
                                                       t_dev, t_rt)
    return ratios


def bench_compare(args):
    from rsatoolbox.rdm import RDMs, compare

    from neurofm.analysis import rsa

    rng = np.random.default_rng(1)
    n_pairs = args.cmp_cond * (args.cmp_cond - 1) // 2
    print(f"[compare] {args.n_rdm} x {args.n_rdm} RDM pairs, {args.cmp_cond} conditions "
          f"({n_pairs} entries)", flush=True)
    a = rng.standard_normal((args.n_rdm, n_pairs))
    b = rng.standard_normal((args.n_rdm, n_pairs))
    b[: args.n_rdm // 4] = np.round(b[: args.n_rdm // 4])  # some model-like ties
    ratios = {}
    for method in ("rho-a", "tau-a"):
        t_nf, ours = _best(lambda m=method: rsa.compare_rdms(a, b, method=m), 1)
        t_rt, ref = _best(lambda m=method: compare(RDMs(a), RDMs(b), method=m), 1)
        ratios[method] = _row(method, t_nf, t_rt, np.abs(ours - ref).max())
    return ratios


def bench_bootstrap(args):
    from rsatoolbox.inference import eval_bootstrap
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs

    from neurofm.analysis import rsa

    rng = np.random.default_rng(2)
    n_cond, n_subj, n_models = args.boot_cond, args.boot_subj, 5
    n_pairs = n_cond * (n_cond - 1) // 2
    true = np.abs(rng.standard_normal(n_pairs))
    data = true + 0.7 * rng.standard_normal((n_subj, n_pairs))
    models = [true + s * rng.standard_normal(n_pairs) for s in np.linspace(0.2, 2, n_models)]
    print(f"[bootstrap] {n_models} models, {n_subj} subjects x {n_cond} conditions, "
          f"N={args.n_boot} (subjects and conditions, corr)", flush=True)
    t_nf, ours = _best(lambda: rsa.evaluate({f"m{i}": m for i, m in enumerate(models)}, data,
                                            method="corr", inference="bootstrap",
                                            n_boot=args.n_boot, verbose=False), 1)
    rt_models = [ModelFixed(f"m{i}", RDMs(m[None])) for i, m in enumerate(models)]
    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):  # rsatoolbox's tqdm bar
            t_rt, ref = _best(lambda: eval_bootstrap(rt_models, RDMs(data), method="corr",
                                                     N=args.n_boot), 1)
    diff = np.abs(ours.scores - ref.get_means()).max()
    return {"bootstrap": _row("eval_bootstrap", t_nf, t_rt, diff,
                              "  (different random draws: score diff is Monte Carlo)")}


# --------------------------------------------------------------------------------------
# searchlight (each library in its own subprocess for a clean peak-memory reading)


def _volume(shape, n_cond, n_rep, seed=3):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    r = np.sqrt((((grid.T - centre) / (centre + 0.5)) ** 2).sum(-1)).T
    mask = r <= 1.0  # an ellipsoid "brain"
    cond = np.tile(np.arange(n_cond), n_rep)
    latent = rng.standard_normal((n_cond, 8))
    loadings = rng.standard_normal((8,) + shape)
    signal = np.einsum("cl,lxyz->xyzc", latent, loadings)[..., cond]
    vol = (signal + 2 * rng.standard_normal(shape + (len(cond),))).astype(np.float32)
    return vol, mask, cond


def _status_mb(key):
    """VmRSS / VmHWM of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not found in /proc/self/status")


def _reset_peak():
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0), so that VmHWM measures
    the peak of what runs next; ru_maxrss cannot, as Linux keeps it across execve."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _searchlight_worker(args):
    shape = tuple(int(v) for v in args.sl_shape.split("x"))
    import torch  # noqa: F401 - import before the baseline so both sides pay their imports
    from rsatoolbox.util.searchlight import get_searchlight_RDMs, get_volume_searchlight

    from neurofm.analysis import rsa

    vol, mask, cond = _volume(shape, args.sl_cond, args.sl_rep)
    n_pairs = args.sl_cond * (args.sl_cond - 1) // 2
    model = np.random.default_rng(4).random(n_pairs)
    base = _status_mb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    if args.worker == "rsatoolbox":
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            centers, neigh = get_volume_searchlight(mask, radius=args.radius + 1e-6,
                                                    threshold=0, truncate_at_boundary=True)
            data2d = vol.reshape(-1, len(cond)).T
            out = get_searchlight_RDMs(data2d, centers, neigh, cond, method="correlation",
                                       verbose=False)
        n = out.n_rdm
        check = float(np.nanmean(out.get_vectors()[:, :5]))
    elif args.worker == "neurofm-rdms":
        out = rsa.searchlight_rdms(vol, mask=mask, radius=args.radius, conditions=cond,
                                   method="correlation", dtype="float32", device="cpu",
                                   max_memory=2 ** 40, verbose=False)
        n = out.sizes["center"]
        check = float(np.nanmean(out.values[:, :5]))
    else:
        out = rsa.searchlight_rdms(vol, mask=mask, radius=args.radius, conditions=cond,
                                   method="correlation", dtype="float32", device="cpu",
                                   models={"model": model}, compare="corr", verbose=False)
        n = int(np.isfinite(out.values).sum())
        check = float(np.nanmean(out.values))
    elapsed = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    print(json.dumps({"time": elapsed, "peak_extra_mb": peak - base, "n_centers": n,
                      "check": check}))


def _run_worker(args, worker):
    cmd = [sys.executable, __file__, "--_worker", worker, "--sl-shape", args.sl_shape,
           "--sl-cond", str(args.sl_cond), "--sl-rep", str(args.sl_rep),
           "--radius", str(args.radius)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(f"  {worker}: failed (exit {res.returncode})\n{res.stderr[-2000:]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_searchlight(args):
    shape = tuple(int(v) for v in args.sl_shape.split("x"))
    _, mask, _ = _volume(shape, 2, 1)
    from neurofm.analysis._searchlight import searchlight_centers

    n_centers = len(searchlight_centers(mask, args.radius)[0])
    n_pairs = args.sl_cond * (args.sl_cond - 1) // 2
    rt_need_gb = n_centers * n_pairs * 8 / 2 ** 30
    print(f"[searchlight] volume {args.sl_shape}, {n_centers} centres, radius {args.radius}, "
          f"{args.sl_cond} conditions x {args.sl_rep} repetitions, correlation", flush=True)
    print(f"  rsatoolbox's result array alone: {n_centers} x {n_pairs} float64 = "
          f"{rt_need_gb:.2f} GiB", flush=True)
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    results = {}
    for worker in ("neurofm-maps", "neurofm-rdms", "rsatoolbox"):
        if worker != "neurofm-maps" and rt_need_gb > 0.5 * mem_gb:
            print(f"  {worker}: skipped, needs about {rt_need_gb:.0f} GiB "
                  f"(machine: {mem_gb:.0f} GiB)")
            continue
        results[worker] = _run_worker(args, worker)
        r = results[worker]
        if r:
            print(f"  {worker:<14} {r['time']:8.2f} s   peak extra memory "
                  f"{r['peak_extra_mb']:8.0f} MiB", flush=True)
    ratios = {}
    if results.get("rsatoolbox") and results.get("neurofm-rdms"):
        ratios["searchlight (RDMs)"] = _row("searchlight RDMs", results["neurofm-rdms"]["time"],
                                            results["rsatoolbox"]["time"])
    if results.get("rsatoolbox") and results.get("neurofm-maps"):
        ratios["searchlight (maps)"] = _row("searchlight model maps",
                                            results["neurofm-maps"]["time"],
                                            results["rsatoolbox"]["time"])
        rt_mem = results["rsatoolbox"]["peak_extra_mb"]
        nf_mem = results["neurofm-maps"]["peak_extra_mb"]
        print(f"  memory: rsatoolbox {rt_mem:.0f} MiB vs neurofm maps {nf_mem:.0f} MiB "
              f"({rt_mem / max(nf_mem, 1):.1f}x less)")
    return ratios


def _warm_up():
    """Start BLAS thread pools and lazy imports before anything is timed."""
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    from neurofm.analysis import rsa

    x = np.random.default_rng(9).standard_normal((40, 300))
    cond = np.tile(np.arange(20), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("correlation", "euclidean", "crossnobis"):
            rsa.compute_rdm(x, conditions=cond, method=method)
            calc_rdm(Dataset(x, obs_descriptors={"c": cond}), method=method, descriptor="c")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=["rdm", "compare", "bootstrap", "searchlight"],
                   choices=["rdm", "compare", "bootstrap", "searchlight"])
    p.add_argument("--n-cond", type=int, default=1000)
    p.add_argument("--n-chan", type=int, default=10000)
    p.add_argument("--n-rep", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="timing repeats (best of)")
    p.add_argument("--device", default=None,
                   help="also time neurofm's torch backend on this device (e.g. cuda)")
    p.add_argument("--n-rdm", type=int, default=100)
    p.add_argument("--cmp-cond", type=int, default=64)
    p.add_argument("--boot-cond", type=int, default=40)
    p.add_argument("--boot-subj", type=int, default=20)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--sl-shape", default="28x32x24")
    p.add_argument("--sl-cond", type=int, default=100)
    p.add_argument("--sl-rep", type=int, default=2)
    p.add_argument("--radius", type=float, default=3.0)
    p.add_argument("--full", action="store_true",
                   help="whole-brain searchlight: 64x76x64 volume, 1000 conditions")
    p.add_argument("--_worker", dest="worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _searchlight_worker(args)
    if args.full:
        args.sl_shape, args.sl_cond = "64x76x64", 1000
    import platform

    print(f"neurofm vs rsatoolbox on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    _warm_up()
    sections = {"rdm": bench_rdm, "compare": bench_compare, "bootstrap": bench_bootstrap,
                "searchlight": bench_searchlight}
    summary = {}
    for name in args.only:
        summary.update(sections[name](args))
    print("\nratios (rsatoolbox time / neurofm time):")
    for name, ratio in summary.items():
        print(f"  {name:<22} {ratio:6.1f}x")


if __name__ == "__main__":
    main()
