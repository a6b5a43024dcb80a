"""File-system helpers shared by the store modules (local paths and fsspec URLs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import warnings
from contextlib import contextmanager

__all__ = ["crash_point", "fs_for", "is_url", "join", "local_path", "quiet_zarr",
           "remove_tree"]

#: Environment variable naming a step at which a writer kills itself (crash tests only).
CRASH_ENV = "NEUROFM_STORE_CRASH_AT"


def is_url(path):
    """True for fsspec URLs other than ``file://``."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def local_path(path):
    """``path`` as a local file-system path (``file://`` stripped)."""
    return os.fspath(path).removeprefix("file://")


def fs_for(path, storage_options=None):
    """``(filesystem, root)`` of an fsspec URL (root without a trailing slash)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs, root.rstrip("/")


def join(root, rel, remote):
    """``root/rel`` with the separator of the file system."""
    return f"{root}/{rel}" if remote else os.path.join(root, rel)


def remove_tree(path, storage_options=None):
    """Delete a folder (local path or URL); missing folders are fine."""
    path = os.fspath(path)
    if is_url(path):
        fs, root = fs_for(path, storage_options)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        return
    shutil.rmtree(local_path(path), ignore_errors=True)


def host_tag():
    """This machine's name, reduced to letters and digits (used in temporary names)."""
    return "".join(ch for ch in socket.gethostname() if ch.isalnum())[:24] or "host"


def pid_alive(pid):
    """True when a process with this id runs on this machine (always True on Windows,
    where ``os.kill(pid, 0)`` would terminate it: leftovers then go by age)."""
    if os.name == "nt":  # pragma: no cover
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def crash_point(step):
    """Kill this process (SIGKILL) when ``$NEUROFM_STORE_CRASH_AT == step``.

    Used by the crash tests to stop a writer between two steps of a store update; a no-op
    otherwise.
    """
    if os.environ.get(CRASH_ENV) == step:
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)  # pragma: no cover - Windows


@contextmanager
def quiet_zarr():
    """Silence zarr's notes on consolidated metadata and fixed-width string dtypes.

    Both are known and deliberate: consolidated metadata saves one request per variable on
    object storage, and channel names are fixed-width unicode so they round-trip bit-exact.
    """
    with warnings.catch_warnings():
        try:
            from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            warnings.simplefilter("ignore", ZarrUserWarning)
        except ImportError:  # pragma: no cover - older zarr
            warnings.simplefilter("ignore", UserWarning)
        yield
