"""MEG-GPT decoding protocol: subject/session-disjoint splits, a pretrained small model's
features beat chance on generated 4-class event-related data, checkpoints load without
Lightning."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurofm.data import TokenWindowDataset
from neurofm.errors import DataError
from neurofm.evals.decoding import decode, decoding_splits, finetune_next_token, summary_table
from neurofm.models import MEGGPT
from neurofm.schema import make_recording
from neurofm.store import write_store
from neurofm.tokenizers import QuantileTokenizer

SFREQ, N_CH, N_SAMPLES = 100.0, 4, 40
EVENTS = {"famous": 0, "unfamiliar": 1, "scrambled": 2, "button": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def event_related(n_subjects=3, n_runs=2, seconds=30, seed=0):
    """Noise plus, after each event, a 15 Hz burst on the channel of its class."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    names = list(EVENTS)
    burst_t = np.arange(N_SAMPLES) / SFREQ
    burst = np.exp(-((burst_t - 0.15) / 0.07) ** 2) * np.sin(2 * np.pi * 15 * burst_t)
    recs = []
    for s in range(n_subjects):
        for r in range(n_runs):
            x = rng.standard_normal((N_CH, n)) * 0.3
            x += np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (N_CH, 1)))
            onsets = np.arange(0.5, seconds - 1.0, 0.8) + rng.uniform(0, 0.1)
            labels = rng.integers(0, 4, len(onsets))
            for o, k in zip(onsets, labels):
                i = round(o * SFREQ)
                x[k, i:i + N_SAMPLES] += 3.0 * burst
            ev = [(float(o), 0.0, names[k]) for o, k in zip(onsets, labels)]
            recs.append(make_recording(x.astype(np.float32),
                                       channel=[f"P{i}" for i in range(N_CH)], sfreq=SFREQ,
                                       modality="meg", ch_type="misc", events=ev,
                                       subject=f"{s:02d}", run=str(r + 1)))
    return recs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    recs = event_related()
    splits = ["train"] * (len(recs) - 1) + ["val"]  # for the checkpoint test's pretraining
    return write_store(recs, tmp_path_factory.mktemp("dec") / "store", splits=splits)


@pytest.fixture(scope="module")
def pretrained(store):
    """A small MEG-GPT pretrained by next-token prediction on the continuous data."""
    tok = QuantileTokenizer(n_bins=32).fit(
        [store.read_window(r, 0, 3000) for r in store.ids])
    windows = TokenWindowDataset(store, tok, window_samples=49, stride_samples=7, split=None,
                                 sessions=False)
    torch.manual_seed(0)
    model = MEGGPT(32, N_CH, context=48, loss_last=16, d_model=32, n_layers=2, n_heads=2,
                   d_ff=64, dropout=0.0)
    tuned, losses = finetune_next_token(model, windows, steps=80, lr=3e-3, batch_size=16)
    assert np.mean(losses[-10:]) < 0.92 * np.mean(losses[:5])
    return tuned, tok


def test_splits_are_subject_and_session_disjoint():
    subjects = np.repeat(["a", "b", "c"], 4)
    runs = np.tile(["1", "1", "2", "2"], 3)
    folds = decoding_splits(subjects, runs)
    assert [f[:2] for f in folds] == [("cross-session", "held-out run"),
                                      ("cross-subject", "a"), ("cross-subject", "b"),
                                      ("cross-subject", "c")]
    _, _, tr, te = folds[0]
    np.testing.assert_array_equal(te, [2, 3, 6, 7, 10, 11])  # run 2 of every subject
    assert set(zip(subjects[tr], runs[tr])).isdisjoint(zip(subjects[te], runs[te]))
    for _, s, tr, te in folds[1:]:
        assert set(subjects[te]) == {s} and s not in set(subjects[tr])
        assert len(tr) + len(te) == 12
    with pytest.raises(DataError, match="single run"):
        decoding_splits(subjects, np.ones(12, dtype=int).astype(str))
    with pytest.raises(DataError, match="at least 2 subjects"):
        decoding_splits(np.repeat("a", 4), runs[:4])


def test_pretrained_features_beat_chance(store, pretrained):
    model, tok = pretrained
    res = decode(model, tok, store, EVENTS, n_samples=N_SAMPLES, baselines=("log_bandpower",),
                 finetune_steps=5, finetune_lr=1e-4)
    assert set(res["features"]) == {"raw", "zero-shot", "fine-tuned", "log_bandpower"}
    assert (res["chance"] == 0.25).all() and (res["n_classes"] == 4).all()
    # the folds are subject / recording disjoint
    for _, row in res.iterrows():
        tr, te = set(row.train_recordings.split(",")), set(row.test_recordings.split(","))
        assert tr.isdisjoint(te)
        if row.protocol == "cross-subject":
            assert set(row.train_subjects.split(",")).isdisjoint(row.test_subjects.split(","))
            assert row.test_subjects == row.fold
        else:
            assert all(r.endswith("run-2") for r in te) and len(te) == 3
    table = summary_table(res)
    assert list(table.columns) == ["cross-session", "cross-subject", "chance"]
    for protocol in ("cross-session", "cross-subject"):
        assert table.loc["zero-shot", protocol] > 0.7, table
        assert table.loc["fine-tuned", protocol] > 0.7, table
    # every cross-subject fold is present, each beating chance
    zs = res[(res.features == "zero-shot") & (res.protocol == "cross-subject")]
    assert sorted(zs.fold) == ["00", "01", "02"] and (zs.accuracy > 0.5).all()
    # pretraining helps: the same architecture with random weights decodes worse
    torch.manual_seed(1)
    rand = MEGGPT(**model.config)
    res_rand = decode(rand, tok, store, EVENTS, n_samples=N_SAMPLES, baselines=(),
                      finetune=False, protocols=("cross-session",))
    assert set(res_rand["features"]) == {"raw", "zero-shot"}
    assert summary_table(res_rand).loc["zero-shot", "cross-session"] < \
        table.loc["zero-shot", "cross-session"] - 0.1


def test_checkpoint_loads_and_probe_cli_runs_the_protocol(store, tmp_path, capsys):
    """A neurofm fit checkpoint -> load_meggpt (no Lightning) -> ``neurofm probe --events``."""
    pl = pytest.importorskip("lightning.pytorch")
    import pandas as pd

    from neurofm.cli import main
    from neurofm.data.tokens import tokenizer_fingerprint
    from neurofm.evals import load_meggpt
    from neurofm.training import MEGGPTModule, TokenDataModule

    pl.seed_everything(0)
    module = MEGGPTModule(MEGGPT(16, N_CH, context=48, loss_last=8, d_model=16, n_layers=1,
                                 n_heads=2, d_ff=32, n_sessions=6), lr=1e-3)
    dm = TokenDataModule(store, QuantileTokenizer(n_bins=16), context=48, batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    ckpt = trainer.checkpoint_callback.best_model_path
    model, tok = load_meggpt(ckpt)
    assert not model.training and model.config == module.model.config
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(dm.tokenizer)
    assert model.extra["channels"] == ["P0", "P1", "P2", "P3"]
    out = tmp_path / "out"
    status = main(["probe", store.path, "--encoder", f"tiny={ckpt}", "--events",
                   *[f"{k}={v}" for k, v in EVENTS.items()], "--epoch-samples",
                   str(N_SAMPLES), "--finetune-steps", "0", "--baselines", "none",
                   "--out", str(out)])
    assert status == 0
    res = pd.read_csv(out / "decoding.csv", dtype={"fold": str})
    assert set(res["features"]) == {"raw", "zero-shot"}  # --finetune-steps 0: zero-shot only
    assert sorted(set(res["fold"])) == ["00", "01", "02", "held-out run"]
    assert (res["model"] == "tiny").all() and (res["chance"] == 0.25).all()
    printed = capsys.readouterr().out
    assert "## tiny" in printed and "cross-subject" in printed and "zero-shot" in printed
