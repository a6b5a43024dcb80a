"""Brain-JEPA pretraining with Lightning: wiring, checkpoints, strict loading, resume."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from neurofm.data import collate
from neurofm.errors import FormatError, NeurofmError
from neurofm.masking import SpatiotemporalMaskCollator
from neurofm.models import BrainJEPA
from neurofm.objectives import JEPAObjective
from neurofm.training import BrainDataModule, JEPAModule

from .conftest import N_ROIS, crash_callback

N_FRAMES, PATCH = 48, 16


def _model(**kw):
    cfg = {"patch_size": PATCH, "embed_dim": 32, "depth": 2, "num_heads": 2,
           "predictor_embed_dim": 32, "predictor_depth": 1, "n_gradients": 4}
    cfg.update(kw)
    return BrainJEPA(N_ROIS, N_FRAMES, **cfg)


def _data(store, **kw):
    coll = SpatiotemporalMaskCollator(N_ROIS, N_FRAMES // PATCH, seed=0, collate_fn=collate)
    args = {"window_samples": N_FRAMES, "batch_size": 8, "collate": coll,
            "normalization": "robust"}
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
    module = JEPAModule(_model(), lr=1e-3)
    trainer = _trainer(tmp_path, fast_dev_run=True)
    trainer.fit(module, datamodule=_data(fmri_store))
    assert np.isfinite(float(trainer.callback_metrics["train_loss"]))
    # gradients="auto": computed from the train split's group FC, copied to the target
    g = module.model.gradients
    assert g.shape == (N_ROIS, 4) and torch.any(g != 0)
    torch.testing.assert_close(module.objective.target_encoder.pos.gradients, g)


def test_overfit_one_batch_loss_falls(fmri_store, tmp_path):
    pl.seed_everything(0)
    module = JEPAModule(_model(), lr=3e-3, start_lr=3e-3, warmup_fraction=0.0,
                        weight_decay=(0.0, 0.0))
    trainer = _trainer(tmp_path, overfit_batches=1, max_epochs=30, log_every_n_steps=1)
    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer.callbacks.append(Record())
    trainer.fit(module, datamodule=_data(fmri_store, random_crop=False))
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_checkpoint_metadata_is_complete(fmri_store, tmp_path):
    pl.seed_everything(3)
    module = JEPAModule(_model())
    dm = _data(fmri_store)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=dm)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    meta = ckpt["neurofm"]
    assert meta["model_config"] == module.model.config
    assert meta["model_class"] == "neurofm.models.brainjepa.BrainJEPA"
    assert meta["normalization"] == dm.normalization_stats.to_dict()
    assert meta["splits"]["train"] == fmri_store.ids[:6]
    assert meta["splits"]["val"] == [fmri_store.ids[6]]
    assert meta["seed"] == 3
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or \
        meta["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    np.testing.assert_allclose(np.array(meta["gradients"]), module.model.gradients.numpy())
    assert meta["store"] == fmri_store.path and "store_config_hash" in meta
    assert ckpt["BrainDataModule"]["normalization"] == meta["normalization"]


def test_strict_loading_lists_mismatches(fmri_store, tmp_path):
    module = JEPAModule(_model())
    state = module.state_dict()
    bad = dict(state)
    bad.pop("model.encoder.norm.weight")
    bad["model.extra"] = torch.zeros(1)
    bad["model.encoder.patch_embed.weight"] = torch.zeros(1, 2, 3)
    other = JEPAModule(_model())
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(FormatError) as err:
        other.load_state_dict(bad)
    msg = str(err.value)
    assert "missing keys: model.encoder.norm.weight" in msg
    assert "unexpected keys: model.extra" in msg
    assert "model.encoder.patch_embed.weight: checkpoint (1, 2, 3)" in msg
    for k, v in other.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k
    other.load_state_dict(state)  # a matching state loads
    assert torch.equal(other.state_dict()["model.encoder.norm.weight"],
                       state["model.encoder.norm.weight"])



def _run(store, tmp_path, *, crash=None, ckpt_path=None):
    pl.seed_everything(0)
    module = JEPAModule(_model())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1,
                           save_top_k=-1)
    callbacks = [ckpt] + ([crash_callback(crash)] if crash is not None else [])
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=callbacks, limit_val_batches=1,
                       enable_checkpointing=True)
    trainer.fit(module, datamodule=_data(store, random_crop=True), ckpt_path=ckpt_path)
    return module, trainer


def test_resume_reaches_the_uninterrupted_weights(fmri_store, tmp_path):
    full, full_trainer = _run(fmri_store, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _run(fmri_store, tmp_path / "resumed", crash=2)
    assert (tmp_path / "resumed" / "ckpt" / "last.ckpt").exists()
    resumed, trainer = _run(fmri_store, tmp_path / "resumed", ckpt_path="last")
    assert trainer.global_step == full_trainer.global_step
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert float(trainer.callback_metrics["train_loss"]) == \
        float(full_trainer.callback_metrics["train_loss"])


def test_mismatched_data_and_model_are_refused(fmri_store, tmp_path):
    module = JEPAModule(_model())
    dm = _data(fmri_store, collate=SpatiotemporalMaskCollator(N_ROIS, 2, collate_fn=collate))
    with pytest.raises(NeurofmError, match="mask collator's grid"):
        _trainer(tmp_path, fast_dev_run=True).fit(module, datamodule=dm)
    dm = _data(fmri_store, window_samples=32)
    with pytest.raises(NeurofmError, match="n_frames=48"):
        _trainer(tmp_path, fast_dev_run=True).fit(JEPAModule(_model()), datamodule=dm)


def test_objective_factory_is_injected():
    module = JEPAModule(_model(), objective=lambda m: JEPAObjective(m, ema=(0.99, 1.0)))
    assert module.objective.ema == (0.99, 1.0)
    with pytest.raises(NeurofmError, match="JEPAObjective"):
        JEPAModule(_model(), objective=lambda m: object())
