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

__all__ = ["build_parser", "main"]


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

    p = sub.add_parser("info", help="summarise a recording file, a store or a BIDS dataset")
    p.add_argument("path", help="recording file, directory format, store directory/URL, or "
                                "BIDS root")
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
def _records(df):
    """DataFrame rows as JSON-ready dicts (missing values -> None)."""
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def _cmd_info(args):
    from .io.bids import is_bids_root
    from .store import is_store

    if is_store(args.path):
        return _info_store(args)
    if is_bids_root(args.path):
        return _info_bids(args)
    return _info_recording(args)


def _info_store(args):
    from .store import describe, open_store
    from .store.summary import format_store

    store = open_store(args.path)
    if args.json:
        print(json.dumps({**describe(store), "recordings": _records(store.manifest)},
                         indent=2, default=str))
    else:
        print(format_store(store))
    return 0


def _info_bids(args):
    from .io.bids import find_recordings

    table = find_recordings(args.path, derivatives=True)
    if args.json:
        print(json.dumps(_records(table), indent=2, default=str))
        return 0
    cols = [c for c in ("subject", "session", "task", "run", "datatype", "derivatives")
            if c in table]
    n_subjects = table["subject"].nunique() if len(table) else 0
    print(f"BIDS dataset {args.path}: {len(table)} recordings, {n_subjects} subjects\n")
    print(table[cols].to_string(index=False) if len(table) else "(no recordings)")
    return 0


def _info_recording(args):
    from .io import find_reader, read
    from .store.summary import format_recording, summarize_recording

    path = Path(args.path)
    # a summary needs no samples: electrophysiology files are opened without loading them
    lazy = path.exists() and find_reader(path).name == "ephys"
    result = read(path, preload=False) if lazy else read(path)
    summaries = [summarize_recording(ds)
                 for ds in (result if isinstance(result, list) else [result])]
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2,
                         default=str))
    else:
        print("\n\n".join(format_recording(s) for s in summaries))
    return 0


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------
def _cmd_convert(args):
    from .io.bids import is_bids_root
    from .store.convert import convert_bids, convert_files
    from .store.summary import format_store

    verbose = False if args.quiet else None
    kw = {k: v for k, v in (("montage", args.montage), ("modality", args.modality))
          if v is not None}
    if len(args.inputs) == 1 and is_bids_root(args.inputs[0]):
        kw.pop("modality", None)  # the BIDS datatype folder decides
        store = convert_bids(args.inputs[0], args.out, atlas=args.atlas, strict=args.strict,
                             overwrite=args.overwrite, chunk_seconds=args.chunk_seconds,
                             compressor=args.compressor, verbose=verbose, **kw)
    else:
        if args.atlas:
            kw["atlas"] = args.atlas
        store = convert_files(args.inputs, args.out, strict=args.strict,
                              overwrite=args.overwrite, chunk_seconds=args.chunk_seconds,
                              compressor=args.compressor, verbose=verbose, **kw)
    print(format_store(store))
    if store.failures:
        print(f"\n{len(store.failures)} file(s) failed and were skipped:", file=sys.stderr)
        for failure in store.failures:
            print(f"  {failure['error']}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# pipelines and sample data (implemented in neurofm.pipelines / neurofm.datasets)
# --------------------------------------------------------------------------------------------
def _cmd_preprocess(args):
    from .pipelines import run_pipeline

    extra = [a for a in args.snakemake_args if a != "--"]
    return run_pipeline(args.config, cores=args.cores, dry_run=args.dry_run,
                        extra_args=tuple(extra))


def _cmd_sample_data(args):
    from .datasets import make_sample_data

    out = make_sample_data(args.out, overwrite=args.overwrite)
    print(f"sample BIDS dataset ready in {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
