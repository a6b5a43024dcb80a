"""Training of learned tokenizers with Lightning: the module, the annealing callback, a runner.

The network is injected: anything with ``training_loss(batch) -> (loss, logs)`` trains here
(:class:`~neurofm.tokenizers.meggpt.MEGGPTTokenizerNet`, the VQ tokenizer's network).
:meth:`neurofm.tokenizers.MEGGPTTokenizer.fit` calls :func:`train_tokenizer_net`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from .._checks import check_positive, check_positive_int
from ..errors import DataError
from ..tokenizers.meggpt import annealed_temperature

__all__ = ["TemperatureAnnealing", "TokenizerModule", "ValidatedTokenizerModule",
           "train_tokenizer_net"]


class TokenizerModule(pl.LightningModule):
    """Adam on the injected network's ``training_loss``.

    Parameters
    ----------
    net : torch.nn.Module
        Has ``training_loss(x) -> (loss, logs)`` where ``logs`` maps names to floats.
    lr : float
        Adam learning rate.
    eps : float
        Adam epsilon (1e-7 as in the reference tokenizer).
    """

    def __init__(self, net, lr=1e-3, eps=1e-7):
        super().__init__()
        self.net = net
        self.lr = lr
        self.eps = eps

    def training_step(self, batch, batch_idx):
        (x,) = batch  # (S, ...)
        loss, logs = self.net.training_loss(x)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
        for name, value in logs.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True,
                     batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, eps=self.eps)


class ValidatedTokenizerModule(TokenizerModule):
    """:class:`TokenizerModule` that also logs ``val_loss`` (and ``val_<name>`` for the
    network's logs) on validation windows."""

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        loss, logs = self.net.training_loss(x)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
        for name, value in logs.items():
            self.log(f"val_{name}", value, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss


class TemperatureAnnealing(pl.Callback):
    """Set the network's soft/hard mixing temperature at the start of each epoch.

    The value is :func:`neurofm.tokenizers.annealed_temperature` of the epoch (a pure
    function, so resuming from a checkpoint gives the same schedule).

    Parameters
    ----------
    n_stages : int
        Distinct temperatures, linearly spaced from ``start`` to ``end``.
    n_epochs : int
        Epochs over which to anneal (later epochs keep ``end``).
    start, end : float
        First and last temperature (1.0 and 1e-3 in the release; 0 stops the gradient to
        the encoder).
    """

    def __init__(self, n_stages, n_epochs, start=1.0, end=1e-3):
        super().__init__()
        self.n_stages = check_positive_int("n_stages", n_stages)
        self.n_epochs = check_positive_int("n_epochs", n_epochs)
        self.start = float(start)
        self.end = float(end)

    def temperature(self, epoch):
        return annealed_temperature(epoch, self.n_epochs, self.n_stages, self.start, self.end)

    def on_train_epoch_start(self, trainer, pl_module):
        pl_module.net.temperature.fill_(self.temperature(trainer.current_epoch))


class _History(pl.Callback):
    """Collect the epoch-level metrics Lightning computed."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": int(trainer.current_epoch)}
        for name, value in trainer.callback_metrics.items():
            row[name] = float(value)
        self.rows.append(row)


@contextmanager
def _quiet_lightning_info(quiet):
    """Hide Lightning's start-up INFO lines (accelerator, tips) unless ``verbose``.

    Only that logger's INFO records are held back, for the duration of the fit; its
    warnings still show.
    """
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = log.level
    if quiet and log.getEffectiveLevel() < logging.WARNING:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(before)


def train_tokenizer_net(net, train, val=None, *, max_epochs=20, batch_size=64, lr=1e-3,
                        callbacks=(), seed=0, accelerator="cpu", devices=1, verbose=False,
                        num_workers=0):
    """Train a tokenizer network on in-memory windows with a Lightning Trainer.

    Parameters
    ----------
    net : torch.nn.Module
        With ``training_loss(x) -> (loss, logs)``; trained in place.
    train : Tensor of shape (n_windows, ...)
        Training windows (shuffled each epoch with a generator seeded by ``seed``).
    val : Tensor of shape (n_val, ...), optional
        Validation windows (loss logged as ``val_loss``).
    max_epochs, batch_size : int
    lr : float
    callbacks : sequence of lightning Callback
        E.g. :class:`TemperatureAnnealing`.
    seed : int
    accelerator, devices
        Passed to ``lightning.pytorch.Trainer``.
    verbose : bool
        Progress bar and model summary.
    num_workers : int
        DataLoader workers.

    Returns
    -------
    history : list of dict
        One row per epoch: ``epoch``, ``train_loss`` and the other logged metrics.
    """
    max_epochs = check_positive_int("max_epochs", max_epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    check_positive("lr", lr)
    if not isinstance(train, torch.Tensor) or train.ndim < 2 or train.shape[0] == 0:
        raise DataError(f"train must be a non-empty tensor of windows (n_windows, ...); got "
                        f"{getattr(train, 'shape', type(train).__name__)}")
    gen = torch.Generator().manual_seed(int(seed))
    train_dl = DataLoader(TensorDataset(train), batch_size=batch_size, shuffle=True,
                          generator=gen, num_workers=num_workers)
    val_dl = None
    if val is not None:
        val_dl = DataLoader(TensorDataset(val), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers)
    history = _History()
    module = (TokenizerModule if val is None else ValidatedTokenizerModule)(net, lr=lr)
    with _quiet_lightning_info(not verbose):
        trainer = pl.Trainer(
            max_epochs=max_epochs, accelerator=accelerator, devices=devices, logger=False,
            enable_checkpointing=False, enable_progress_bar=bool(verbose),
            enable_model_summary=bool(verbose), callbacks=[*callbacks, history],
            num_sanity_val_steps=0, deterministic=False)
        trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl)
    net.eval()
    return history.rows
