"""The ``neurofm`` command.

Subcommands::

    neurofm --version
    neurofm info PATH                      summary of a recording or a store
    neurofm convert INPUT... --out STORE   files (or a BIDS root) -> store
    neurofm preprocess CONFIG              run a Snakemake pipeline (pipelines/)
    neurofm sample-data [--out DIR]        build the bundled sample BIDS dataset

Every :class:`~neurofm.errors.NeurofmError` is printed as one line (``neurofm: error: ...``)
with exit status 2; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__
from .errors import NeurofmError

__all__ = ["main", "build_parser"]


def build_parser():
    """Return the argument parser of the ``neurofm`` command."""
    parser = argparse.ArgumentParser(
        prog="neurofm",
        description="Brain recordings -> one xarray layout -> training stores, models and "
                    "analyses.",
    )
    parser.add_argument("--version", action="version", version=f"neurofm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="summarise a recording file or a store")
    p.add_argument("path", help="recording file, directory format, or store directory/URL")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="read recordings (or a BIDS root) into a store")
    p.add_argument("inputs", nargs="+", help="files, directory formats, or one BIDS root")
    p.add_argument("--out", required=True, help="store directory or fsspec URL")
    p.add_argument("--montage", default=None, help="EEG montage to apply (e.g. standard_1020)")
    p.add_argument("--atlas", default=None, help="fMRI atlas (file or offline atlas name)")
    p.add_argument("--modality", default=None, help="force the modality of ephys files")
    p.add_argument("--chunk-seconds", type=float, default=None, help="chunk length in s")
    p.add_argument("--compressor", default=None, choices=[None, "zstd", "blosc"],
                   help="compress the signal (default: none, fastest random windows)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--strict", action="store_true", help="stop at the first failing file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("preprocess", help="run a preprocessing pipeline (Snakemake)")
    p.add_argument("config", help="pipeline config YAML (see pipelines/config/)")
    p.add_argument("--cores", type=int, default=1, help="cores for Snakemake (default 1)")
    p.add_argument("--dry-run", action="store_true", help="show what would run")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                   help="extra arguments passed to snakemake after '--'")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("sample-data", help="build the bundled sample BIDS dataset (offline)")
    p.add_argument("--out", default="datasets/sample", help="target directory")
    p.add_argument("--overwrite", action="store_true", help="rebuild from scratch")
    p.set_defaults(func=_cmd_sample_data)
    return parser


def main(argv=None):
    """Entry point of the ``neurofm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except NeurofmError as err:
        if args.debug:
            raise
        print(f"neurofm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("neurofm: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
def _is_store(path):
    from .store import MANIFEST_NAME, _is_url

    if _is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        return fs.exists(f"{root.rstrip('/')}/{MANIFEST_NAME}")
    return (Path(path) / MANIFEST_NAME).exists()


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


def _format_recording(s):
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


def _format_store(store):
    from .store import describe

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


def _cmd_info(args):
    from .store import describe, open_store

    if _is_store(args.path):
        store = open_store(args.path)
        if args.json:
            out = describe(store)
            out["recordings"] = store.manifest.astype(object).where(
                store.manifest.notna(), None).to_dict(orient="records")
            print(json.dumps(out, indent=2, default=str))
        else:
            print(_format_store(store))
        return 0
    from .io import read

    result = read(args.path)
    recs = result if isinstance(result, list) else [result]
    summaries = [summarize_recording(ds) for ds in recs]
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2,
                         default=str))
    else:
        print("\n\n".join(_format_recording(s) for s in summaries))
    return 0


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------
def _cmd_convert(args):
    from ._logging import logger, progress
    from .io import read
    from .io.bids import convert_bids, is_bids_root
    from .store import open_store

    verbose = False if args.quiet else None
    if len(args.inputs) == 1 and is_bids_root(args.inputs[0]):
        kw = {}
        if args.montage:
            kw["montage"] = args.montage
        store = convert_bids(args.inputs[0], args.out, atlas=args.atlas, strict=args.strict,
                             overwrite=args.overwrite, verbose=verbose, **kw)
        print(_format_store(store))
        failures = getattr(store, "failures", [])
        return 1 if failures else 0

    if _is_store(args.out) and not args.overwrite:
        store = open_store(args.out)
    else:
        from .store import write_store

        store = write_store([], args.out, overwrite=args.overwrite)
    kw = {}
    if args.montage:
        kw["montage"] = args.montage
    if args.modality:
        kw["modality"] = args.modality
    if args.atlas:
        kw["atlas"] = args.atlas
    failures = []
    for path in progress(args.inputs, verbose=verbose, desc="converting", unit="file"):
        try:
            result = read(path, **kw)
            for ds in (result if isinstance(result, list) else [result]):
                store.add(ds, chunk_seconds=args.chunk_seconds, compressor=args.compressor)
        except NeurofmError as err:
            if args.strict:
                raise
            failures.append((path, str(err)))
            logger.warning("skipped %s: %s", path, err)
    print(_format_store(store))
    if failures:
        print(f"\n{len(failures)} file(s) failed and were skipped:", file=sys.stderr)
        for path, msg in failures:
            print(f"  {msg}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# pipelines and sample data (implemented in neurofm.pipeline / neurofm.sample_data)
# --------------------------------------------------------------------------------------------
def _cmd_preprocess(args):
    from .pipeline import run_pipeline

    extra = [a for a in args.snakemake_args if a != "--"]
    return run_pipeline(args.config, cores=args.cores, dry_run=args.dry_run,
                        extra_args=tuple(extra))


def _cmd_sample_data(args):
    from .sample_data import make_sample_data

    out = make_sample_data(args.out, overwrite=args.overwrite)
    print(f"sample BIDS dataset ready in {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
