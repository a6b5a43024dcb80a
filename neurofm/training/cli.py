"""``neurofm fit | validate | test | predict``: the Lightning CLI over neurofm's modules.

Configs are YAML files of LightningCLI (``configs/brainjepa.yaml`` plus composable pieces
under ``configs/data/`` and ``configs/trainer/``), combined with repeated ``-c`` and dotted
overrides::

    neurofm fit -c configs/brainjepa.yaml -c configs/trainer/cpu_debug.yaml \\
        --data.init_args.store=out/fmri_example/store
    neurofm fit -c configs/brainjepa.yaml --ckpt_path last      # resume
    neurofm fit -c configs/brainjepa.yaml --print_config        # the merged config
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

__all__ = ["NeurofmCLI", "run_lightning_cli"]


class NeurofmCLI(LightningCLI):
    """LightningCLI with neurofm's defaults: any LightningModule / DataModule subclass by
    ``class_path``, the config saved next to the logs (overwriting), ``neurofm`` as the
    program name."""


def run_lightning_cli(argv=None):
    """Run the Lightning CLI on ``argv`` (``["fit", "-c", "config.yaml", ...]``).

    Returns
    -------
    status : int
        0 on success; errors of the CLI's argument parsing exit through ``SystemExit``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # from the console script the arguments are sys.argv itself: let LightningCLI read them
    args = None if argv == sys.argv[1:] else argv
    NeurofmCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
               subclass_mode_data=True, args=args, save_config_kwargs={"overwrite": True},
               parser_kwargs={"prog": "neurofm", "default_env": False},
               auto_configure_optimizers=False)
    return 0
