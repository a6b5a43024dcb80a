"""MEG-GPT pretraining with Lightning: checkpoint contents, session initialization, exact
resume, strict loading, and ``neurofm fit`` with the shipped config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from neurofm.errors import NeurofmError
from neurofm.models import MEGGPT
from neurofm.schema import make_recording
from neurofm.store import write_store
from neurofm.tokenizers import MuLawTokenizer, QuantileTokenizer
from neurofm.training import MEGGPTModule, TokenDataModule

from .conftest import crash_callback

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
N_CH, CONTEXT, SFREQ = 3, 24, 250.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def meg_like(n_sessions=4, n_times=1000, seed=0):
    """Sessions of a 10 Hz rhythm (a per-session amplitude and offset) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / SFREQ
    recs = []
    for s in range(n_sessions):
        x = np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (N_CH, 1)))
        x = (1 + s) * x + 0.3 * rng.standard_normal((N_CH, n_times)) + 5 * s
        recs.append(make_recording(x.astype(np.float32), channel=[f"P{i}" for i in range(N_CH)],
                                   sfreq=SFREQ, modality="meg", ch_type="misc",
                                   subject=f"{s:02d}"))
    return recs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(meg_like(), tmp_path_factory.mktemp("meggpt") / "store",
                       splits=["train", "train", "train", "val"])


def _model(**kw):
    cfg = {"context": CONTEXT, "loss_last": 8, "d_model": 32, "n_layers": 1, "n_heads": 2,
           "d_ff": 64, "dropout": 0.1, "n_sessions": 4}
    cfg.update(kw)
    return MEGGPT(16, N_CH, **cfg)


def _data(store, **kw):
    args = {"tokenizer": QuantileTokenizer(n_bins=16), "context": CONTEXT, "batch_size": 8}
    args.update(kw)
    return TokenDataModule(store, **args)


def _trainer(tmp_path, **kw):
    args = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "default_root_dir": tmp_path,
            "num_sanity_val_steps": 0, "gradient_clip_val": 1.0}
    args.update(kw)
    return pl.Trainer(**args)


def test_checkpoint_records_tokenizer_normalization_and_sessions(store, tmp_path):
    from neurofm.data.tokens import tokenizer_fingerprint, unpack_tokenizer

    seen = {}

    class Grab(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["rows"] = pl_module.model.session_embed.weight.detach().clone()

    pl.seed_everything(0)
    module = MEGGPTModule(_model(), lr=1e-3, start_lr=1e-3)
    dm = _data(store)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                       callbacks=[Grab()])
    trainer.fit(module, datamodule=dm)
    m = trainer.callback_metrics
    for key in ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5"):
        assert np.isfinite(float(m[key])), key
    assert 0 <= float(m["val_top1"]) <= float(m["val_top5"]) <= 1
    # the session rows start as each training session's token frequencies; the val session
    # (index 3) as the pooled training frequencies
    counts = dm.datasets["train"].token_counts(n_sessions=4).astype(float)
    want = counts[:3] / counts[:3].sum(1, keepdims=True)
    np.testing.assert_allclose(seen["rows"][:3].numpy(), want[:3], rtol=1e-6)
    pooled = counts[:3].sum(0)
    np.testing.assert_allclose(seen["rows"][3].numpy(), pooled / pooled.sum(), rtol=1e-6)
    assert not np.allclose(want[0], want[1])  # per-session amplitude/offset differ: so do rows
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    meta = ckpt["neurofm"]
    assert meta["model_class"] == "neurofm.models.meggpt.MEGGPT"
    assert meta["model_config"] == module.model.config
    assert meta["session_ids"] == store.ids and meta["channels"] == ["P0", "P1", "P2"]
    assert meta["sfreq"] == SFREQ and meta["context"] == CONTEXT
    assert meta["splits"]["train"] == store.ids[:3] and meta["splits"]["val"] == store.ids[3:]
    tok = unpack_tokenizer(meta["tokenizer"])
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(dm.tokenizer)
    # normalization: each recording's own channel mean / population std
    norm = meta["normalization"]
    assert norm["per"] == "recording" and sorted(norm["recordings"]) == sorted(store.ids)
    x = store.read_window(store.ids[2], 0, 1000).astype(np.float64)
    got = norm["recordings"][store.ids[2]]
    np.testing.assert_allclose([got["center"][f"P{i}"] for i in range(3)], x.mean(1))
    np.testing.assert_allclose([got["scale"][f"P{i}"] for i in range(3)], x.std(1))


def test_the_model_must_fit_the_data(store, tmp_path):
    module = MEGGPTModule(_model(n_sessions=2))
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    with pytest.raises(NeurofmError, match=r"4 recordings \(sessions\) but the model's "
                                           r"n_sessions=2"):
        trainer.fit(module, datamodule=_data(store, tokenizer=MuLawTokenizer(mu=15)))


def _run(store, tmp_path, *, crash=None, ckpt_path=None):
    pl.seed_everything(0)
    module = MEGGPTModule(_model(), lr=1e-3, start_lr=1e-4)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1,
                           save_top_k=-1)
    callbacks = [ckpt] + ([crash_callback(crash)] if crash is not None else [])
    trainer = _trainer(tmp_path, max_epochs=3, limit_train_batches=3, limit_val_batches=1,
                       callbacks=callbacks)
    trainer.fit(module, datamodule=_data(store), ckpt_path=ckpt_path)
    return module, trainer


def test_resume_reaches_the_uninterrupted_weights(store, tmp_path):
    full, full_trainer = _run(store, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _run(store, tmp_path / "resumed", crash=2)
    resumed, trainer = _run(store, tmp_path / "resumed", ckpt_path="last")
    assert trainer.global_step == full_trainer.global_step == 9
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert float(trainer.callback_metrics["train_loss"]) == \
        float(full_trainer.callback_metrics["train_loss"])


def test_strict_loading_lists_the_mismatched_keys(store, tmp_path):
    module = MEGGPTModule(_model())
    state = module.state_dict()
    other = MEGGPTModule(_model(d_model=16, n_sessions=None))
    with pytest.raises(NeurofmError) as err:
        other.load_state_dict(state)
    msg = str(err.value)
    assert "unexpected keys: model.session_embed.weight, model.session_proj.bias" in msg
    assert "model.token_embed.weight: checkpoint (16, 32) vs model (16, 16)" in msg
    assert "nothing loaded" in msg


def test_fit_from_the_cli_with_the_shipped_config(store, tmp_path, monkeypatch):
    from neurofm.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["-c", str(CONFIGS / "meggpt.yaml"), "-c",
            str(CONFIGS / "trainer" / "cpu_debug.yaml"),
            "--data.init_args.store", store.path,
            "--data.init_args.tokenizer", "neurofm.tokenizers.QuantileTokenizer",
            "--data.init_args.tokenizer.init_args.n_bins", "16",
            "--data.init_args.context", str(CONTEXT), "--data.init_args.num_workers", "0",
            "--data.init_args.batch_size", "4", "--data.init_args.cache_dir", "tokens",
            "--model.init_args.model.init_args.vocab_size", "16",
            "--model.init_args.model.init_args.n_channels", str(N_CH),
            "--model.init_args.model.init_args.context", str(CONTEXT),
            "--model.init_args.model.init_args.loss_last", "8",
            "--model.init_args.model.init_args.d_model", "32",
            "--model.init_args.model.init_args.n_layers", "1",
            "--model.init_args.model.init_args.d_ff", "64",
            "--model.init_args.model.init_args.n_sessions", "4",
            "--trainer.default_root_dir", "runs", "--trainer.max_epochs", "1"]
    assert main(["fit", *args]) == 0
    last = sorted(Path("runs").rglob("last.ckpt"))
    assert last
    meta = torch.load(last[0], weights_only=False)["neurofm"]
    assert meta["model_config"]["n_layers"] == 1 and meta["model_config"]["vocab_size"] == 16
    assert meta["tokenizer"]["class"] == "QuantileTokenizer" and meta["seed"] == 0
    assert list(Path("tokens").rglob("*.npy"))  # the token cache was written
    assert main(["validate", *args, "--ckpt_path", str(last[0])]) == 0


@pytest.mark.slow
def test_fit_on_the_meg_pipeline_store(tmp_path, monkeypatch):
    """Sample data -> MEG pipeline -> neurofm fit with configs/data/meg_example.yaml."""
    from neurofm.cli import main
    from neurofm.datasets import make_sample_data

    repo = CONFIGS.parent
    monkeypatch.chdir(tmp_path)
    make_sample_data("datasets/sample")
    assert main(["preprocess", str(repo / "pipelines" / "config" / "meg_example.yaml")]) == 0
    args = ["-c", str(CONFIGS / "meggpt.yaml"), "-c", str(CONFIGS / "data" / "meg_example.yaml"),
            "-c", str(CONFIGS / "trainer" / "cpu_debug.yaml")]
    assert main(["fit", *args]) == 0
    last = next(p for p in Path("runs/cpu_debug").rglob("last.ckpt"))
    meta = torch.load(last, weights_only=False)["neurofm"]
    assert meta["sfreq"] == 150.0 and len(meta["channels"]) == 30
    # the sample's resting MEG and the 4-class task runs of sub-30..33: one session each
    assert sorted(meta["session_ids"]) == ["sub-04_task-rest", "sub-05_task-rest"] + [
        f"sub-{s}_task-evoked_run-{r}" for s in range(30, 34) for r in (1, 2)]
    assert meta["tokenizer"]["class"] == "QuantileTokenizer"
