"""A restricted unpickler for the pickles neurofm has to read from untrusted files.

suite2p keeps its per-ROI statistics (``stat.npy``) and run options (``ops.npy``) as numpy
object arrays, which ``numpy.load`` can only read with ``allow_pickle=True``; spkit ships its
sample EEG as a plain pickle. A pickle can name any importable callable, so loading one with
:mod:`pickle` runs whatever the file asks for. :func:`restricted_load` only lets through what
numpy arrays, numpy scalars and dtypes need to be rebuilt, plus the builtin containers and
scalars; any other global is refused with a :class:`~neurofm.errors.FormatError` naming it.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np

from ..errors import FormatError

__all__ = ["ALLOWED_GLOBALS", "load_npy", "restricted_load"]

#: (module, name) pairs a pickle may reference. numpy 1.x pickles name ``numpy.core``, numpy
#: 2.x ones ``numpy._core``; both resolve to the running numpy's objects.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("codecs", "encode"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("builtins", "slice"),
    ("builtins", "range"),
})

# numpy.dtypes.Float64DType and friends appear in pickles of numpy >= 2 dtypes.
_DTYPE_CLASS_MODULES = ("numpy.dtypes",)


def _numpy_core():
    core = getattr(np, "_core", None)
    return core if core is not None else np.core  # numpy < 2


def _resolve(module, name):
    core = _numpy_core()
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        return getattr(core.multiarray, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric"):
        return getattr(core.numeric, name)
    if module == "numpy":
        return getattr(np, name)
    if module in ("_codecs", "codecs"):
        import codecs

        return getattr(codecs, name)
    if module in _DTYPE_CLASS_MODULES:
        from numpy import dtypes

        return getattr(dtypes, name)
    import builtins

    return getattr(builtins, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module, name):
        allowed = (module, name) in ALLOWED_GLOBALS or (
            module in _DTYPE_CLASS_MODULES and name.endswith("DType")
        )
        if not allowed:
            raise FormatError(
                f"{self._source}: refusing to unpickle the global {module}.{name}; only numpy "
                "arrays, numpy scalars/dtypes and builtin containers (dict, list, tuple, str, "
                "numbers) are allowed from untrusted files"
            )
        return _resolve(module, name)

    def persistent_load(self, pid):
        raise FormatError(f"{self._source}: refusing a pickle persistent id ({pid!r})")


def restricted_load(fileobj_or_path):
    """Unpickle a file, allowing only numpy arrays/dtypes and builtin containers.

    Reads plain pickles (e.g. spkit's ``EEG16SecData.pkl``) and ``.npy`` files, including
    object arrays such as suite2p's ``stat.npy`` and ``ops.npy`` (the ``.npy`` header is
    parsed here and the pickled payload goes through the restricted unpickler).

    Parameters
    ----------
    fileobj_or_path : str | os.PathLike | binary file object
        What to read. A file object is read from its current position.

    Returns
    -------
    obj : object
        The unpickled object; for a ``.npy`` file, the array (a 0-d object array for
        ``ops.npy``: use ``.item()`` to get the dict).

    Raises
    ------
    FormatError
        The file is missing or not a pickle/``.npy`` file, or it references a global other
        than the allowed numpy and builtin ones (the message names the refused global).
    """
    if isinstance(fileobj_or_path, (str, os.PathLike)):
        path = Path(fileobj_or_path)
        if not path.is_file():
            raise FormatError(f"{path}: file not found; expected a pickle or .npy file")
        with open(path, "rb") as fh:
            return _load_stream(fh, str(path))
    if not hasattr(fileobj_or_path, "read"):
        raise FormatError(f"restricted_load needs a path or a binary file object; got "
                          f"{type(fileobj_or_path).__name__}")
    source = getattr(fileobj_or_path, "name", "<file object>")
    return _load_stream(fileobj_or_path, str(source))


def _load_stream(fh, source):
    try:
        start = fh.tell() if fh.seekable() else None
    except (AttributeError, OSError, ValueError):  # no tell/seek: a pipe, a socket
        start = None
    head = fh.read(6)
    if head == b"\x93NUMPY":
        if start is not None:
            fh.seek(start)
        else:  # non-seekable: stitch the magic back in front
            fh = io.BufferedReader(_Prefixed(head, fh))
        return _load_npy_stream(fh, source)
    if start is not None:
        fh.seek(start)
    else:
        fh = io.BufferedReader(_Prefixed(head, fh))
    try:
        return _RestrictedUnpickler(fh, source).load()
    except FormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as err:
        raise FormatError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") \
            from err


def _load_npy_stream(fh, source):
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:
            shape, fortran, dtype = npformat._read_array_header(fh, version)
    except (ValueError, EOFError) as err:
        raise FormatError(f"{source}: corrupt .npy header ({err})") from err
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise FormatError(f"{source}: corrupt .npy header: the shape {shape} must hold "
                          "non-negative integers")
    if not dtype.hasobject:
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        buf = _read_exactly(fh, nbytes, source)
        if len(buf) != nbytes:
            raise FormatError(f"{source}: truncated .npy file: the header declares shape "
                              f"{shape} of {dtype} ({nbytes} bytes of data), the file holds "
                              f"{len(buf)} bytes after the header")
        arr = np.frombuffer(buf, dtype=dtype).copy()
        order = "F" if fortran else "C"
        return arr.reshape(shape, order=order)
    try:
        arr = _RestrictedUnpickler(fh, source).load()
    except FormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as err:
        raise FormatError(f"{source}: corrupt pickled payload in .npy file "
                          f"({type(err).__name__}: {err})") from err
    return arr


_CHUNK = 1 << 26  # bytes read at a time from a stream whose size is unknown


def _read_exactly(fh, nbytes, source):
    """Read ``nbytes`` (or fewer, at end of file) without allocating more than the file holds.

    A header may declare an absurd shape (e.g. (1e8, 1e8)): reading that many bytes at once
    would fail with a MemoryError before the truncation is even noticed.
    """
    try:
        here = fh.tell()
        end = fh.seek(0, io.SEEK_END)
        fh.seek(here)
    except (AttributeError, OSError, ValueError):  # not seekable: read in bounded chunks
        parts, left = [], nbytes
        while left > 0:
            part = fh.read(min(left, _CHUNK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)
    return fh.read(min(nbytes, max(end - here, 0)))


def load_npy(path):
    """Load a ``.npy`` file; object arrays go through the restricted unpickler.

    Parameters
    ----------
    path : str | os.PathLike
        The ``.npy`` file.

    Returns
    -------
    arr : numpy.ndarray
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file not found")
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise FormatError(f"{path}: not a .npy file (missing the \\x93NUMPY magic)")
        fh.seek(0)
        return _load_npy_stream(fh, str(path))


class _Prefixed(io.RawIOBase):
    """A raw stream that yields ``prefix`` and then the rest of ``fh``."""

    def __init__(self, prefix, fh):
        self._prefix = prefix
        self._fh = fh

    def readable(self):
        return True

    def readinto(self, b):
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._fh.read(len(b))
        n = len(data)
        b[:n] = data
        return n
