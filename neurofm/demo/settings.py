"""Sizes of the demo: the full run and ``--quick`` (the same steps, smaller)."""

from __future__ import annotations

__all__ = ["FULL", "QUICK", "settings"]

#: The full demo (about 10 minutes on 2 CPU cores).
FULL = {
    "name": "full",
    # subjects per pipeline: None = every subject the example config selects
    "subjects": {"eeg": None, "meg": None, "fmri": None, "calcium": None},
    # runs per pipeline: None = every run
    "runs": {"eeg": None, "meg": None, "fmri": None, "calcium": None},
    "qc_max_seconds": 120.0,
    "train_epochs": {"brainjepa": 12, "brainmae": 12, "meggpt": 8},
    "meggpt_stride": 50,            # samples between MEG-GPT training windows (= context)
    "meggpt_batch": 4,              # MEG-GPT windows per step (small: more steps per minute)
    "generate_seconds": 10.0,       # MEG-GPT continuation (Welch PSD of 2 s segments: 9 of them)
    "checkpoint_every": 2,
    "probe_seeds": [0, 1, 2],
    "probe_linear_epochs": 100,
    "dse_max_n": 2000,
    "encoding_random_init": True,   # the randomly initialised MEG-GPT as an encoding control
    "ntf_rank": 4,
    "ntf_seeds": 3,
    "ntf_iter": 300,
}

#: ``--quick``: the same sections on fewer subjects, epochs and seeds (about 2 minutes).
QUICK = {
    "name": "quick",
    "subjects": {"eeg": 1, "meg": 1, "fmri": 8, "calcium": 2},
    "runs": {"eeg": None, "meg": None, "fmri": ["1"], "calcium": None},
    "qc_max_seconds": 20.0,
    "train_epochs": {"brainjepa": 4, "brainmae": 3, "meggpt": 2},
    "meggpt_stride": 25,
    "meggpt_batch": 16,             # one resting recording: few windows, fewer, larger steps
    "generate_seconds": 2.0,
    "checkpoint_every": 1,
    "probe_seeds": [0, 1],
    "probe_linear_epochs": 30,
    "dse_max_n": 500,
    "encoding_random_init": False,  # (saves its feature pass, ~4 s of CPU)
    "ntf_rank": 3,
    "ntf_seeds": 1,
    "ntf_iter": 100,
}


def settings(quick):
    """The settings dict of the full demo or of ``--quick`` (a copy)."""
    import copy

    return copy.deepcopy(QUICK if quick else FULL)
