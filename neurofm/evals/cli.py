"""``neurofm probe``: evaluate pretrained encoders against baselines from the command line.

::

    neurofm probe STORE --labels participants.tsv --label-column group \\
        --encoder brainjepa=runs/jepa/last.ckpt --encoder brainmae=runs/mae/last.ckpt \\
        --window-samples 160 --seeds 0 1 2 --modes linear finetune --out probe_out

writes ``results.nc``, ``table.md``, ``report.html`` and ``scores.png`` under ``--out`` and
prints the table with its verdicts.

With a MEG-GPT checkpoint the MEG-GPT decoding protocol runs instead
(:func:`neurofm.evals.decoding.decode`: event-locked epochs, cross-session and cross-subject,
zero-shot and fine-tuned features against the raw epoch and the baselines)::

    neurofm probe STORE --encoder meggpt=runs/meggpt/last.ckpt \
        --events famous=0 unfamiliar=1 scrambled=2 button=3 --epoch-samples 80

writes ``decoding.csv`` (every fold) and ``decoding.md`` (fold means, chance) under ``--out``.
The same protocol from the config(s) of ``neurofm fit`` (composed as ``fit`` composes them:
the store, tokenizer and model settings), the checkpoint giving the weights; without
``--ckpt_path`` the config's randomly initialized model (the ``zero-shot (random init)``
row)::

    neurofm probe -c configs/meggpt.yaml -c configs/data/meg_example.yaml \
        --ckpt_path runs/meggpt/checkpoints/last.ckpt --events famous=0 unfamiliar=1 ...
"""

from __future__ import annotations

import os

from .._logging import logger
from ..errors import DataError, FormatError, NeurofmError

__all__ = ["add_probe_parser", "read_labels", "run_probe"]


def add_probe_parser(sub):
    """Add the ``probe`` subcommand to an argparse subparsers object."""
    p = sub.add_parser(
        "probe", help="evaluate encoders (linear probe / fine-tuning) against baselines",
        description="Linear probe and fine-tuning of pretrained encoders, a randomly "
                    "initialized encoder of the same architecture, and classical baselines "
                    "(fMRI: functional connectivity; EEG/MEG: covariance tangent space, log "
                    "band power), on the same subject-disjoint splits over several seeds. "
                    "With --events and MEG-GPT (a checkpoint as --encoder, or the config(s) "
                    "of neurofm fit as -c with an optional --ckpt_path): the MEG-GPT decoding "
                    "protocol on event-locked epochs (cross-session and cross-subject).")
    p.add_argument("store", nargs="?", default=None,
                   help="store directory or URL (with -c: replaces the config's data.store)")
    p.add_argument("-c", "--config", action="append", default=[], metavar="CONFIG",
                   help="neurofm fit YAML config of MEG-GPT (repeatable, composed as by "
                        "neurofm fit, e.g. -c configs/meggpt.yaml -c "
                        "configs/data/meg_example.yaml): it gives the store, the tokenizer "
                        "and the model; needs --events")
    p.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", default=None,
                   metavar="CKPT",
                   help="with -c: the neurofm fit checkpoint giving the weights (strict "
                        "load); without it the config's random initialization is evaluated")
    p.add_argument("--labels", default=None,
                   help="TSV/CSV table with one row per subject or recording (required "
                        "unless --events)")
    p.add_argument("--label-column", default=None, help="column holding the target")
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
                   help="skip the randomly initialized encoders (with -c and --ckpt_path: "
                        "the zero-shot (random init) row)")
    p.add_argument("--window-samples", type=int, default=None,
                   help="window length in samples (default: the encoder's n_frames)")
    p.add_argument("--window-s", type=float, default=None, help="window length in seconds")
    p.add_argument("--stride-s", type=float, default=None, help="window step in seconds")
    p.add_argument("--linear-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--out", default="probe_out", help="output folder")
    p.add_argument("--events", nargs="+", default=None, metavar="DESCRIPTION=LABEL",
                   help="event-locked epochs labelled by event (MEG-GPT decoding protocol)")
    p.add_argument("--tmin", type=float, default=0.0, help="epoch start after the event (s)")
    p.add_argument("--epoch-samples", type=int, default=80,
                   help="epoch length in samples (MEG-GPT decoding; 80 in the paper)")
    p.add_argument("--finetune-steps", type=int, default=100,
                   help="self-supervised fine-tuning steps per fold (MEG-GPT decoding; 0: "
                        "zero-shot only; never for the random init)")
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
    present = table[label_column].notna().to_numpy()
    if not present.any():
        raise DataError(f"--labels {path}: column {label_column!r} has no values")
    if not present.all():  # BIDS n/a: participants outside this analysis (e.g. other cohorts)
        logger.info("--labels %s: %d row(s) without a %r value ignored", path,
                    int((~present).sum()), label_column)
    ids, labels = ids[present], table.loc[present, label_column]
    values = pd.to_numeric(labels, errors="coerce")
    column = labels if values.isna().any() else values
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
    if getattr(args, "config", None):
        return _run_meggpt_config(args, encoders, baselines)
    if getattr(args, "ckpt_path", None):
        raise NeurofmError("--ckpt_path goes with -c CONFIG (the neurofm fit config of the "
                           "checkpoint); without a config give --encoder NAME=CHECKPOINT")
    if args.store is None:
        raise NeurofmError("STORE is required (or -c CONFIG, whose data.init_args.store "
                           "gives it)")
    from .decoding import is_meggpt_checkpoint

    if encoders and any(is_meggpt_checkpoint(p) for p in encoders.values()):
        return _run_meggpt_decoding(args, encoders, baselines)
    if args.events:
        raise NeurofmError("--events (event-locked decoding) needs MEG-GPT checkpoints as "
                           "--encoder or a MEG-GPT config as -c; other encoders are probed "
                           "with --labels")
    if args.labels is None or args.label_column is None:
        raise NeurofmError("--labels and --label-column are required (or --events with a "
                           "MEG-GPT checkpoint)")
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


def _parse_events(items):
    out = {}
    for item in items or ():
        desc, sep, label = item.rpartition("=")
        try:
            out[desc] = int(label)
        except ValueError:
            sep = ""
        if not sep or not desc:
            raise NeurofmError(f"--events: expected DESCRIPTION=INTEGER_LABEL; got {item!r}")
    if not out:
        raise NeurofmError("--events is required with MEG-GPT checkpoints or -c configs (e.g. "
                           "--events famous=0 unfamiliar=1 scrambled=2 button=3)")
    return out


def _run_meggpt_decoding(args, encoders, baselines):
    """The MEG-GPT decoding protocol for every MEG-GPT checkpoint given."""
    import pandas as pd

    from .decoding import decode, is_meggpt_checkpoint, load_meggpt

    others = [n for n, p in encoders.items() if not is_meggpt_checkpoint(p)]
    if others:
        raise NeurofmError(f"--encoder {others}: not MEG-GPT checkpoints; the MEG-GPT "
                           "decoding protocol runs MEG-GPT checkpoints only")
    events = _parse_events(args.events)
    tables = []
    for name, path in encoders.items():
        model, tokenizer = load_meggpt(path)
        res = decode(model, tokenizer, args.store, events, n_samples=args.epoch_samples,
                     tmin=args.tmin, baselines=baselines, finetune=args.finetune_steps > 0,
                     finetune_steps=max(1, args.finetune_steps), seed=args.seeds[0],
                     device=args.device)
        res.insert(0, "model", name)
        tables.append(res)
    return _write_decoding(pd.concat(tables, ignore_index=True), args.out)


def _run_meggpt_config(args, encoders, baselines):
    """The MEG-GPT decoding protocol on the model of ``neurofm fit`` config(s)."""
    from .decoding import RANDOM_INIT, decode, meggpt_from_config

    if encoders:
        raise NeurofmError(f"--encoder {sorted(encoders)} and -c {args.config}: give either "
                           "MEG-GPT checkpoints as --encoder or a neurofm fit config (its "
                           "checkpoint as --ckpt_path), not both")
    if args.labels is not None or args.label_column is not None:
        raise NeurofmError("--labels / --label-column: with -c the MEG-GPT decoding protocol "
                           "runs, labelled by --events")
    if args.ckpt_path is None and args.no_random_init:
        raise NeurofmError("-c without --ckpt_path evaluates the config's random "
                           "initialization; --no-random-init leaves nothing to evaluate")
    events = _parse_events(args.events)
    setup = meggpt_from_config(args.config, args.ckpt_path, store=args.store)
    common = {"n_samples": args.epoch_samples, "tmin": args.tmin, "channels": setup.channels,
              "sfreq": setup.sfreq, "cache_dir": setup.cache_dir, "seed": args.seeds[0],
              "device": args.device}
    if setup.model is not None:
        res = decode(setup.model, setup.tokenizer, setup.store, events, baselines=baselines,
                     finetune=args.finetune_steps > 0,
                     finetune_steps=max(1, args.finetune_steps),
                     random_init=None if args.no_random_init else setup.random_init, **common)
    else:  # the zero-shot features of the random initialization (never fine-tuned)
        res = decode(setup.random_init, setup.tokenizer, setup.store, events,
                     baselines=baselines, finetune=False, **common)
        res["features"] = res["features"].replace({"zero-shot": RANDOM_INIT})
    name = os.path.splitext(os.path.basename(setup.configs[0]))[0] or "meggpt"
    res.insert(0, "model", name)
    return _write_decoding(res, args.out)


def _write_decoding(res, out):
    """``decoding.csv`` and ``decoding.md`` under ``out``; the tables printed."""
    from .decoding import summary_table

    os.makedirs(out, exist_ok=True)
    csv = os.path.join(out, "decoding.csv")
    res.to_csv(csv, index=False)
    lines = []
    for name, part in res.groupby("model", sort=False):
        lines += [f"## {name}", "", summary_table(part).to_markdown(floatfmt=".3f"), ""]
    md = os.path.join(out, "decoding.md")
    with open(md, "w") as fid:
        fid.write("\n".join(lines))
    print("\n".join(lines))
    print(f"written: {csv}, {md}")
    return 0
