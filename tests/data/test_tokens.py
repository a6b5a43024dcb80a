"""Token windows of a store: on the fly and cached give the same tokens, the cache notices
changes, the MEG-GPT tokenizer refuses other rates, sessions and collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurofm.data.tokens import (
    TokenWindowDataset,
    fit_tokenizer,
    pack_tokenizer,
    tokenizer_fingerprint,
    unpack_tokenizer,
)
from neurofm.errors import DataError, NeurofmError
from neurofm.schema import make_recording
from neurofm.store import open_store, write_store
from neurofm.tokenizers import MEGGPTTokenizer, MuLawTokenizer, QuantileTokenizer

RELEASE = Path(__file__).resolve().parent / "meg-gpt-tokenizer"
CHANNELS = [f"P{i:02d}" for i in range(4)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rhythm(n_times, seed, sfreq=250.0, n_ch=4):
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / sfreq
    x = rng.standard_normal((n_ch, n_times)) * 0.5
    x += 2.0 * np.sin(2 * np.pi * (8 + seed) * t + rng.uniform(0, 6, (n_ch, 1)))
    return (x * (1 + seed) + 3 * seed).astype(np.float32)  # scale / offset per session


def _store(path, lengths=(1130, 777, 640), sfreq=250.0):
    recs = [make_recording(_rhythm(n, k, sfreq), channel=CHANNELS, sfreq=sfreq, modality="meg",
                           ch_type="misc", subject=f"{k:02d}")
            for k, n in enumerate(lengths)]
    return write_store(recs, path, splits=["train", "train", "val"][:len(lengths)])


@pytest.fixture(scope="module")
def released():
    return MEGGPTTokenizer.from_pretrained(RELEASE)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("tok") / "store")


def _all(ds):
    return torch.stack([ds[i]["tokens"] for i in range(len(ds))])


def test_on_the_fly_equals_cached_equals_whole_recording(store, released, tmp_path):
    # windows of 101 samples with stride 37 cross the GRU tiles (200) and the tile anchored at
    # the end of 1130- and 777-sample recordings
    kw = {"window_samples": 101, "stride_samples": 37, "split": None}
    fly = TokenWindowDataset(store, released, **kw)
    cached = TokenWindowDataset(store, released, cache_dir=tmp_path / "cache", **kw)
    a, b = _all(fly), _all(cached)
    assert a.shape == (len(fly), 101, 4) and a.dtype == torch.int64
    assert torch.equal(a, b)
    # both equal the tokenizer on the whole recording (the reference's tokenize_session)
    for i in (0, len(fly) // 2, len(fly) - 1):
        rec, start, n = fly.window_info(i)
        x = store.read_window(rec, 0, int(store.manifest.set_index("id").loc[rec, "n_times"]))
        whole = released.encode(x)  # (C, T): z-scored over the recording inside
        np.testing.assert_array_equal(a[i].numpy().T, whole[:, start:start + n])
    assert int(a.min()) >= 1 and int(a.max()) < released.vocab_size


def test_worker_processes_give_the_same_tokens(store, released, tmp_path):
    from torch.utils.data import DataLoader

    ds = TokenWindowDataset(store, released, window_samples=101, stride_samples=90,
                            split=None, cache_dir=tmp_path / "cache")
    fly = TokenWindowDataset(store, released, window_samples=101, stride_samples=90,
                             split=None)
    for data in (ds, fly):
        batches = list(DataLoader(data, batch_size=5, num_workers=2))
        tokens = torch.cat([b["tokens"] for b in batches])
        assert torch.equal(tokens, _all(ds))
    b = batches[0]
    assert b["tokens"].shape == (5, 101, 4)
    assert b["session"].dtype == torch.int64 and len(b["recording"]) == 5


def test_sessions_are_recording_indices_across_splits(store, released):
    train = TokenWindowDataset(store, released, window_samples=101, split="train")
    val = TokenWindowDataset(store, released, window_samples=101, split="val")
    assert train.session_ids == val.session_ids == store.ids
    sessions = {train[i]["recording"]: train[i]["session"] for i in range(len(train))}
    assert sessions == {store.ids[0]: 0, store.ids[1]: 1}
    assert {val[i]["session"] for i in range(len(val))} == {2}
    none = TokenWindowDataset(store, released, window_samples=101, sessions=False)
    assert none[0]["session"] == -1
    with pytest.raises(DataError, match="not in the session table"):
        TokenWindowDataset(store, released, window_samples=101, sessions=[store.ids[0]])
    # per-session token counts over whole recordings (session embedding initialization)
    counts = train.token_counts()
    assert counts.shape == (3, released.vocab_size)
    for k, rec in enumerate(store.ids[:2]):
        n = int(store.manifest.set_index("id").loc[rec, "n_times"])
        want = np.bincount(train.tokens(rec, 0, n).reshape(-1), minlength=released.vocab_size)
        np.testing.assert_array_equal(counts[k], want)
    assert counts[2].sum() == 0 and counts[0].sum() == 4 * 1130


def test_cache_notices_a_changed_recording_and_tokenizer(tmp_path, released):
    st = _store(tmp_path / "store", lengths=(700, 650))
    cache = tmp_path / "cache"
    rec0, rec1 = st.ids
    first = TokenWindowDataset(st, released, window_samples=101, split=None, cache_dir=cache)
    before = first.tokens(rec0, 0, 700)
    folders = list(cache.iterdir())
    assert len(folders) == 1 and len(list(folders[0].glob("*.npy"))) == 2
    # the recording is rewritten with other values: the write token changes
    new = make_recording(_rhythm(700, 5), channel=CHANNELS, sfreq=250.0, modality="meg",
                         ch_type="misc", subject="00")
    st.add(new, id=rec0, split="train", overwrite=True)
    st = open_store(st.path)
    again = TokenWindowDataset(st, released, window_samples=101, split=None, cache_dir=cache)
    after = again.tokens(rec0, 0, 700)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, released.encode(st.read_window(rec0, 0, 700)))
    # another tokenizer gets its own folder and its own tokens
    mulaw = MuLawTokenizer(mu=15, scale=4.0, standardize=True)
    third = TokenWindowDataset(st, mulaw, window_samples=101, split=None, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    x = st.read_window(rec1, 0, 650)
    np.testing.assert_array_equal(third.tokens(rec1, 0, 650), mulaw.encode(x))
    assert tokenizer_fingerprint(mulaw) != tokenizer_fingerprint(
        MuLawTokenizer(mu=15, scale=5.0, standardize=True))


def test_released_tokenizer_refuses_other_rates(tmp_path, released):
    st = _store(tmp_path / "store", lengths=(600,), sfreq=150.0)
    with pytest.raises(DataError, match=r"150 Hz; the MEGGPTTokenizer expects 250 Hz"):
        TokenWindowDataset(st, released, window_samples=101, split=None)
    ds = TokenWindowDataset(st, released, window_samples=101, split=None, sfreq=None)
    assert len(ds) == 5


def test_baseline_tokenizers_fit_on_train_and_tokenize(store, tmp_path):
    q = fit_tokenizer(QuantileTokenizer(n_bins=16), store, split="train")
    ds = TokenWindowDataset(store, q, window_samples=50, split="val", return_signal=True)
    s = ds[3]
    # z-scored over the whole recording, then binned by the training quantiles
    rec, start, n = ds.window_info(3)
    x = store.read_window(rec, 0, 640)
    z = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    np.testing.assert_allclose(s["signal"].numpy(), z[:, start:start + n], atol=1e-5)
    np.testing.assert_array_equal(s["tokens"].numpy().T, q.encode(x)[:, start:start + n])
    counts = np.bincount(_all(TokenWindowDataset(store, q, window_samples=50)).reshape(-1),
                         minlength=16)
    assert counts.min() > 0.5 * counts.mean()  # equal-count bins on the training data
    with pytest.raises(NeurofmError, match="not fitted"):
        TokenWindowDataset(store, QuantileTokenizer(n_bins=8), window_samples=50)


def test_pack_unpack_tokenizer_round_trip(released):
    packed = pack_tokenizer(released)
    back = unpack_tokenizer(packed)
    assert tokenizer_fingerprint(back) == tokenizer_fingerprint(released)
    x = _rhythm(400, 1)
    np.testing.assert_array_equal(back.encode(x), released.encode(x))
