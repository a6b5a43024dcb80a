"""``neurofm probe``: evaluate pretrained encoders against baselines from the command line.

::

    neurofm probe STORE --labels participants.tsv --label-column group \\
        --encoder brainjepa=runs/jepa/last.ckpt --encoder brainmae=runs/mae/last.ckpt \\
        --window-samples 160 --seeds 0 1 2 --modes linear finetune --out probe_out

writes ``results.nc``, ``table.md``, ``report.html`` and ``scores.png`` under ``--out`` and
prints the table with its verdicts.
"""

from __future__ import annotations

import os

from ..errors import DataError, FormatError, NeurofmError

__all__ = ["add_probe_parser", "read_labels", "run_probe"]


def add_probe_parser(sub):
    """Add the ``probe`` subcommand to an argparse subparsers object."""
    p = sub.add_parser(
        "probe", help="evaluate encoders (linear probe / fine-tuning) against baselines",
        description="Linear probe and fine-tuning of pretrained encoders, a randomly "
                    "initialized encoder of the same architecture, and classical baselines "
                    "(fMRI: functional connectivity; EEG/MEG: covariance tangent space, log "
                    "band power), on the same subject-disjoint splits over several seeds.")
    p.add_argument("store", help="store directory or URL")
    p.add_argument("--labels", required=True,
                   help="TSV/CSV table with one row per subject or recording")
    p.add_argument("--label-column", required=True, help="column holding the target")
    p.add_argument("--id-column", default=None,
                   help="column of subject or recording ids (default: the first of "
                        "recording, subject, participant_id)")
    p.add_argument("--encoder", action="append", default=[], metavar="[NAME=]PATH",
                   help="Lightning checkpoint or exported encoder file (repeatable)")
    p.add_argument("--task", default="auto", choices=["auto", "classification", "regression"])
    p.add_argument("--modes", nargs="+", default=["linear"], choices=["linear", "finetune"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--fractions", nargs=3, type=float, default=[0.6, 0.2, 0.2],
                   metavar=("TRAIN", "VAL", "TEST"), help="subject fractions")
    p.add_argument("--baselines", nargs="+", default=["auto"],
                   help="auto, none, or names (fc_correlation fc_tangent riemann_tangent "
                        "log_bandpower)")
    p.add_argument("--no-random-init", action="store_true",
                   help="skip the randomly initialized encoders")
    p.add_argument("--window-samples", type=int, default=None,
                   help="window length in samples (default: the encoder's n_frames)")
    p.add_argument("--window-s", type=float, default=None, help="window length in seconds")
    p.add_argument("--stride-s", type=float, default=None, help="window step in seconds")
    p.add_argument("--linear-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--out", default="probe_out", help="output folder")
    p.set_defaults(func=run_probe)
    return p


def read_labels(path, label_column, id_column=None):
    """A table of labels -> dict of id -> value.

    ``participant_id`` values lose their BIDS ``sub-`` prefix (store subjects have none).

    Raises
    ------
    FormatError
        Missing file or columns.
    """
    import pandas as pd

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"--labels {path}: file not found")
    table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    if label_column not in table:
        raise FormatError(f"--labels {path}: no column {label_column!r} (columns: "
                          f"{list(table.columns)})")
    if id_column is None:
        id_column = next((c for c in ("recording", "subject", "participant_id")
                          if c in table), None)
    if id_column is None or id_column not in table:
        raise FormatError(f"--labels {path}: no id column (expected recording, subject, "
                          f"participant_id or --id-column); columns {list(table.columns)}")
    ids = table[id_column].astype(str)
    if id_column == "participant_id":
        ids = ids.str.removeprefix("sub-")
    values = pd.to_numeric(table[label_column], errors="coerce")
    column = table[label_column] if values.isna().any() else values
    if column.isna().any():
        raise DataError(f"--labels {path}: column {label_column!r} has empty values")
    return dict(zip(ids, column.tolist()))


def _encoders(items):
    out = {}
    for k, item in enumerate(items):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = os.path.splitext(os.path.basename(item))[0] or f"encoder{k}", item
        if name in out:
            raise NeurofmError(f"--encoder: the name {name!r} is given twice; use NAME=PATH")
        out[name] = path
    return out


def run_probe(args):
    """Run :func:`neurofm.evals.probe` from parsed arguments; print the table."""
    from .evaluate import probe
    from .report import save_report, to_markdown

    baselines = args.baselines
    if baselines == ["auto"]:
        baselines = "auto"
    elif baselines == ["none"]:
        baselines = []
    encoders = _encoders(args.encoder) or None
    linear = {"epochs": args.linear_epochs} if args.linear_epochs else None
    finetune = {k: v for k, v in (("epochs", args.finetune_epochs),
                                  ("lr", args.finetune_lr)) if v is not None} or None
    res = probe(encoders, args.store, read_labels(args.labels, args.label_column,
                                                  args.id_column),
                task=args.task, modes=args.modes, seeds=args.seeds,
                fractions=tuple(args.fractions), baselines=baselines,
                random_init=not args.no_random_init, window_samples=args.window_samples,
                window_s=args.window_s, stride_s=args.stride_s, linear=linear,
                finetune=finetune, device=args.device)
    paths = save_report(res, args.out)
    print(to_markdown(res))
    print(f"written: {', '.join(paths.values())}")
    return 0
