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

from ..errors import NeurofmError

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
    try:
        NeurofmCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                   subclass_mode_data=True, args=args, save_config_kwargs={"overwrite": True},
                   parser_kwargs={"prog": "neurofm", "default_env": False},
                   auto_configure_optimizers=False)
    except ValueError as err:
        # jsonargparse wraps errors of the classes it builds: surface neurofm's own message
        cause = _neurofm_cause(err)
        if cause is None:
            raise
        raise cause from err
    return 0


def _neurofm_cause(err):
    """The first NeurofmError in an exception's cause / context chain, or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, NeurofmError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
