"""What every tokenizer shares: input checks, standardization, PVE, save/load plumbing.

Inputs are ``(C, T)`` or ``(B, C, T)`` arrays (numpy, torch, or an xarray DataArray /
canonical Dataset whose ``signal`` is used). Internally everything is a float tensor of shape
(B, C, T); results go back as numpy when the input was not a torch tensor, and lose the
batch axis when the input had none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, FormatError, NeurofmError

FORMAT_VERSION = 1
CONFIG_FILE = "tokenizer.json"
STATS_FILE = "stats.npz"
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class _Layout:
    """How the caller's array looked, so results can be handed back in the same form."""

    batched: bool
    torch_in: bool
    device: torch.device


def as_signal(x, *, name="x", n_channels=None, min_times=1, dtype=torch.float32):
    """Check a signal and return it as a (B, C, T) tensor plus its layout.

    Parameters
    ----------
    x : array-like of shape (C, T) or (B, C, T)
        numpy array, torch tensor, xarray DataArray or canonical Dataset (its ``signal``).
    name : str
        Parameter name used in error messages.
    n_channels : int, optional
        Required channel count (fixed-channel tokenizers).
    min_times : int
        Fewest samples accepted.
    dtype : torch.dtype
        dtype of the returned tensor.

    Returns
    -------
    x : torch.Tensor of shape (B, C, T)
    layout : _Layout

    Raises
    ------
    DataError
        Wrong rank, empty axes, non-numeric or non-finite values, wrong channel count.
    """
    torch_in = isinstance(x, torch.Tensor)
    if not torch_in:
        x = _to_numpy(x, name)
        if x.dtype.kind not in "biuf":
            raise DataError(f"{name} must hold real numbers; got dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        if x.is_complex() or x.dtype == torch.bool:
            raise DataError(f"{name} must hold real numbers; got dtype {x.dtype}")
        t = x.detach().cpu()  # computed on the CPU (networks move windows to their device)
    if t.ndim not in (2, 3):
        raise DataError(f"{name} must have shape (C, T) or (B, C, T); got shape "
                        f"{tuple(t.shape)} ({t.ndim} dimensions)")
    batched = t.ndim == 3
    if not batched:
        t = t.unsqueeze(0)
    B, C, T = t.shape
    if B == 0 or C == 0:
        raise DataError(f"{name} has an empty axis: shape {tuple(t.shape)} (B, C, T)")
    if min_times > T:
        raise DataError(f"{name} needs at least {min_times} time samples; got {T} "
                        f"(shape {tuple(t.shape)})")
    if n_channels is not None and n_channels != C:
        raise DataError(f"{name} must have {n_channels} channels (this tokenizer is fixed to "
                        f"n_channels={n_channels}); got {C} (shape {tuple(t.shape)})")
    t = t.to(dtype)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n_bad = int(bad.sum())
        raise DataError(f"{name} contains {n_bad} non-finite value(s) (NaN or Inf) out of "
                        f"{t.numel()}; interpolate or drop them before tokenizing")
    device = x.device if torch_in else torch.device("cpu")
    return t, _Layout(batched=batched, torch_in=torch_in, device=device)


def as_tokens(tokens, *, name="tokens", vocab_size=None, min_dims=2):
    """Check integer tokens of shape (C, T) or (B, C, T) (+ trailing axes for ``min_dims``).

    Returns a long tensor with a batch axis and the layout.
    """
    torch_in = isinstance(tokens, torch.Tensor)
    if torch_in:
        t = tokens.detach().cpu()
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise DataError(f"{name} must be integers; got dtype {t.dtype}")
    else:
        arr = _to_numpy(tokens, name)
        if arr.dtype.kind not in "iu":
            raise DataError(f"{name} must be integers; got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.int64, copy=False))
    if t.ndim not in (min_dims, min_dims + 1):
        shape = "(C, T)" if min_dims == 2 else "(C, n_frames)"
        raise DataError(f"{name} must have shape {shape} or (B, *{shape[1:]}; got shape "
                        f"{tuple(t.shape)}")
    batched = t.ndim == min_dims + 1
    if not batched:
        t = t.unsqueeze(0)
    t = t.long()
    if vocab_size is not None and t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= vocab_size:
            raise DataError(f"{name} must lie in [0, {vocab_size - 1}] (vocab_size="
                            f"{vocab_size}); found values in [{lo}, {hi}]")
    device = tokens.device if torch_in else torch.device("cpu")
    return t, _Layout(batched=batched, torch_in=torch_in, device=device)


def restore(t, layout):
    """Hand a (B, ...) result back in the caller's form (numpy or torch, batch axis or not)."""
    if not layout.batched:
        t = t[0]
    if layout.torch_in:
        return t.to(layout.device)
    return t.cpu().numpy()


def _to_numpy(x, name):
    if hasattr(x, "data_vars") and "signal" in getattr(x, "data_vars", {}):
        x = x["signal"]
    if hasattr(x, "dims") and hasattr(x, "values"):  # xarray.DataArray
        dims = tuple(x.dims)
        if "channel" in dims and "time" in dims:
            order = [d for d in dims if d not in ("channel", "time")] + ["channel", "time"]
            x = x.transpose(*order)
        x = x.values
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise DataError(f"{name} must be an array of shape (C, T) or (B, C, T); got "
                        f"{type(x).__name__} ({err})") from err


def standardize(x, *, eps=0.0):
    """Z-score each channel of each recording over time (population std; std 0 -> 1).

    Computed in float64, as the reference tokenizer does on numpy arrays.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, T)

    Returns
    -------
    z : torch.Tensor of shape (B, C, T), float32
    """
    x64 = x.double()
    mean = x64.mean(dim=-1, keepdim=True)
    std = x64.std(dim=-1, keepdim=True, correction=0)
    std = torch.where(std <= eps, torch.ones_like(std), std)
    return ((x64 - mean) / std).float()


def pve(x, x_hat):
    """Percentage of variance explained by a reconstruction.

    ``100 * (1 - sum((x - x_hat)**2) / sum((x - mean_t(x))**2))``, the sums running over
    every batch item, channel and sample; the mean is taken over time per channel (for
    z-scored signals this is the reference tokenizer's ``1 - SSE / sum(x**2)``).

    Parameters
    ----------
    x, x_hat : array-like of the same shape (..., C, T)

    Returns
    -------
    pve : float
        In percent; 100 is a perfect reconstruction, 0 is as good as the channel means.
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    x_hat = torch.as_tensor(np.asarray(x_hat) if not isinstance(x_hat, torch.Tensor)
                            else x_hat).double().to(x.device)
    if x.shape != x_hat.shape:
        raise DataError(f"pve needs x and x_hat of the same shape; got {tuple(x.shape)} and "
                        f"{tuple(x_hat.shape)}")
    sse = float(((x - x_hat) ** 2).sum())
    sst = float(((x - x.mean(dim=-1, keepdim=True)) ** 2).sum())
    if sst == 0.0:
        return 100.0 if sse == 0.0 else 0.0
    return 100.0 * (1.0 - sse / sst)


def _is_item_dataset(data):
    """A map-style dataset (torch Dataset or duck-typed like neurofm.data.WindowDataset)."""
    if isinstance(data, torch.utils.data.Dataset):
        return True
    if isinstance(data, (np.ndarray, torch.Tensor, list, tuple, str, bytes)):
        return False
    if hasattr(data, "dims") or hasattr(data, "data_vars"):  # xarray
        return False
    return hasattr(data, "__getitem__") and hasattr(data, "__len__")


def iter_recordings(data, name="data"):
    """Yield (C, T) float32 tensors from training data.

    ``data`` is one array (C, T), a batch (B, C, T), a list of (C, T) recordings, or a
    map-style dataset (a torch Dataset or e.g. :class:`neurofm.data.WindowDataset`) whose
    items are (C, T) signals or dicts with a ``signal`` and optionally a ``channel_mask``
    (padded channels are dropped).
    """
    if _is_item_dataset(data):
        if len(data) == 0:
            raise DataError(f"{name} is an empty dataset")
        for i in range(len(data)):
            item = data[i]
            mask = None
            if isinstance(item, dict):
                if "signal" not in item:
                    raise DataError(f"{name}[{i}] is a dict without a 'signal' entry; found "
                                    f"{sorted(item)}")
                mask = item.get("channel_mask")
                item = item["signal"]
            t, _ = as_signal(item, name=f"{name}[{i}]")
            for rec in t:
                if mask is not None:
                    rec = rec[torch.as_tensor(mask, dtype=torch.bool)]
                if rec.shape[0]:
                    yield rec
        return
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError(f"{name} is an empty list; expected recordings of shape (C, T)")
        for i, item in enumerate(data):
            yield from iter_recordings(item, name=f"{name}[{i}]")
        return
    t, _ = as_signal(data, name=name)
    yield from t


# ---------------------------------------------------------------------------------------------
# save / load

def write_config(path, cls_name, config):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    doc = {"class": cls_name, "format_version": FORMAT_VERSION, "config": config}
    (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def read_config(path, cls_name=None):
    """The saved ``config`` of the tokenizer in directory ``path`` (class checked if given)."""
    return read_header(path, cls_name)[1]


def read_header(path, cls_name=None):
    """``(class name, config)`` of the tokenizer saved in directory ``path``."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise FormatError(f"{path}: not a saved neurofm tokenizer (missing {CONFIG_FILE})")
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise FormatError(f"{file}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or not {"class", "format_version", "config"} <= set(doc):
        raise FormatError(f"{file}: expected keys 'class', 'format_version' and 'config'; "
                          f"found {sorted(doc) if isinstance(doc, dict) else type(doc)}")
    if doc["format_version"] != FORMAT_VERSION:
        raise FormatError(f"{file}: format_version {doc['format_version']!r} is not supported "
                          f"(this neurofm reads {FORMAT_VERSION})")
    if cls_name is not None and doc["class"] != cls_name:
        raise FormatError(f"{file}: holds a {doc['class']}, not a {cls_name}")
    return doc["class"], doc["config"]


def write_stats(path, **arrays):
    np.savez(Path(path) / STATS_FILE, **{k: np.asarray(v) for k, v in arrays.items()})


def read_stats(path, required):
    file = Path(path) / STATS_FILE
    if not file.is_file():
        raise FormatError(f"{file}: missing (a saved tokenizer keeps its statistics there)")
    try:
        with np.load(file, allow_pickle=False) as npz:
            stats = {k: npz[k] for k in npz.files}
    except ValueError as err:
        raise FormatError(f"{file}: not a readable .npz of numeric arrays ({err})") from err
    missing = sorted(set(required) - set(stats))
    if missing:
        raise FormatError(f"{file}: missing array(s) {missing}; found {sorted(stats)}")
    return stats


def load_state_dict_strict(module, state, source):
    """Load ``state`` into ``module``: every key must map and every shape must match."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
             for k in sorted(set(expected) & set(state))
             if tuple(expected[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        raise FormatError(
            f"{source}: the weights do not match the model (no partial load): "
            f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {wrong}")
    module.load_state_dict(state, strict=True)


def read_torch_state(file):
    file = Path(file)
    if not file.is_file():
        raise FormatError(f"{file}: missing (expected a PyTorch state dict)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FormatError(f"{file}: not a readable PyTorch state dict "
                          f"({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise FormatError(f"{file}: expected a dict of tensors (a state dict); found "
                          f"{type(state).__name__}")
    return state


def check_fitted(obj, attr, what="fit"):
    if getattr(obj, attr, None) is None:
        raise NeurofmError(f"this {type(obj).__name__} is not fitted yet; call {what}() first")
