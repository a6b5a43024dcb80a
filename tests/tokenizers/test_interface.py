"""Every tokenizer: encode/decode shapes and dtypes (hypothesis), array kinds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tokenizer_helpers import meg_like

from neurofm.errors import DataError
from neurofm.tokenizers import (
    REGISTRY,
    MEGGPTTokenizer,
    MuLawTokenizer,
    PatchTokenizer,
    QuantileTokenizer,
    VQTokenizer,
    load,
)


def _fitted():
    rng = np.random.default_rng(0)
    train = meg_like(rng, 3, 400)
    torch.manual_seed(0)
    meg = MEGGPTTokenizer(n_tokens=12, rnn_units=8, sequence_length=20, token_dim=4)
    meg.net_ = meg._build_net().eval()
    meg.refactor_vocab(train)
    vq = VQTokenizer(n_fft=16, hop=8, n_freq=8, freq_patch=4, dim=8, depth=1, heads=2,
                     codebook_size=16)
    vq.net_ = vq._build_net().eval()
    return {
        "mulaw": MuLawTokenizer(mu=63, standardize=True).fit(train),
        "quantile": QuantileTokenizer(n_bins=32).fit(train),
        "meggpt": meg,
        "vq": vq,
        "patch": PatchTokenizer(patch_size=4, d_model=4),
    }


TOKENIZERS = _fitted()
DISCRETE = ["mulaw", "quantile", "meggpt"]


def test_registry_lists_every_tokenizer():
    assert set(REGISTRY) == {"MuLawTokenizer", "QuantileTokenizer", "MEGGPTTokenizer",
                             "VQTokenizer", "PatchTokenizer"}


signals = st.tuples(st.booleans(), st.integers(1, 3), st.integers(1, 4), st.integers(6, 12),
                    st.integers(0, 2**31 - 1))


@given(spec=signals, name=st.sampled_from(DISCRETE))
def test_per_sample_tokens_have_the_signal_shape(spec, name):
    batched, B, C, n4, seed = spec
    T = 4 * n4 + 20  # >= sequence_length of the small MEG-GPT tokenizer
    tok = TOKENIZERS[name]
    x = np.random.default_rng(seed).standard_normal((B, C, T) if batched else (C, T))
    tokens = tok.encode(x)
    assert tokens.shape == x.shape and tokens.dtype == np.int64
    assert tokens.min() >= 0 and tokens.max() < tok.vocab_size
    x_hat = tok.decode(tokens)
    assert x_hat.shape == x.shape and x_hat.dtype == np.float32
    assert np.isfinite(x_hat).all()
    # tensor in, tensor out, same values
    t_tokens = tok.encode(torch.from_numpy(x))
    assert isinstance(t_tokens, torch.Tensor) and t_tokens.dtype == torch.long
    np.testing.assert_array_equal(t_tokens.numpy(), tokens)
    t_hat = tok.decode(t_tokens)
    assert isinstance(t_hat, torch.Tensor) and t_hat.dtype == torch.float32
    np.testing.assert_allclose(t_hat.numpy(), x_hat, atol=1e-6)


@given(spec=signals)
def test_vq_and_patch_shapes(spec):
    batched, B, C, n4, seed = spec
    T = 4 * n4 + 16
    x = np.random.default_rng(seed).standard_normal((B, C, T) if batched else (C, T))
    lead = (B, C) if batched else (C,)
    vq = TOKENIZERS["vq"]
    tokens = vq.encode(x)
    assert tokens.shape == (*lead, vq.n_frames(T)) and tokens.dtype == np.int64
    spec_hat = vq.decode(tokens)
    assert spec_hat.shape == (*lead, 8, vq.n_frames(T)) and spec_hat.dtype == np.float32
    patch = TOKENIZERS["patch"]
    e = patch.encode(x)
    assert e.shape == (*lead, T // 4, 4) and e.dtype == np.float32
    assert patch.decode(e).shape == x.shape


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_bad_input_raises_data_error(name):
    tok = TOKENIZERS[name]
    x = np.random.default_rng(0).standard_normal((2, 40))
    for bad_rank in (x[0], x[None, None]):
        with pytest.raises(DataError, match=r"shape \(C, T\) or \(B, C, T\)"):
            tok.encode(bad_rank)
    for value in (np.nan, np.inf):
        bad = x.copy()
        bad[1, 3] = value
        with pytest.raises(DataError, match="non-finite"):
            tok.encode(bad)
    with pytest.raises(DataError, match="real numbers"):
        tok.encode(np.array([["a", "b"]]))


def test_fixed_channel_tokenizer_rejects_other_counts():
    tok = MEGGPTTokenizer(n_tokens=8, rnn_units=4, sequence_length=20, n_channels=3)
    with pytest.raises(DataError, match=r"data\[0\] must have 3 channels"):
        tok.fit(np.zeros((4, 40)))
    tok.net_ = tok._build_net().eval()
    tok.refactor_vocab(np.random.default_rng(0).standard_normal((3, 40)))
    with pytest.raises(DataError, match="must have 3 channels"):
        tok.encode(np.zeros((2, 3 + 1, 40)))


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_save_load_gives_the_same_tokens(name, tmp_path):
    tok = TOKENIZERS[name]
    x = meg_like(np.random.default_rng(5), 2, 64)
    tok.save(tmp_path)
    back = load(tmp_path)
    assert type(back) is type(tok)
    np.testing.assert_array_equal(back.encode(x), tok.encode(x))


def test_canonical_dataset_input_reads_its_signal(spkit_eeg):
    tok = TOKENIZERS["quantile"]
    np.testing.assert_array_equal(tok.encode(spkit_eeg), tok.encode(spkit_eeg["signal"].values))
    transposed = spkit_eeg["signal"].transpose("time", "channel")  # dims put back in order
    np.testing.assert_array_equal(tok.encode(transposed), tok.encode(spkit_eeg))


def test_fit_from_a_torch_dataset_of_windows_drops_padded_channels():
    """Items as WindowDataset yields them: dicts with signal (C, T) and channel_mask (C,)."""
    rng = np.random.default_rng(7)
    recs = [meg_like(rng, 3, 300), meg_like(rng, 2, 300)]

    class Windows:  # duck-typed like neurofm.data.WindowDataset
        def __len__(self):
            return 2

        def __getitem__(self, i):
            signal = np.zeros((3, 300), np.float32)
            signal[: recs[i].shape[0]] = recs[i]
            mask = np.arange(3) < recs[i].shape[0]
            return {"signal": torch.from_numpy(signal), "channel_mask": torch.from_numpy(mask)}

    from_dataset = QuantileTokenizer(n_bins=16).fit(Windows())
    from_list = QuantileTokenizer(n_bins=16).fit(recs)
    np.testing.assert_array_equal(from_dataset.edges_, from_list.edges_)
    padded = QuantileTokenizer(n_bins=16).fit([np.concatenate([recs[1], np.zeros((1, 300))])])
    assert not np.array_equal(padded.edges_,
                              QuantileTokenizer(n_bins=16).fit([recs[1]]).edges_)
