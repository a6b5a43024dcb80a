"""``neurofm probe -c CONFIG [--ckpt_path CKPT] --events ...``: MEG-GPT decoding from the
configs of ``neurofm fit``.

One tiny model is pretrained with ``neurofm fit`` on a small generated event store; probing it
through its config gives exactly the accuracies of probing its checkpoint; a config alone gives
the random-init row; checkpoints that do not fit the config, configs that are not MEG-GPT
configs and configs without a usable store are refused with messages naming them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")

import pandas as pd

from evals.test_decoding import EVENTS, N_CH, N_SAMPLES, event_related
from neurofm.cli import main
from neurofm.errors import FormatError, NeurofmError, NeurofmWarning
from neurofm.evals.decoding import (
    RANDOM_INIT,
    CheckpointMismatchError,
    ConfigError,
    decode,
    load_meggpt,
    meggpt_from_config,
)
from neurofm.models import MEGGPT
from neurofm.store import write_store

BASE = Path(__file__).resolve().parents[2] / "configs" / "meggpt.yaml"
TINY = {"vocab_size": 16, "n_channels": N_CH, "context": 48, "loss_last": 8, "d_model": 16,
        "n_layers": 1, "n_heads": 2, "d_ff": 32, "dropout": 0.0, "n_sessions": 4}
EVENT_ARGS = ["--events", *[f"{k}={v}" for k, v in EVENTS.items()], "--epoch-samples",
              str(N_SAMPLES), "--baselines", "none", "--seeds", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _yaml(path, store, model=None, *, root=None, tokenizer="QuantileTokenizer",
          tokenizer_args="n_bins: 16"):
    """A config piece layered on configs/meggpt.yaml: tiny model, quantile tokens, CPU."""
    model = {**TINY, **(model or {})}
    lines = ["seed_everything: 0", "model:", "  init_args:", "    model:", "      init_args:"]
    lines += [f"        {k}: {v}" for k, v in model.items()]
    lines += ["    lr: 1.0e-3", "data:", "  init_args:", f"    store: {store}",
              "    tokenizer:", f"      class_path: neurofm.tokenizers.{tokenizer}",
              "      init_args:", f"        {tokenizer_args}", "    context: 48",
              "    batch_size: 8", "    num_workers: 0", "    cache_dir: null",
              "trainer:", "  accelerator: cpu", "  devices: 1", "  max_steps: 3",
              "  limit_val_batches: 1", "  enable_progress_bar: false",
              "  enable_model_summary: false", f"  default_root_dir: {root or 'runs'}"]
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(store, config, last.ckpt) of a 3-step ``neurofm fit`` run on a 2 x 2-run store."""
    root = tmp_path_factory.mktemp("probe_config")
    recs = event_related(n_subjects=2, n_runs=2, seconds=15, seed=3)
    store = write_store(recs, root / "store", splits=["train", "train", "train", "val"])
    config = _yaml(root / "tiny.yaml", store.path, root=root / "runs")
    assert main(["fit", "-c", str(BASE), "-c", config]) == 0
    ckpt = next((root / "runs").rglob("last.ckpt"))
    return store, config, str(ckpt)


def _read(out):
    return pd.read_csv(Path(out) / "decoding.csv", dtype={"fold": str})


def test_config_probe_equals_checkpoint_probe(fitted, tmp_path, capsys):
    store, config, ckpt = fitted
    common = [*EVENT_ARGS, "--finetune-steps", "2"]
    assert main(["probe", "-c", str(BASE), "-c", config, "--ckpt_path", ckpt, *common,
                 "--out", str(tmp_path / "cfg")]) == 0
    assert main(["probe", store.path, "--encoder", f"meggpt={ckpt}", *common,
                 "--out", str(tmp_path / "enc")]) == 0
    cfg, enc = _read(tmp_path / "cfg"), _read(tmp_path / "enc")
    assert set(enc["features"]) == {"raw", "zero-shot", "fine-tuned"}
    assert set(cfg["features"]) == {"raw", "zero-shot", "fine-tuned", RANDOM_INIT}
    assert (cfg["model"] == "meggpt").all()  # named after the first config
    same = cfg[cfg["features"] != RANDOM_INIT].reset_index(drop=True)
    # identical folds, counts and accuracies
    pd.testing.assert_frame_equal(same, enc, check_exact=True)
    assert sorted(set(cfg["fold"])) == ["00", "01", "held-out run"]

    # the random-init row: the config's initial weights (what neurofm fit started from),
    # zero-shot on the same epochs
    import lightning.pytorch as pl

    pl.seed_everything(0)  # the config's seed_everything
    fresh = MEGGPT(**TINY)
    setup = meggpt_from_config([BASE, config], ckpt)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(setup.random_init.state_dict()[key], value, rtol=0, atol=0)
    trained, tok = load_meggpt(ckpt)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(setup.model.state_dict()[key], value, rtol=0, atol=0)
    ref = decode(fresh, tok, store, EVENTS, n_samples=N_SAMPLES, baselines=(), finetune=False,
                 seed=0)
    ref = ref[ref["features"] == "zero-shot"].set_index(["protocol", "fold"])["accuracy"]
    got = cfg[cfg["features"] == RANDOM_INIT].set_index(["protocol", "fold"])["accuracy"]
    pd.testing.assert_series_equal(got.sort_index(), ref.sort_index(), check_exact=True)
    assert "## meggpt" in capsys.readouterr().out

    # a config alone: the random-init row (zero-shot only), the same accuracies
    assert main(["probe", "-c", str(BASE), "-c", config, *common,
                 "--out", str(tmp_path / "rand")]) == 0
    rand = _read(tmp_path / "rand")
    assert set(rand["features"]) == {"raw", RANDOM_INIT}
    got = rand[rand["features"] == RANDOM_INIT].set_index(["protocol", "fold"])["accuracy"]
    pd.testing.assert_series_equal(got.sort_index(), ref.sort_index(), check_exact=True)
    raw = cfg[cfg["features"] == "raw"].reset_index(drop=True)
    pd.testing.assert_frame_equal(rand[rand["features"] == "raw"].reset_index(drop=True), raw,
                                  check_exact=True)


def test_mismatching_checkpoint_is_refused_with_the_keys(fitted, tmp_path, capsys):
    store, _, ckpt = fitted
    other = _yaml(tmp_path / "other.yaml", store.path, {"n_layers": 2, "n_sessions": 6})
    with pytest.raises(CheckpointMismatchError) as info:
        meggpt_from_config([BASE, other], ckpt)
    err = info.value
    saved = {k[len("model."):] for k in torch.load(ckpt, weights_only=False)["state_dict"]
             if k.startswith("model.")}
    wanted = set(MEGGPT(**{**TINY, "n_layers": 2, "n_sessions": 6}).state_dict())
    assert err.missing == sorted(wanted - saved) and err.missing
    assert all(k.startswith("blocks.1.") for k in err.missing)
    assert err.unexpected == []
    (name, (was, now)), = err.shapes.items()  # the session table: 4 rows vs 6
    assert "session" in name and was == (4, 16) and now == (6, 16)
    assert err.settings == {"n_layers": (1, 2), "n_sessions": (4, 6)}
    assert isinstance(err, FormatError) and ckpt in str(err) and str(other) in str(err)
    assert err.missing[0] in str(err)
    # through the command: exit status 2, one line naming the checkpoint and the keys
    assert main(["probe", "-c", str(BASE), "-c", other, "--ckpt_path", ckpt,
                 *EVENT_ARGS]) == 2
    msg = capsys.readouterr().err
    assert msg.startswith("neurofm: error: --ckpt_path") and err.missing[0] in msg
    # a checkpoint of another model
    fake = tmp_path / "jepa.ckpt"
    torch.save({"neurofm": {"model_class": "neurofm.models.brainjepa.BrainJEPA"},
                "state_dict": {}}, fake)
    with pytest.raises(FormatError, match=r"expected a MEG-GPT checkpoint .* found "
                                          r"model_class 'neurofm.models.brainjepa.BrainJEPA'"):
        meggpt_from_config([BASE, other], fake)
    with pytest.raises(FormatError, match="not found"):
        meggpt_from_config([BASE, other], tmp_path / "none.ckpt")
    # the weights fit, but the tokenizer is of another kind
    mulaw = _yaml(tmp_path / "mulaw.yaml", store.path, tokenizer="MuLawTokenizer",
                  tokenizer_args="mu: 15")
    with pytest.raises(FormatError, match=r"its tokenizer does not match .*mulaw\.yaml: "
                                          r"QuantileTokenizer in the checkpoint vs "
                                          r"MuLawTokenizer in the config"):
        meggpt_from_config([BASE, mulaw], ckpt)
    # settings that change no weight: loaded, with a warning listing them; the config's used
    loose = _yaml(tmp_path / "loose.yaml", store.path, {"dropout": 0.3, "loss_last": 4})
    with pytest.warns(NeurofmWarning, match=r"'dropout': \(0\.0, 0\.3\), 'loss_last': "
                                            r"\(8, 4\)"):
        setup = meggpt_from_config([BASE, loose], ckpt)
    assert setup.model.config["dropout"] == 0.3 and setup.model.config["loss_last"] == 4
    trained, _ = load_meggpt(ckpt)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(setup.model.state_dict()[key], value, rtol=0, atol=0)


def test_bad_configs_are_refused(fitted, tmp_path):
    store, config, _ = fitted
    jepa = BASE.parent / "brainjepa.yaml"
    with pytest.raises(ConfigError, match=r"brainjepa\.yaml: not a MEG-GPT config: expected "
                                          r"model\.class_path neurofm\.training\.MEGGPTModule"
                                          r".*found model\.class_path "
                                          r"neurofm\.training\.JEPAModule"):
        meggpt_from_config(jepa)
    missing = _yaml(tmp_path / "missing.yaml", tmp_path / "no_store")
    with pytest.raises(ConfigError, match=r"data\.init_args\.store=.*no_store.*not found"):
        meggpt_from_config([BASE, missing])
    unset = _yaml(tmp_path / "unset.yaml", "null")
    with pytest.raises(ConfigError, match=r"data\.init_args\.store is not set"):
        meggpt_from_config([BASE, unset])
    # STORE on the command line replaces the config's data.store
    setup = meggpt_from_config([BASE, unset], store=store.path)
    assert setup.store.path == store.path and setup.model is None
    with pytest.raises(ConfigError, match=r"-c .*nope\.yaml: config file not found"):
        meggpt_from_config([BASE, tmp_path / "nope.yaml"])
    vocab = _yaml(tmp_path / "vocab.yaml", store.path, {"vocab_size": 20})
    with pytest.raises(ConfigError, match=r"vocab_size is 16 but .*vocab_size=20"):
        meggpt_from_config([BASE, vocab])
    with pytest.raises(NeurofmError, match="--ckpt_path goes with -c"):
        main(["--debug", "probe", store.path, "--ckpt_path", "x.ckpt", *EVENT_ARGS])
    with pytest.raises(NeurofmError, match="give either"):
        main(["--debug", "probe", "-c", config, "--encoder", "a=x.ckpt", *EVENT_ARGS])
    with pytest.raises(NeurofmError, match="--no-random-init leaves nothing"):
        main(["--debug", "probe", "-c", config, "--no-random-init", *EVENT_ARGS])
    with pytest.raises(NeurofmError, match="--events is required"):
        main(["--debug", "probe", "-c", config])
