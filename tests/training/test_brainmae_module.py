"""BrainMAE pretraining with Lightning: fast_dev_run, overfitting, checkpoints, resume, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from neurofm.errors import NeurofmError
from neurofm.models import BrainMAE
from neurofm.training import BrainDataModule, BrainMAEModule

from .conftest import N_ROIS, crash_callback

N_FRAMES, SEG = 48, 8
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**kw):
    cfg = {"n_frames": N_FRAMES, "embed_dim": 32, "depth": 2, "num_heads": 4,
           "temporal_depth": 1}
    cfg.update(kw)
    return BrainMAE(N_ROIS, SEG, **cfg)


def _data(store, **kw):
    args = {"window_samples": N_FRAMES, "batch_size": 8, "normalization": "robust"}
    args.update(kw)
    return BrainDataModule(store, **args)


def _trainer(tmp_path, **kw):
    args = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "default_root_dir": tmp_path,
            "num_sanity_val_steps": 0}
    args.update(kw)
    return pl.Trainer(**args)


def test_fast_dev_run(fmri_store, tmp_path):
    pl.seed_everything(0)
    module = BrainMAEModule(_model())
    trainer = _trainer(tmp_path, fast_dev_run=True)
    trainer.fit(module, datamodule=_data(fmri_store))
    for key in ("train_loss", "train_loss_masked", "train_loss_unmasked", "val_loss"):
        assert np.isfinite(float(trainer.callback_metrics[key])), key
    m = trainer.callback_metrics
    assert float(m["train_loss"]) == pytest.approx(
        0.75 * float(m["train_loss_masked"]) + 0.25 * float(m["train_loss_unmasked"]),
        rel=1e-5)


def test_overfit_one_batch_loss_falls(fmri_store, tmp_path):
    pl.seed_everything(0)
    module = BrainMAEModule(_model(), lr=3e-3, start_lr=3e-3, warmup_fraction=0.0,
                            weight_decay=0.0)
    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = _trainer(tmp_path, overfit_batches=1, max_epochs=80, callbacks=[Record()])
    trainer.fit(module, datamodule=_data(fmri_store))
    assert len(losses) == 80
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_checkpoint_metadata_and_encoder_export(fmri_store, tmp_path):
    from neurofm.evals import load_pretrained

    pl.seed_everything(2)
    module = BrainMAEModule(_model())
    dm = _data(fmri_store)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=dm)
    path = trainer.checkpoint_callback.best_model_path
    ckpt = torch.load(path, weights_only=False)
    meta = ckpt["neurofm"]
    assert meta["model_class"] == "neurofm.models.brainmae.BrainMAE"
    assert meta["model_config"] == module.model.config
    assert meta["normalization"] == dm.normalization_stats.to_dict()
    assert meta["splits"]["train"] == fmri_store.ids[:6] and meta["seed"] == 2
    enc = load_pretrained(path)  # no Lightning needed
    x = torch.randn(2, N_ROIS, N_FRAMES)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), module.model.eval().encode(x))
    assert enc.extra["normalization"] == meta["normalization"]
    # strict loading: a model of another shape refuses the checkpoint, listing keys
    other = BrainMAEModule(_model(embed_dim=16))
    with pytest.raises(NeurofmError, match="shape mismatches"):
        other.load_state_dict(ckpt["state_dict"])



def _run(store, tmp_path, *, crash=None, ckpt_path=None):
    pl.seed_everything(0)
    module = BrainMAEModule(_model())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1,
                           save_top_k=-1)
    callbacks = [ckpt] + ([crash_callback(crash)] if crash is not None else [])
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=callbacks, limit_val_batches=1)
    trainer.fit(module, datamodule=_data(store, random_crop=True), ckpt_path=ckpt_path)
    return module, trainer


def test_resume_reaches_the_uninterrupted_weights(fmri_store, tmp_path):
    full, full_trainer = _run(fmri_store, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _run(fmri_store, tmp_path / "resumed", crash=2)
    resumed, trainer = _run(fmri_store, tmp_path / "resumed", ckpt_path="last")
    assert trainer.global_step == full_trainer.global_step
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert float(trainer.callback_metrics["train_loss"]) == \
        float(full_trainer.callback_metrics["train_loss"])


def test_fit_from_the_cli_with_the_shipped_config(fmri_store, tmp_path, monkeypatch):
    from neurofm.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(CONFIGS / "brainmae.yaml"), "-c",
            str(CONFIGS / "trainer" / "cpu_debug.yaml"),
            "--data.init_args.store", fmri_store.path,
            "--data.init_args.window_samples", str(N_FRAMES),
            "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4",
            "--data.init_args.normalization", "robust",
            "--model.init_args.model.init_args.n_rois", str(N_ROIS),
            "--model.init_args.model.init_args.segment_frames", str(SEG),
            "--model.init_args.model.init_args.n_frames", str(N_FRAMES),
            "--model.init_args.model.init_args.embed_dim", "32",
            "--trainer.default_root_dir", "runs", "--trainer.max_epochs", "1"]
    assert main(args) == 0
    last = sorted(Path("runs").rglob("last.ckpt"))
    assert last
    meta = torch.load(last[0], weights_only=False)["neurofm"]
    assert meta["model_class"] == "neurofm.models.brainmae.BrainMAE"
    assert meta["model_config"]["n_rois"] == N_ROIS and meta["seed"] == 0
    assert main(["validate", *args[1:], "--ckpt_path", str(last[0])]) == 0
