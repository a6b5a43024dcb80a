"""The ``neurofm`` command.

Subcommands::

    neurofm --version
    neurofm info PATH                      summary of a recording or a store
    neurofm convert INPUT... --out STORE   files (or a BIDS root) -> store
    neurofm preprocess CONFIG              run a Snakemake pipeline (pipelines/)
    neurofm sample-data [--out DIR]        build the bundled sample BIDS dataset
    neurofm verify STORE                   check a store's chunks and manifest (exit 1: damaged)
    neurofm probe STORE --labels T --label-column C --encoder CKPT   encoders vs baselines
    neurofm probe -c meggpt.yaml [--ckpt_path CKPT] --events D=L ...  MEG-GPT decoding
    neurofm demo [--out DIR] [--quick]     end to end on the sample data -> DIR/report.html

Every :class:`~neurofm.errors.NeurofmError` is printed as one line (``neurofm: error: ...``)
with exit status 2; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
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
    for name, what in (("fit", "train a model"), ("validate", "validate a checkpoint"),
                       ("test", "test a checkpoint"), ("predict", "predict with a checkpoint")):
        # handled by the Lightning CLI before argparse (see main); listed for --help
        sub.add_parser(name, add_help=False,
                       help=f"{what} (Lightning CLI: neurofm {name} -c configs/brainjepa.yaml;"
                            f" neurofm {name} --help)")

    p = sub.add_parser("info", help="summarise a recording file, a store or a BIDS dataset")
    p.add_argument("path", help="recording file, directory format, store directory/URL, or "
                                "BIDS root")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "convert", help="read recordings (or a BIDS root) into a store",
        description="Read recording files, or every recording of one BIDS root, into a "
                    "training store. Sources already in the store with the same content are "
                    "skipped, changed ones are converted again. Exit status: 0 when every "
                    "recording is in the store, 1 when some failed or were skipped (e.g. BOLD "
                    "runs without --atlas), 2 on a usage error (e.g. an unknown option).")
    p.add_argument("inputs", nargs="+", help="files, directory formats, or one BIDS root")
    p.add_argument("--out", required=True, help="store directory or fsspec URL")
    p.add_argument("--montage", default=None, help="EEG montage to apply (e.g. standard_1020)")
    p.add_argument("--atlas", default=None,
                   help="fMRI atlas (labels/maps image, coordinate table or offline atlas "
                        "name such as power_2011; a path with {subject} names each subject's "
                        "own atlas); BOLD runs are not converted without it")
    p.add_argument("--modality", default=None, help="force the modality of ephys files")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other reader option (repeatable), e.g. --option infer_types=true "
                        "--option 'strategy=[\"wm_csf\", \"global_signal\"]'; VALUE is read "
                        "as JSON when it parses, else as a string; checked against the "
                        "readers' signatures")
    p.add_argument("--datatype", nargs="+", default=None, metavar="TYPE",
                   choices=["eeg", "meg", "ieeg", "func", "ophys"],
                   help="BIDS root only: convert only these datatypes (eeg meg ieeg func "
                        "ophys)")
    p.add_argument("--chunk-seconds", type=float, default=None, help="chunk length in s")
    p.add_argument("--compressor", default="none", type=str.lower,
                   choices=["none", "zstd", "blosc"],
                   help="compress the signal: none (default, raw float32, fastest random "
                        "windows), zstd or blosc (smaller, slower to read); case-insensitive")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing store (rebuild it from these inputs)")
    p.add_argument("--strict", action="store_true", help="stop at the first failing file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "preprocess", help="run a preprocessing pipeline (Snakemake)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the Snakemake preprocessing workflow that ships with neurofm on the "
                    "recordings a config names\n(a BIDS root or a file list): one job per "
                    "recording and step, written into a training store\nunder the config's "
                    "out_dir (store/, qc/, logs/).",
        epilog="Failed jobs do not stop the others (--keep-going): the store then lists the "
               "recordings that\nsucceeded, out_dir/failures.tsv names the failed ones, and "
               "the exit status is non-zero.\nA killed run resumes by running the same "
               "command again. Example configs: pipelines/config/.\n\n"
               "  neurofm preprocess study.yaml --cores 8\n"
               "  neurofm preprocess study.yaml -- --executor slurm --jobs 200")
    p.add_argument("config", help="pipeline config YAML (see pipelines/config/*_example.yaml)")
    p.add_argument("--cores", type=int, default=1, help="cores for Snakemake (default 1)")
    p.add_argument("--dry-run", action="store_true", help="show what would run, write nothing")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                   help="extra arguments passed to snakemake after '--'")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("sample-data", help="build the bundled sample BIDS dataset (offline)")
    p.add_argument("--out", default="datasets/sample", help="target directory")
    p.add_argument("--overwrite", action="store_true", help="rebuild from scratch")
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser("verify", help="check every chunk (checksums) and the manifest of a "
                                      "store; exit 1 when damaged")
    p.add_argument("store", help="store directory or fsspec URL")
    p.add_argument("--quick", action="store_true",
                   help="check presence and metadata only, not the chunk checksums")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_verify)

    from .evals.cli import add_probe_parser  # neurofm probe (implemented in neurofm.evals)

    add_probe_parser(sub)

    from .demo import add_arguments as add_demo_arguments  # neurofm demo (neurofm.demo)

    p = sub.add_parser("demo", help="run neurofm end to end on the bundled sample data and "
                                    "write DIR/report.html",
                       description="Sample data -> Snakemake pipelines -> Brain-JEPA / "
                                   "BrainMAE / MEG-GPT pretraining -> probe -> RSA, encoding, "
                                   "DSE, connectome, generation -> one self-contained "
                                   "report.html. Finished steps are reused; an interrupted "
                                   "run resumes.")
    add_demo_arguments(p)
    p.set_defaults(func=_cmd_demo)
    return parser


#: Subcommands handed to the Lightning CLI (neurofm.training.cli).
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv=None):
    """Entry point of the ``neurofm`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:  # fit / validate / test / predict
        from .training.cli import run_lightning_cli

        try:
            return run_lightning_cli(argv)
        except NeurofmError as err:
            if "--debug" in argv:
                raise
            print(f"neurofm: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe (`neurofm info STORE | head`) surfaces here
        return status
    except BrokenPipeError:
        return _broken_pipe()
    except NeurofmError as err:
        if args.debug:
            raise
        print(f"neurofm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("neurofm: interrupted", file=sys.stderr)
        return 130


def _broken_pipe():
    """The reader of stdout went away (``| head``): stop quietly, like other Unix tools.

    The recipe of the Python documentation (signal module, "Note on SIGPIPE"): point stdout at
    devnull so that the interpreter's final flush does not raise again, and exit with 1.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass
    return 1


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
    from .store.convert import bids_recordings

    # what `neurofm convert` knows: BIDS datatypes, fMRIPrep outputs and suite2p folders
    table = bids_recordings(args.path)
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
    from .io import find_reader, read_all
    from .store.summary import format_recording, summarize_recording

    path = Path(args.path)
    # a summary needs no samples: electrophysiology files are opened without loading them
    lazy = path.exists() and find_reader(path).name == "ephys"
    result = read_all(path, preload=False) if lazy else read_all(path)
    summaries = [summarize_recording(ds) for ds in result]
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
    """Exit 0 when every recording found is in the store, 1 when some failed or were left
    out (BOLD runs without --atlas), 2 on usage errors (raised as NeurofmError)."""
    from .io.bids import is_bids_root
    from .store.convert import ConversionError, convert_bids, convert_files
    from .store.summary import format_store

    verbose = False if args.quiet else None
    kw = _reader_options(args.option)
    kw.update({k: v for k, v in (("montage", args.montage), ("modality", args.modality))
               if v is not None})
    layout = {"chunk_seconds": args.chunk_seconds,
              "compressor": None if args.compressor == "none" else args.compressor}
    try:
        if len(args.inputs) == 1 and is_bids_root(args.inputs[0]):
            if args.modality:
                raise NeurofmError("--modality does not apply to a BIDS root: the datatype "
                                   "folder (eeg, meg, ieeg) decides; use --datatype to select")
            store = convert_bids(args.inputs[0], args.out, datatype=args.datatype,
                                 atlas=args.atlas, strict=args.strict,
                                 overwrite=args.overwrite, verbose=verbose, **layout, **kw)
        else:
            if args.datatype:
                raise NeurofmError("--datatype applies to a BIDS root only; got "
                                   f"{len(args.inputs)} input(s) that are not one BIDS root")
            if args.atlas:
                kw["atlas"] = args.atlas
            store = convert_files(args.inputs, args.out, strict=args.strict,
                                  overwrite=args.overwrite, verbose=verbose, **layout, **kw)
    except ConversionError as err:  # nothing converted: every failure is in the message
        print(f"neurofm: error: {err}", file=sys.stderr)
        return 1
    print(format_store(store))
    sys.stdout.flush()
    return _convert_report(store)


def _reader_options(items):
    """``["key=value", ...]`` -> dict; values parsed as JSON when they parse."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise NeurofmError(f"--option must look like KEY=VALUE with KEY a reader "
                               f"argument name; got {item!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _convert_report(store):
    """What was done, on stderr; the exit status of ``neurofm convert``."""
    def say(line=""):
        print(line, file=sys.stderr)

    done = [f"{len(store.added)} added"]
    if store.replaced:
        done.append(f"{len(store.replaced)} replaced (source changed)")
    if store.unchanged:
        done.append(f"{len(store.unchanged)} already in the store (unchanged, not converted "
                    "again)")
    say(f"\n{'; '.join(done)}")
    status = 0
    skipped = getattr(store, "skipped", [])
    if skipped:
        say(f"\n{len(skipped)} BOLD run(s) NOT converted: no --atlas given (pass --atlas, "
            "or --datatype to convert only the other datatypes):")
        for path in skipped:
            say(f"  {path}")
        status = 1
    if store.failures:
        say(f"\n{len(store.failures)} file(s) failed and were skipped:")
        for failure in store.failures:
            say(f"  {failure['error']}")
        status = 1
    return status


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


def _cmd_demo(args):
    from .demo import run_demo

    path = run_demo(args.out, quick=args.quick, cores=args.cores, force=args.force)
    print(f"report: {path}")
    return 0


# --------------------------------------------------------------------------------------------
# verify (implemented in neurofm.store.verify)
# --------------------------------------------------------------------------------------------
def _cmd_verify(args):
    from .store.verify import verify_path

    report = verify_path(args.store, check_data=not args.quick)
    if args.json:
        print(json.dumps({"path": report.path, "ok": report.ok, "problems": report.problems,
                          "notes": report.notes, "n_recordings": report.n_recordings,
                          "n_chunks": report.n_chunks}, indent=2))
    else:
        print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
