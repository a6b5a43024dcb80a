"""The main job: ``neurofm demo`` (``make demo``, ``python -m neurofm.demo``).

Runs neurofm end to end on the bundled sample dataset and writes one self-contained page,
``DIR/report.html``:

1. the sample dataset (:func:`neurofm.datasets.make_sample_data`);
2. the Snakemake pipelines for EEG, MEG, fMRI and calcium (``neurofm preprocess``) into
   stores with their QC reports;
3. Brain-JEPA and BrainMAE pretraining on the fMRI store through the Lightning CLI with
   ``configs/demo/*.yaml`` (``neurofm fit -c ...``), checkpoints at several epochs, then
   ``neurofm probe`` against the baselines on the planted group labels;
4. analyses: subject RDMs with RSA and tRSA against the planted groups, an encoding model
   to held-out parcels with noise-normalized scores, DSE / DSMI over the checkpoints, an NTF
   dynamic connectome of the calcium recordings;
5. the report, each section with a reading computed from its numbers and the command that
   reproduces it.

Every step keeps a small JSON state (``DIR/state/<step>.json``) keyed by its inputs, so a
rerun reuses finished steps and an interrupted run resumes. ``--quick`` runs the same
sections at smaller sizes. Modules: :mod:`~neurofm.demo.run` (:func:`run_demo`),
:mod:`~neurofm.demo.steps`, :mod:`~neurofm.demo.report`, :mod:`~neurofm.demo.settings`.
"""

from __future__ import annotations

import sys

from .run import run_demo

__all__ = ["add_arguments", "main", "run_demo"]


def add_arguments(parser):
    """The options of ``neurofm demo`` / ``python -m neurofm.demo``."""
    parser.add_argument("--out", default="demo_out", help="output directory (default "
                                                          "demo_out); reused by later runs")
    parser.add_argument("--quick", action="store_true",
                        help="the same sections at smaller sizes (a few minutes)")
    parser.add_argument("--cores", type=int, default=2,
                        help="cores for the Snakemake pipelines (default 2)")
    parser.add_argument("--force", action="store_true",
                        help="recompute every step instead of reusing finished ones")
    return parser


def main(argv=None):
    """``python -m neurofm.demo [--out DIR] [--quick]``; returns the exit status."""
    from ..cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else list(argv))])
