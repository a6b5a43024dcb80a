"""Pure ``Dataset -> Dataset`` preprocessing of canonical recordings.

Every function validates its input, never modifies it (the result shares no writable
buffer with it: writing into an output never changes the caller's data), records itself in
the ``history`` attribute of the result and works lazily on dask-backed recordings
(chunked along time; filters run with an overlap covering their support)::

    from neurofm import preprocessing as pp
    ds = pp.pick(ds, "eeg")
    ds = pp.notch(ds, 50.0)
    ds = pp.filter(ds, 0.5, 40.0)
    ds = pp.resample(ds, 250.0)
    ds = pp.rereference(ds, "average")
    ds, stats = pp.robust_scale(ds)
"""

from .channels import crop, pick, rereference
from .confounds import clean_confounds
from .dff import dff
from .filters import filter, notch, resample
from .scaling import robust_scale, robust_scale_stats, zscore
from .temporal import clip_frame_indices, temporal_resample, windows

__all__ = [
    "clean_confounds",
    "clip_frame_indices",
    "crop",
    "dff",
    "filter",
    "notch",
    "pick",
    "rereference",
    "resample",
    "robust_scale",
    "robust_scale_stats",
    "temporal_resample",
    "windows",
    "zscore",
]
