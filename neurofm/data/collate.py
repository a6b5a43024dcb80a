"""Collate samples of :class:`~neurofm.data.WindowDataset` into batches.

Recordings with different channel sets are padded along the channel axis and the padding is
masked (``channel_mask`` False), so one batch can mix EEG montages, MEG systems, fMRI
parcellations and calcium fields of view.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .windows import WindowBatch

__all__ = ["collate"]


def collate(samples):
    """Stack a list of samples into a batch, padding channels.

    Parameters
    ----------
    samples : list of dict or WindowBatch
        Samples of :class:`~neurofm.data.WindowDataset` (``signal`` of shape (C_i, T)), e.g.
        the :class:`~neurofm.data.WindowBatch` a DataLoader gets from ``__getitems__`` (an
        untouched one is returned from its batch tensors, without copying).

    Returns
    -------
    batch : dict
        ``signal`` float32 (B, C, T) with C = max C_i (zeros where padded);
        ``channel_mask`` bool (B, C); ``ch_pos`` float32 (B, C, 3); ``ch_pos_mask`` bool
        (B, C); ``channel`` / ``ch_type`` lists of B lists of C str ("" where padded);
        ``recording`` / ``subject`` lists of str; ``sfreq`` float64 (B,); ``start`` int64
        (B,); ``label`` int64 (B,) when present. Other keys are collated as lists.

    Raises
    ------
    DataError
        Windows of different lengths (e.g. recordings at different sampling rates with
        ``window_s``): resample the store, or use ``window_samples``.
    """
    import torch

    if isinstance(samples, WindowBatch):
        batch = samples.collated()
        if batch is not None:  # untouched: its tensors are the batch
            return batch
    if not samples:
        raise DataError("collate: no samples")
    lengths = {int(s["signal"].shape[-1]) for s in samples}
    if len(lengths) > 1:
        which = sorted({(s["recording"], int(s["signal"].shape[-1])) for s in samples})[:6]
        raise DataError(f"collate: windows have different lengths {sorted(lengths)} "
                        f"(recording, samples): {which}; resample the store to one rate or "
                        "use window_samples=")
    counts = [int(s["signal"].shape[0]) for s in samples]
    n_ch, n_t, b = max(counts), lengths.pop(), len(samples)
    if min(counts) == n_ch:  # one channel set: plain stacking
        from torch.utils.data import default_collate

        # rows of one batch buffer (WindowDataset.__getitems__) are returned as that buffer;
        # otherwise default_collate stacks straight into shared memory inside a DataLoader
        # worker, saving the copy the worker would otherwise make to send the batch
        signal, mask, pos, pos_mask = (
            _batch_buffer([s[key] for s in samples])
            for key in ("signal", "channel_mask", "ch_pos", "ch_pos_mask"))
        if signal is None:
            signal = default_collate([s["signal"] for s in samples])
        if mask is None or pos is None or pos_mask is None:
            mask, pos, pos_mask = (default_collate([s[key] for s in samples])
                                   for key in ("channel_mask", "ch_pos", "ch_pos_mask"))
    else:
        signal = torch.zeros((b, n_ch, n_t), dtype=torch.float32)
        mask = torch.zeros((b, n_ch), dtype=torch.bool)
        pos = torch.zeros((b, n_ch, 3), dtype=torch.float32)
        pos_mask = torch.zeros((b, n_ch), dtype=torch.bool)
        for k, (s, c) in enumerate(zip(samples, counts)):
            signal[k, :c] = s["signal"]
            mask[k, :c] = s["channel_mask"]
            pos[k, :c] = s["ch_pos"]
            pos_mask[k, :c] = s["ch_pos_mask"]
    batch = {"signal": signal, "channel_mask": mask, "ch_pos": pos, "ch_pos_mask": pos_mask}
    for key in ("channel", "ch_type"):
        names = [s[key] for s in samples]
        batch[key] = ([list(c) for c in names] if min(counts) == n_ch
                      else [list(c) + [""] * (n_ch - len(c)) for c in names])
    batch["recording"] = [s["recording"] for s in samples]
    batch["subject"] = [s["subject"] for s in samples]
    batch["sfreq"] = torch.from_numpy(np.array([s["sfreq"] for s in samples],
                                               dtype=np.float64))
    batch["start"] = torch.tensor(np.array([s["start"] for s in samples], dtype=np.int64))
    if "label" in samples[0]:
        batch["label"] = torch.from_numpy(np.array([s["label"] for s in samples],
                                                   dtype=np.int64))
    done = set(batch)
    for key in samples[0]:
        if key not in done:
            batch[key] = [s[key] for s in samples]
    return batch


def _batch_buffer(rows):
    """The (B, ...) tensor whose rows are ``rows`` in order, or None.

    :meth:`WindowDataset.__getitems__ <neurofm.data.WindowDataset.__getitems__>` reads a
    batch into one buffer; stacking its rows again would only copy it.
    """
    base = rows[0]._base
    if base is None or base.dim() < 2 or base.shape[0] != len(rows):
        return None
    shape, step = base.shape[1:], base.stride(0) * base.element_size()
    if step == 0:
        return None
    ptr = base.data_ptr()
    for t in rows:  # each row a full row view of base, in order
        if t._base is not base or t.data_ptr() != ptr or t.shape != shape:
            return None
        ptr += step
    return base
