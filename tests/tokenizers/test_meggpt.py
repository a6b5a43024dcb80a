"""MEGGPTTokenizer: parity with the reference goldens, strict loading, vocabulary, training."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from tokenizer_helpers import meg_like

from neurofm.errors import DataError, FormatError, NeurofmError
from neurofm.tokenizers import MEGGPTTokenizer, annealed_temperature, load, pve, window_starts

CASES = ["osc_c52", "osc_c14", "osc_c3", "osc_c7", "spkit_eeg"]


# ------------------------------------------------------------------------ released weights

@pytest.mark.parametrize("case", CASES)
def test_pretrained_encode_matches_reference_tokens(released, goldens, case):
    x = goldens[f"{case}_x"].T  # reference input is (T, C); ours (C, T)
    ref = goldens[f"{case}_tokens"].T.astype(np.int64)
    tokens = released.encode(x)
    assert tokens.shape == ref.shape and tokens.dtype == np.int64
    agreement = float(np.mean(tokens == ref))
    assert agreement >= 0.999, f"{case}: {100 * agreement:.3f} % identical tokens"


@pytest.mark.parametrize("case", CASES)
def test_pretrained_decode_matches_reference_reconstruction(released, goldens, case):
    tokens = goldens[f"{case}_tokens"].T.astype(np.int64)
    ref = goldens[f"{case}_recon"].T  # the reference crops to a multiple of 200 samples
    x_hat = released.decode(tokens)
    assert x_hat.shape == tokens.shape and x_hat.dtype == np.float32
    np.testing.assert_allclose(x_hat[:, : ref.shape[1]], ref, atol=1e-4, rtol=0)


def test_pretrained_decode_of_outlier_id_matches_reference(released, goldens):
    tokens = goldens["decode_tokens"].T.astype(np.int64)
    assert (tokens == 0).any()
    np.testing.assert_allclose(released.decode(tokens), goldens["decode_recon"].T, atol=1e-4)


def test_pretrained_vocabulary(released):
    assert released.vocab_size == 66  # 65 used raw tokens + the reserved 0
    v = released.vocab_
    assert v["token_order"].shape == (65,)
    np.testing.assert_array_equal(v["label_map"][v["token_order"]], np.arange(1, 66))
    assert np.all(np.diff(v["total_token_counts"]) <= 0)  # sorted by frequency


def test_pretrained_batch_equals_items_and_tail_window(released, goldens):
    x = goldens["osc_c7_x"].T[:, :1000]
    batch = np.stack([x, 3 * x[::-1] + 1])
    tokens = released.encode(batch)
    assert tokens.shape == (2, 7, 1000)
    np.testing.assert_array_equal(tokens[0], released.encode(x))
    np.testing.assert_array_equal(tokens[1], released.encode(batch[1]))
    # standardization per recording: scale and offset do not change the tokens
    np.testing.assert_array_equal(released.encode(5 * x - 3), tokens[0])


def test_pretrained_torch_in_torch_out(released, goldens):
    x = torch.from_numpy(goldens["osc_c3_x"].T.copy())
    tokens = released.encode(x)
    assert isinstance(tokens, torch.Tensor) and tokens.dtype == torch.long
    np.testing.assert_array_equal(tokens.numpy(), goldens["osc_c3_tokens"].T)
    assert isinstance(released.decode(tokens), torch.Tensor)


def test_continuous_decode_differs_only_near_window_starts(released, goldens):
    tokens = goldens["osc_c52_tokens"].T.astype(np.int64)  # 600 samples = 3 windows
    windowed = released.decode(tokens)
    continuous = released.decode(tokens, windowed=False)
    same = np.ones(600, bool)
    for s in (200, 400):  # causal kernels of 10 samples reach 9 samples past a window start
        same[s:s + 9] = False
    np.testing.assert_allclose(windowed[:, same], continuous[:, same], atol=1e-5)
    assert np.abs(windowed[:, ~same] - continuous[:, ~same]).max() > 1e-3


def _copy_release(src, dst):
    for name in ("config.yaml", "model_state.pt", "vocab.pkl"):
        shutil.copy(src / name, dst / name)


def test_from_pretrained_strict_missing_and_unexpected_keys(release_dir, tmp_path):
    _copy_release(release_dir, tmp_path)
    state = torch.load(tmp_path / "model_state.pt", map_location="cpu", weights_only=True)
    del state["token_weights_layer.norm_layer.bias"]
    state["decoder_layer.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "model_state.pt")
    with pytest.raises(FormatError) as err:
        MEGGPTTokenizer.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing keys ['norm.bias']" in msg
    assert "unexpected keys ['decoder_layer.extra.weight']" in msg


def test_from_pretrained_strict_shape_mismatch(release_dir, tmp_path):
    _copy_release(release_dir, tmp_path)
    state = torch.load(tmp_path / "model_state.pt", map_location="cpu", weights_only=True)
    state["decoder_layer.token_basis_layer.weight"] = torch.zeros(128, 128, 8)
    torch.save(state, tmp_path / "model_state.pt")
    with pytest.raises(FormatError, match=r"kernels.weight: expected \(128, 128, 10\), "
                                          r"found \(128, 128, 8\)"):
        MEGGPTTokenizer.from_pretrained(tmp_path)


def test_from_pretrained_refuses_code_in_vocab_pickle(release_dir, tmp_path):
    _copy_release(release_dir, tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps({"label_map": Evil()}))
    with pytest.raises(FormatError, match=r"refusing to unpickle the global builtins\.print"):
        MEGGPTTokenizer.from_pretrained(tmp_path)


def test_from_pretrained_missing_file_and_bad_vocab(release_dir, tmp_path):
    _copy_release(release_dir, tmp_path)
    (tmp_path / "model_state.pt").unlink()
    with pytest.raises(FormatError, match=r"model_state\.pt: missing"):
        MEGGPTTokenizer.from_pretrained(tmp_path)
    _copy_release(release_dir, tmp_path)
    with open(release_dir / "vocab.pkl", "rb") as fh:
        from neurofm.io._pickle import restricted_load

        vocab = restricted_load(fh)
    vocab["label_map"] = vocab["label_map"][:100]
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(vocab))
    with pytest.raises(FormatError, match=r"label_map must have shape \(128,\)"):
        MEGGPTTokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- bad input

def test_bad_input_raises_data_error(released):
    x = np.random.default_rng(0).standard_normal((4, 300))
    with pytest.raises(DataError, match=r"shape \(C, T\) or \(B, C, T\)"):
        released.encode(x[0])
    bad = x.copy()
    bad[1, 7] = np.nan
    with pytest.raises(DataError, match="1 non-finite"):
        released.encode(bad)
    with pytest.raises(DataError, match="at least 200 time samples"):
        released.encode(x[:, :150])
    with pytest.raises(DataError, match=r"must lie in \[0, 65\]"):
        released.decode(np.full((4, 300), 66))
    with pytest.raises(DataError, match="must be integers"):
        released.decode(np.zeros((4, 300)))
    fixed = MEGGPTTokenizer.from_pretrained(released_dir_of(released), n_channels=52)
    with pytest.raises(DataError, match="must have 52 channels"):
        fixed.encode(x)


def released_dir_of(_tok):
    from tokenizer_helpers import RELEASE

    return RELEASE


# ---------------------------------------------------------------------- tiling, schedule

@pytest.mark.parametrize(("n", "L", "expected"), [
    (200, 200, [0]), (400, 200, [0, 200]), (537, 200, [0, 200, 337]), (201, 200, [0, 1]),
])
def test_window_starts_tile_like_reference(n, L, expected):
    assert window_starts(n, L) == expected


def test_annealed_temperature_stages():
    # release callback: 20 stages over 20 epochs, 1.0 -> 1e-3
    taus = [annealed_temperature(e, 20, 20) for e in range(25)]
    np.testing.assert_allclose(taus[:20], np.linspace(1.0, 1e-3, 20))
    assert taus[20:] == [taus[19]] * 5
    # 4 stages over 10 epochs: 2 epochs per stage, the last stage runs to the end
    taus = [annealed_temperature(e, 10, 4, 1.0, 0.0) for e in range(10)]
    np.testing.assert_allclose(taus, [1, 1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0])


# ------------------------------------------------------------------------------ vocabulary

def _untrained(seed=0, **kw):
    tok = MEGGPTTokenizer(n_tokens=32, rnn_units=16, sequence_length=50, **kw)
    torch.manual_seed(seed)
    tok.net_ = tok._build_net().eval()
    return tok


def test_refactor_vocab_invariants():
    rng = np.random.default_rng(3)
    data = [meg_like(rng, 3, 400), meg_like(rng, 5, 260)]
    tok = _untrained().refactor_vocab(data)
    v = tok.vocab_
    raw = [tok._raw_tokens(torch.from_numpy(d)[None])[0].numpy() for d in data]
    counts = np.stack([np.bincount(r.ravel(), minlength=32) for r in raw])
    used = np.flatnonzero(counts.sum(0))
    # exactly the used raw ids, by decreasing total count
    assert sorted(v["token_order"]) == list(used)
    assert np.all(np.diff(v["total_token_counts"]) <= 0)
    np.testing.assert_array_equal(v["token_counts"], counts[:, v["token_order"]])
    assert v["total_token_counts"].sum() == 3 * 400 + 5 * 260
    # label map: 1..K for used ids, 0 for the rest; 0 never produced by encode
    np.testing.assert_array_equal(v["label_map"][v["token_order"]], np.arange(1, used.size + 1))
    assert np.all(v["label_map"][np.setdiff1d(np.arange(32), used)] == 0)
    assert tok.vocab_size == used.size + 1
    tokens = tok.encode(data[0])
    assert tokens.min() >= 1 and tokens.max() <= used.size
    np.testing.assert_array_equal(tokens, v["label_map"][raw[0]])
    # id 1 is the most frequent refactored id
    freq = np.bincount(np.concatenate([tok.encode(d).ravel() for d in data]))
    assert np.argmax(freq) == 1


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    data = meg_like(rng, 4, 300)
    tok = _untrained(seed=2).refactor_vocab(data)
    tok.save(tmp_path / "tok")
    back = load(tmp_path / "tok")
    assert isinstance(back, MEGGPTTokenizer)
    for key in tok.vocab_:
        np.testing.assert_array_equal(back.vocab_[key], tok.vocab_[key])
    for key, value in tok.net_.state_dict().items():
        torch.testing.assert_close(back.net_.state_dict()[key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(back.encode(data), tok.encode(data))
    np.testing.assert_array_equal(back.decode(tok.encode(data)), tok.decode(tok.encode(data)))
    # a saved tokenizer of another class is refused by name
    from neurofm.tokenizers import QuantileTokenizer

    with pytest.raises(FormatError, match="holds a MEGGPTTokenizer, not a QuantileTokenizer"):
        QuantileTokenizer.load(tmp_path / "tok")


def test_saved_weights_strict(tmp_path):
    tok = _untrained().refactor_vocab(meg_like(np.random.default_rng(0), 2, 100))
    tok.save(tmp_path)
    state = torch.load(tmp_path / "weights.pt", map_location="cpu", weights_only=True)
    state.pop("proj.bias")
    torch.save(state, tmp_path / "weights.pt")
    with pytest.raises(FormatError, match=r"missing keys \['proj.bias'\]"):
        load(tmp_path)


def test_unfitted_raises():
    with pytest.raises(NeurofmError, match="not fitted"):
        MEGGPTTokenizer().encode(np.zeros((2, 300)))


# -------------------------------------------------------------------------------- training

def test_training_loss_falls_and_temperature_anneals():
    rng = np.random.default_rng(0)
    data = meg_like(rng, 3, 500)
    tok = MEGGPTTokenizer(n_tokens=16, rnn_units=16, sequence_length=50, token_dim=6)
    val_data = meg_like(rng, 1, 200)
    tok.fit(data, val_data=val_data, max_epochs=4, batch_size=8, lr=1e-2, n_stages=2, seed=1)
    losses = [row["train_loss"] for row in tok.history_]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    assert [row["train_temperature"] for row in tok.history_] == pytest.approx(
        [1.0, 1.0, 1e-3, 1e-3])
    last = tok.history_[-1]
    # validation (one batch) runs the final network with hard tokens
    windows = tok.windows(val_data)
    with torch.no_grad():
        x_hat, _ = tok.net_.eval()(windows)
    assert last["val_pve"] == pytest.approx(pve(windows, x_hat), abs=1e-3)
    assert last["val_loss"] == pytest.approx(float(((windows - x_hat) ** 2).mean()), rel=1e-4)
    assert last["train_pve"] > tok.history_[0]["train_pve"]
    assert 2 <= tok.vocab_size <= 17
    assert tok.encode(data).shape == data.shape


def test_training_is_seeded():
    data = meg_like(np.random.default_rng(0), 2, 300)
    kw = {"max_epochs": 1, "batch_size": 8, "lr": 1e-2, "seed": 5}
    a = MEGGPTTokenizer(n_tokens=8, rnn_units=8, sequence_length=50).fit(data, **kw)
    b = MEGGPTTokenizer(n_tokens=8, rnn_units=8, sequence_length=50).fit(data, **kw)
    np.testing.assert_array_equal(a.encode(data), b.encode(data))


@pytest.mark.slow
def test_trained_from_scratch_reaches_90_pve_on_held_out(spkit_eeg):
    """Real EEG (spkit, 128 Hz) + generated oscillations; held out: later EEG, new channels."""
    eeg = spkit_eeg["signal"].values  # (14, 2048)
    rng = np.random.default_rng(0)
    train = [eeg[:, :1536], meg_like(rng, 16, 3000)]
    tok = MEGGPTTokenizer(n_tokens=64, rnn_units=64, sequence_length=100, token_dim=10)
    tok.fit(train, max_epochs=22, n_annealing_epochs=18, n_stages=9, batch_size=32, lr=1e-3,
            seed=0)
    pve_eeg = tok.pve(eeg[:, 1536:])
    pve_gen = tok.pve(meg_like(np.random.default_rng(1), 8, 1000))
    assert pve_eeg >= 90.0 and pve_gen >= 90.0, (pve_eeg, pve_gen)


def test_pretrained_without_token_bias_loads_and_round_trips(release_dir, tmp_path):
    (tmp_path / "rel").mkdir()
    _copy_release(release_dir, tmp_path / "rel")
    cfg = (tmp_path / "rel" / "config.yaml").read_text()
    (tmp_path / "rel" / "config.yaml").write_text(
        cfg.replace("  token_kernel_padding: causal", "  token_kernel_padding: causal\n"
                    "  token_kernel_bias: false"))
    with pytest.raises(FormatError, match=r"unexpected keys \['kernels.bias'\]"):
        MEGGPTTokenizer.from_pretrained(tmp_path / "rel")
    state = torch.load(tmp_path / "rel" / "model_state.pt", map_location="cpu",
                       weights_only=True)
    bias = state.pop("decoder_layer.token_basis_layer.bias")
    torch.save(state, tmp_path / "rel" / "model_state.pt")
    tok = MEGGPTTokenizer.from_pretrained(tmp_path / "rel")
    assert tok.net_.kernels.bias is None
    full = MEGGPTTokenizer.from_pretrained(release_dir)
    tokens = np.ones((2, 30), dtype=np.int64)
    np.testing.assert_allclose(tok.decode(tokens) + float(bias.sum()), full.decode(tokens),
                               atol=1e-5)
    tok.save(tmp_path / "saved")
    np.testing.assert_array_equal(load(tmp_path / "saved").decode(tokens), tok.decode(tokens))
