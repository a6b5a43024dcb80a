"""Running the Snakemake workflow: where it is, one run per output directory, resuming.

:func:`run_pipeline` (and ``neurofm preprocess``) runs ``python -m snakemake`` in a
subprocess (Snakemake >= 8 has no ``snakemake.snakemake()`` function) with parameter-aware
reruns. It holds a lock on the output directory for the whole run, so two runs never write one
store; holding it, it knows that no other run is alive and removes the Snakemake locks a
killed run left behind, so running the same command again resumes a killed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .._logging import logger
from ..errors import FormatError, NeurofmError
from .config import load_config

__all__ = ["LOCK_NAME", "RERUN_TRIGGERS", "clear_stale_snakemake_locks", "default_snakefile",
           "run_pipeline"]

#: What makes Snakemake rerun a job: changed parameters, new or changed inputs. Code changes
#: (the scripts) are deliberately not a trigger, so upgrading neurofm does not redo a study.
RERUN_TRIGGERS = ("mtime", "params", "input")
#: The lock file :func:`run_pipeline` holds in ``out_dir`` while a run is alive.
LOCK_NAME = ".neurofm-preprocess.lock"


def default_snakefile():
    """The workflow's ``Snakefile``: the one inside the installed package, else the source
    checkout's ``pipelines/Snakefile`` (or ``./pipelines/Snakefile``).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    FormatError
        When none of these exists (a broken installation).
    """
    here = Path(__file__).resolve().parent
    candidates = [here / "workflow" / "Snakefile",            # installed from a wheel
                  here.parents[1] / "pipelines" / "Snakefile",  # source checkout
                  Path.cwd() / "pipelines" / "Snakefile"]
    for path in candidates:
        if path.is_file():
            return path
    raise FormatError(
        "the pipeline workflow (Snakefile) was not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall neurofm or pass snakefile="
    )


def clear_stale_snakemake_locks(workdir, out_dir):
    """Remove the Snakemake locks of ``workdir`` that name files inside ``out_dir``.

    Only safe while no run on ``out_dir`` is alive: :func:`run_pipeline` calls it holding
    ``out_dir``'s lock. Locks of other workflows run in the same directory are kept.

    Parameters
    ----------
    workdir : str | os.PathLike
        The directory Snakemake runs in (it keeps its locks in ``.snakemake/locks``).
    out_dir : str | os.PathLike
        The pipeline's output directory.

    Returns
    -------
    removed : list of pathlib.Path
        The lock files removed.
    """
    workdir = Path(workdir).resolve()
    out = Path(workdir, out_dir).resolve()
    lockdir = workdir / ".snakemake" / "locks"
    removed = []
    if not lockdir.is_dir():
        return removed
    for lockfile in sorted(lockdir.glob("*.lock")):
        try:
            names = [n.strip() for n in lockfile.read_text().splitlines() if n.strip()]
        except OSError:
            continue
        if any(Path(workdir, n).resolve().is_relative_to(out) for n in names):
            lockfile.unlink(missing_ok=True)
            removed.append(lockfile)
    return removed


def _workdir(extra_args):
    """The directory Snakemake will run in (``--directory``/``-d`` among ``extra_args``)."""
    args = list(extra_args)
    for i, arg in enumerate(args):
        if arg in ("--directory", "-d") and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--directory="):
            return Path(arg.split("=", 1)[1])
    return Path.cwd()


def run_pipeline(config, *, cores=1, dry_run=False, extra_args=(), snakefile=None):
    """Run a preprocessing pipeline with Snakemake.

    Equivalent to::

        python -m snakemake --snakefile SNAKEFILE --configfile CONFIG --cores N \\
            --rerun-triggers mtime params input --keep-going --rerun-incomplete

    run while holding a lock on ``out_dir`` (``out_dir/.neurofm-preprocess.lock``); stale
    Snakemake locks on ``out_dir`` left by a killed run are removed first, so running the
    same command again resumes it. When jobs fail, the store lists the recordings that
    succeeded and ``out_dir/failures.tsv`` names the others (see
    :func:`neurofm.pipelines.steps.failed_run_step`); the return value is then non-zero.

    Parameters
    ----------
    config : str | os.PathLike | dict
        Pipeline config (YAML path or mapping); validated first.
    cores : int
        Cores Snakemake may use (jobs run in parallel, one recording per job).
    dry_run : bool
        Only show what would run (``--dry-run``; takes no lock and writes nothing).
    extra_args : sequence of str
        More Snakemake arguments, e.g. ``("--executor", "slurm", "--jobs", "100")``.
    snakefile : str | os.PathLike, optional
        Another workflow (default :func:`default_snakefile`).

    Returns
    -------
    returncode : int
        Snakemake's exit status (0 on success).

    Raises
    ------
    NeurofmError
        An invalid config (before Snakemake starts), a bad ``cores``, or another run alive
        on the same ``out_dir``.
    """
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise NeurofmError(f"cores must be an integer >= 1; got {cores!r}")
    if isinstance(extra_args, str):
        raise NeurofmError(f"extra_args must be a sequence of arguments, not one string; got "
                           f"{extra_args!r} (use shlex.split)")
    extra_args = [str(a) for a in extra_args]
    snakefile = Path(snakefile) if snakefile is not None else default_snakefile()
    if not snakefile.is_file():
        raise FormatError(f"{snakefile}: Snakefile not found")
    cfg = load_config(config, snakefile=snakefile)  # fail early, with neurofm's wording
    tmp = None
    if isinstance(config, dict):
        import yaml

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="neurofm-config-",
                                         delete=False) as tmp:
            yaml.safe_dump(config, tmp)
        config_path = tmp.name
    else:
        config_path = str(config)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
           "--configfile", config_path, "--cores", str(cores),
           "--rerun-triggers", *RERUN_TRIGGERS, "--keep-going", "--rerun-incomplete"]
    if dry_run:
        cmd.append("--dry-run")
    cmd += extra_args
    try:
        if dry_run or "--dry-run" in extra_args or "-n" in extra_args:
            return _snakemake(cmd)
        workdir = _workdir(extra_args)
        out_dir = Path(workdir, cfg["out_dir"])
        with _out_dir_lock(out_dir):
            removed = clear_stale_snakemake_locks(workdir, out_dir)
            if removed:
                logger.warning("%s: removed %d stale Snakemake lock(s) of a run that was "
                               "killed; resuming it", out_dir, len(removed))
            return _snakemake(cmd)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)


def _snakemake(cmd):
    logger.info("running %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


class _out_dir_lock:
    """Hold ``out_dir/.neurofm-preprocess.lock`` (released by the OS if the process dies)."""

    def __init__(self, out_dir):
        from filelock import FileLock

        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / LOCK_NAME
        self.lock = FileLock(self.path)

    def __enter__(self):
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise NeurofmError(
                f"{self.path.parent}: another neurofm preprocess run is writing this out_dir "
                f"(it holds {self.path}); wait for it to finish or use another out_dir"
            ) from None
        return self

    def __exit__(self, *exc):
        self.lock.release()
        return False
