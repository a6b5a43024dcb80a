"""Resumable steps: one small JSON state file per step, keyed by the step's inputs.

A step is done when ``state/<name>.json`` holds ``status: "done"`` with the same key (a
hash of its parameters, the keys of the steps it depends on and the code's step version)
and its declared outputs still exist; it is then skipped and its recorded result reused.
A changed parameter or an upstream step that ran again changes the key, so the step (and
everything after it) runs again. A run killed in the middle leaves no ``done`` state for
the unfinished step, so the next run starts that step again (the step itself may resume
its own work: Snakemake outputs, ``last.ckpt``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .._version import __version__

#: The demo's progress lines (INFO by default; the rest of neurofm stays at its level).
logger = logging.getLogger("neurofm.demo")

__all__ = ["Steps", "file_digest", "stable_hash"]

#: Bump to invalidate every stored step (a change of what the steps compute).
STATE_VERSION = 1


def stable_hash(obj):
    """SHA-256 (16 hex digits) of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path):
    """SHA-256 (16 hex digits) of a file's bytes ("missing" when absent)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _write_json_atomic(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


class Steps:
    """Run named steps once per key; record timings and results.

    Parameters
    ----------
    root : str | os.PathLike
        Output directory of the demo; states live in ``root/state``.
    force : bool
        Run every step even when an up-to-date state exists.

    Attributes
    ----------
    results : dict of str -> dict
        JSON-safe result of every step run or reused in this session.
    timings : dict of str -> dict
        ``seconds`` (this session), ``reused`` (bool) and ``recorded_seconds`` (when the step
        was computed) of every step.
    """

    def __init__(self, root, *, force=False):
        self.root = Path(root)
        self.dir = self.root / "state"
        self.force = force
        self.keys = {}
        self.results = {}
        self.timings = {}

    def path(self, name):
        return self.dir / f"{name}.json"

    def key(self, name, params, deps=()):
        """The key of step ``name`` with ``params`` after ``deps``."""
        return stable_hash({"step": name, "params": params, "version": STATE_VERSION,
                            "neurofm": __version__,
                            "deps": {d: self.keys[d] for d in deps}})

    def run(self, name, func, *, params=None, deps=(), outputs=(), title=None):
        """Run ``func()`` (returning a JSON-safe dict) unless step ``name`` is up to date.

        Parameters
        ----------
        name : str
        func : callable () -> dict
        params : JSON-safe object
            Everything the step's result depends on besides ``deps``.
        deps : sequence of str
            Earlier steps whose results this one uses.
        outputs : sequence of path
            Files the step writes; a missing one reruns the step.
        title : str, optional
            What the progress lines call the step.

        Returns
        -------
        result : dict
        """
        title = title or name
        key = self.key(name, params, deps)
        self.keys[name] = key
        state = self._load(name)
        outputs = [Path(p) for p in outputs]
        if (not self.force and state is not None and state.get("key") == key
                and state.get("status") == "done"
                and all(p.exists() for p in outputs)):
            logger.info("[%s] up to date (computed in %.1f s on %s): reused", title,
                        state.get("seconds", float("nan")), state.get("finished", "?"))
            self.results[name] = state["result"]
            self.timings[name] = {"seconds": 0.0, "reused": True,
                                  "recorded_seconds": state.get("seconds")}
            return state["result"]
        logger.info("[%s] running ...", title)
        _write_json_atomic(self.path(name), {"key": key, "status": "running",
                                             "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        t0 = time.perf_counter()
        result = func()
        seconds = time.perf_counter() - t0
        _write_json_atomic(self.path(name), {
            "key": key, "status": "done", "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "params": params,
            "outputs": [str(p) for p in outputs], "result": result})
        logger.info("[%s] done in %.1f s", title, seconds)
        self.results[name] = result
        self.timings[name] = {"seconds": round(seconds, 2), "reused": False,
                              "recorded_seconds": round(seconds, 2)}
        return result

    def _load(self, name):
        try:
            return json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None
