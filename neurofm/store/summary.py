"""Human-readable summaries of recordings and stores (``neurofm info``, the demo)."""

from __future__ import annotations

from .core import describe

__all__ = ["format_recording", "format_store", "summarize_recording"]


def summarize_recording(ds):
    """A JSON-friendly summary of one canonical recording."""
    import numpy as np

    names = [str(c) for c in ds["channel"].values]
    types = {}
    for t in ds["ch_type"].values:
        types[str(t)] = types.get(str(t), 0) + 1
    n_ev = int(ds.sizes.get("event", 0))
    desc = {}
    if n_ev:
        for d in ds["event_description"].values:
            desc[str(d)] = desc.get(str(d), 0) + 1
    sfreq = float(ds.attrs["sfreq"])
    return {
        "modality": ds.attrs.get("modality"),
        "n_channels": len(names),
        "channels": names,
        "ch_types": types,
        "bad": [n for n, b in zip(names, np.asarray(ds["bad"].values)) if b],
        "sfreq": sfreq,
        "n_times": int(ds.sizes["time"]),
        "duration_s": float(ds.sizes["time"] / sfreq),
        "units": ds["signal"].attrs.get("units"),
        "n_events": n_ev,
        "events": desc,
        "subject": ds.attrs.get("subject", ""),
        "source_file": ds.attrs.get("source_file", ""),
    }


def format_recording(s):
    """Human-readable lines of a :func:`summarize_recording` summary."""
    chans = ", ".join(s["channels"][:8]) + (" ..." if s["n_channels"] > 8 else "")
    types = ", ".join(f"{k}: {v}" for k, v in s["ch_types"].items())
    lines = [
        f"modality   {s['modality']}",
        f"channels   {s['n_channels']} ({types}): {chans}",
        f"sfreq      {s['sfreq']:g} Hz",
        f"duration   {s['duration_s']:.3f} s ({s['n_times']} samples)",
        f"units      {s['units']}",
        f"bad        {', '.join(s['bad']) or 'none'}",
        f"events     {s['n_events']}" + (
            " (" + ", ".join(f"{k}: {v}" for k, v in list(s["events"].items())[:10]) + ")"
            if s["n_events"] else ""),
    ]
    if s.get("source_file"):
        lines.append(f"source     {s['source_file']}")
    return "\n".join(lines)


def format_store(store):
    """Human-readable summary of a store: totals, then one line per recording."""
    d = describe(store)
    m = store.manifest
    lines = [
        f"store      {d['path']}",
        f"recordings {d['n_recordings']} ({', '.join(d['modalities']) or 'none'})",
        f"subjects   {len(d['subjects'])}",
        f"duration   {d['hours'] * 3600:.1f} s in total",
        f"splits     {', '.join(f'{k}: {v}' for k, v in d['splits'].items()) or 'none'}",
    ]
    if len(m):
        cols = ["id", "modality", "n_channels", "n_times", "sfreq", "split"]
        lines.append("")
        lines.append(m[cols].to_string(index=False))
    return "\n".join(lines)
