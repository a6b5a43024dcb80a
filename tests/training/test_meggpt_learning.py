"""MEG-GPT learning is real: on tokenized oscillatory multichannel data with several sessions
the loss falls and held-out top-1 accuracy clearly beats the unigram-frequency baseline; a
single batch is overfitted."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import Callback

from neurofm.models import MEGGPT
from neurofm.schema import make_recording
from neurofm.store import write_store
from neurofm.tokenizers import QuantileTokenizer
from neurofm.training import MEGGPTModule, TokenDataModule
from neurofm.training.meggpt import unigram_accuracy

N_CH, CONTEXT, SFREQ, N_BINS = 3, 32, 250.0, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def oscillations(n_sessions=5, n_times=2000, seed=0):
    """Each session: channels oscillating at 8-14 Hz (a per-session frequency and a
    per-channel phase) with amplitude bursts, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / SFREQ
    recs = []
    for s in range(n_sessions):
        f = 8 + 1.5 * s
        env = 1 + 0.5 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6))
        x = env * np.sin(2 * np.pi * f * t + rng.uniform(0, 6, (N_CH, 1)))
        x = x + 0.1 * rng.standard_normal((N_CH, n_times))
        recs.append(make_recording(x.astype(np.float32), channel=[f"P{i}" for i in range(N_CH)],
                                   sfreq=SFREQ, modality="meg", ch_type="misc",
                                   subject=f"{s:02d}"))
    return recs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(oscillations(), tmp_path_factory.mktemp("learn") / "store",
                       splits=["train"] * 4 + ["val"])


def _model(**kw):
    cfg = {"context": CONTEXT, "loss_last": 8, "d_model": 32, "n_layers": 2, "n_heads": 2,
           "d_ff": 64, "dropout": 0.0, "n_sessions": 5}
    cfg.update(kw)
    return MEGGPT(N_BINS, N_CH, **cfg)


def _data(store, **kw):
    args = {"tokenizer": QuantileTokenizer(n_bins=N_BINS), "context": CONTEXT,
            "batch_size": 16, "stride_samples": 11}
    args.update(kw)
    return TokenDataModule(store, **args)


def _trainer(tmp_path, **kw):
    args = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "default_root_dir": tmp_path,
            "num_sanity_val_steps": 0, "enable_checkpointing": False,
            "gradient_clip_val": 1.0}
    args.update(kw)
    return pl.Trainer(**args)


class Record(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_loss_falls_and_top1_beats_the_unigram_baseline(store, tmp_path):
    pl.seed_everything(0)
    module = MEGGPTModule(_model(), lr=3e-3, start_lr=1e-4, final_lr=3e-4)
    dm = _data(store)
    rec = Record()
    trainer = _trainer(tmp_path, max_steps=120, limit_val_batches=4, val_check_interval=120,
                       check_val_every_n_epoch=None,
                       callbacks=[rec])
    trainer.fit(module, datamodule=dm)
    assert len(rec.losses) == 120
    assert np.mean(rec.losses[-10:]) < 0.6 * np.mean(rec.losses[:5])
    # the unigram baseline: always predict the most frequent training token
    counts = dm.datasets["train"].token_counts()
    val = dm.datasets["val"]
    val_tokens = torch.stack([val[i]["tokens"][-8:] for i in range(len(val))])
    unigram_val = float((val_tokens == int(counts.sum(0).argmax())).float().mean())
    assert unigram_accuracy(counts) < 0.1 and unigram_val < 0.1  # equal-count bins: ~1/16
    top1 = float(trainer.callback_metrics["val_top1"])
    assert top1 > 3 * max(unigram_accuracy(counts), unigram_val), top1
    assert float(trainer.callback_metrics["val_top5"]) > 0.8


def test_overfit_one_batch(store, tmp_path):
    pl.seed_everything(0)
    module = MEGGPTModule(_model(n_layers=1), lr=1e-2, start_lr=1e-2, warmup_fraction=0.0,
                          weight_decay=0.0)
    rec = Record()
    trainer = _trainer(tmp_path, overfit_batches=1, max_epochs=60, callbacks=[rec],
                       limit_val_batches=0)
    trainer.fit(module, datamodule=_data(store, batch_size=4))
    assert len(rec.losses) == 60
    assert rec.losses[0] > 2.0  # about log(16) at the start
    assert np.mean(rec.losses[-3:]) < 0.3
