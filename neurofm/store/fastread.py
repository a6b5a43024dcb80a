"""The memory-mapped window path: read uncompressed float32 chunks straight from their files.

zarr v3 stores a chunk of an array with codecs ``bytes(little) -> crc32c`` as the raw
little-endian samples followed by a 4-byte crc32c checksum. For such arrays, with all
channels in one chunk, a window is cut from ``np.memmap`` views of the chunk files it
overlaps, which keeps a random window read in the tens of microseconds. Everything else
(compressed chunks, other dtypes, remote stores) goes through zarr.

Each chunk file's size is checked before it is mapped, a missing one is an error (a store
written by neurofm has every chunk), and maps are keyed by the file path, which contains
the version folder: a replaced recording can never be read half old, half new.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict

import numpy as np

from ..errors import FormatError

__all__ = ["ChunkMaps", "direct_layout"]

#: Bytes of the crc32c trailer zarr's crc32c codec appends to each chunk.
CRC_BYTES = 4


def direct_layout(arr, base):
    """How to map ``arr``'s chunk files, or None when zarr must decode them.

    Parameters
    ----------
    arr : zarr.Array
        The ``signal`` array (n_channels, n_times) of a recording.
    base : str
        Local folder of that array (``<store>/<version>/signal``).

    Returns
    -------
    layout : dict | None
        ``base``, ``n_ch``, ``chunk``, ``n_times``, ``trailer`` (bytes after the samples),
        ``nbytes`` (expected file size) and ``key`` (chunk index -> relative file name).
    """
    meta = arr.metadata
    codecs = tuple(getattr(meta, "codecs", ()))
    if not codecs or type(codecs[0]).__name__ != "BytesCodec":
        return None
    endian = str(getattr(codecs[0].endian, "value", codecs[0].endian))
    rest = [type(c).__name__ for c in codecs[1:]]
    if rest not in ([], ["Crc32cCodec"]):
        return None
    dtype = np.dtype(arr.dtype)
    if dtype != np.float32 or endian not in ("little", "None"):
        return None
    if len(arr.shape) != 2 or arr.chunks[0] != arr.shape[0]:
        return None
    n_ch, chunk = int(arr.shape[0]), int(arr.chunks[1])
    trailer = CRC_BYTES if rest else 0
    return {"base": base, "n_ch": n_ch, "chunk": chunk, "n_times": int(arr.shape[1]),
            "trailer": trailer, "nbytes": n_ch * chunk * 4 + trailer,
            "key": lambda c: meta.encode_chunk_key((0, c))}


class ChunkMaps:
    """Per-process LRU of memory-mapped chunk files (opened lazily, after fork).

    Parameters
    ----------
    capacity : int
        Chunk files kept mapped.
    """

    def __init__(self, capacity=256):
        self.capacity = capacity
        self.maps = OrderedDict()

    def clear(self):
        self.maps.clear()

    def forget(self, base):
        """Drop the maps of one version folder."""
        for key in [k for k in self.maps if k[0] == base]:
            del self.maps[key]

    def chunk_file(self, layout, c):
        return os.path.join(layout["base"], *layout["key"](c).split("/"))

    def get(self, layout, c, where):
        """The (n_ch, valid samples) view of chunk ``c``.

        Raises
        ------
        FileNotFoundError
            The chunk file is missing (the caller decides whether that is damage).
        FormatError
            The chunk file has the wrong size (truncated or not this layout).
        """
        key = (layout["base"], c)
        block = self.maps.get(key)
        if block is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs a microsecond per window
                self.maps.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile: the view stays valid
                pass
            return block
        fname = self.chunk_file(layout, c)
        size = os.stat(fname).st_size
        if size != layout["nbytes"]:
            raise FormatError(f"{where}: chunk {c} ({fname}) has {size} bytes; expected "
                              f"{layout['nbytes']} ({layout['n_ch']} channels x "
                              f"{layout['chunk']} float32 samples + {layout['trailer']}-byte "
                              "checksum): the file is truncated or damaged")
        # a chunk file stores the full chunk shape, also for the last (partial) chunk; the
        # checksum trailer after the samples is not mapped
        with open(fname, "rb") as fid:  # a plain ndarray view: cheaper to slice than memmap
            buf = mmap.mmap(fid.fileno(), layout["nbytes"] - layout["trailer"],
                            access=mmap.ACCESS_READ)
        block = np.frombuffer(buf, dtype="<f4").reshape(layout["n_ch"], layout["chunk"])
        n = min(layout["chunk"], layout["n_times"] - c * layout["chunk"])
        block = block[:, :n]
        self.maps[key] = block
        while len(self.maps) > self.capacity:
            try:
                self.maps.popitem(last=False)
            except KeyError:  # emptied by another thread
                break
        return block

    def read(self, layout, start, stop, where, out=None):
        """Samples ``start:stop`` of all channels as a fresh float32 array (or into ``out``,
        a float32 array of shape (n_ch, stop - start) checked by the caller).

        Raises FileNotFoundError naming the chunk file when one is missing.
        """
        chunk = layout["chunk"]
        if out is None:
            out = np.empty((layout["n_ch"], stop - start), dtype=np.float32)
        for c in range(start // chunk, (stop - 1) // chunk + 1):
            c0 = c * chunk
            lo, hi = max(start, c0), min(stop, c0 + chunk)
            out[:, lo - start:hi - start] = self.get(layout, c, where)[:, lo - c0:hi - c0]
        return out
