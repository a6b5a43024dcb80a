"""Generation: sampler semantics, KV cache == no cache, window schedule, recordings, spectra."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy.signal import welch

from neurofm.errors import DataError, NeurofmError
from neurofm.models import MEGGPT, generate, generate_tokens, sample_logits
from neurofm.models.meggpt import POSITIONS
from neurofm.schema import history, make_recording, validate
from neurofm.tokenizers import MuLawTokenizer, QuantileTokenizer

V, C, CTX = 17, 3, 12
SF = 250.0


def small(position="learned", channel_attention=False, **kw):
    vocab = kw.pop("vocab_size", V)
    cfg = {"context": CTX, "loss_last": 4, "d_model": 32, "n_layers": 2, "n_heads": 4,
           "d_ff": 64, "dropout": 0.0, "position": position,
           "channel_attention": channel_attention}
    cfg.update(kw)
    torch.manual_seed(0)
    return MEGGPT(vocab, C, **cfg)


# ----------------------------------------------------------------------------- sampler
def _logits(n=1):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    return probs.log().expand(n, 4).clone()


def test_greedy_settings_take_the_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g)
    best = logits.argmax(-1)
    assert torch.equal(sample_logits(logits, top_k=1, generator=g), best)
    assert torch.equal(sample_logits(logits, temperature=0.0, generator=g), best)
    assert torch.equal(sample_logits(logits, top_p=1e-6, generator=g), best)


def test_sampling_frequencies_follow_temperature_top_k_top_p():
    n = 40_000
    g = torch.Generator().manual_seed(0)

    def freqs(**kw):
        draws = sample_logits(_logits(n), generator=g, **kw)
        return np.bincount(draws.numpy(), minlength=4) / n

    np.testing.assert_allclose(freqs(), [0.5, 0.3, 0.15, 0.05], atol=0.01)
    # temperature 0.5 squares the probabilities (renormalized)
    sq = np.array([0.5, 0.3, 0.15, 0.05]) ** 2
    np.testing.assert_allclose(freqs(temperature=0.5), sq / sq.sum(), atol=0.01)
    np.testing.assert_allclose(freqs(top_k=2), [0.625, 0.375, 0, 0], atol=0.01)
    # nucleus: 0.5 < 0.7 so token 1 is needed; 0.5 + 0.3 reaches 0.7 -> {0, 1}
    np.testing.assert_allclose(freqs(top_p=0.7), [0.625, 0.375, 0, 0], atol=0.01)
    np.testing.assert_allclose(freqs(top_p=0.5), [1, 0, 0, 0])  # 0.5 alone reaches 0.5
    np.testing.assert_allclose(freqs(top_p=0.9), [0.5, 0.3, 0.15, 0] / np.float64(0.95),
                               atol=0.01)
    np.testing.assert_allclose(freqs(top_k=3, top_p=0.7), [0.625, 0.375, 0, 0], atol=0.01)


def test_sampling_is_reproducible_for_a_seed():
    logits = torch.randn(200, 9, generator=torch.Generator().manual_seed(1))
    a = sample_logits(logits, generator=torch.Generator().manual_seed(5))
    b = sample_logits(logits, generator=torch.Generator().manual_seed(5))
    c = sample_logits(logits, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(("kw", "match"), [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
])
def test_bad_sampling_arguments(kw, match):
    with pytest.raises(NeurofmError, match=match):
        sample_logits(_logits(), **kw)
    with pytest.raises(NeurofmError, match=match):
        generate_tokens(small(), n_steps=2, **kw)


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("channel_attention", [False, True])
def test_cache_generation_equals_uncached(position, channel_attention):
    model = small(position, channel_attention, n_sessions=2)
    prompt = torch.randint(0, V, (2, 15, C), generator=torch.Generator().manual_seed(0))
    kw = {"n_steps": 30, "seed": 3, "session": torch.tensor([1, 0]), "return_logits": True}
    a, la = generate_tokens(model, prompt, use_cache=True, **kw)
    b, lb = generate_tokens(model, prompt, use_cache=False, **kw)
    assert a.shape == (2, 30, C)
    assert torch.equal(a, b)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-5)
    assert len(torch.unique(a)) > 5  # sampled, not stuck on one token


def test_window_schedule_and_stride():
    """Each step's logits come from the documented window of the sequence so far."""
    model = small().eval()
    prompt = torch.randint(0, V, (1, 10, C), generator=torch.Generator().manual_seed(0))
    for stride in (1, 4):
        toks, logits = generate_tokens(model, prompt, n_steps=20, seed=0, stride=stride,
                                       return_logits=True)
        seq = torch.cat([prompt, toks], dim=1)
        start = 0
        for i in range(20):
            t = 10 + i
            while t - start > CTX:
                start += stride
            assert CTX - stride < t - start <= CTX or t <= CTX
            with torch.no_grad():
                expected = model(seq[:, start:t])[:, -1]
            torch.testing.assert_close(logits[:, i], expected, rtol=0, atol=1e-5)
        if stride == 1:  # the reference's slide: always the last `context` steps
            with torch.no_grad():
                torch.testing.assert_close(logits[:, -1], model(seq[:, -CTX - 1:-1])[:, -1],
                                           rtol=0, atol=1e-5)


def test_generation_is_deterministic_and_restores_mode():
    model = small().train()
    a = generate_tokens(model, n_steps=20, seed=7, batch_size=2)
    b = generate_tokens(model, n_steps=20, seed=7, batch_size=2)
    c = generate_tokens(model, n_steps=20, seed=8, batch_size=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # independent sequences
    assert model.training  # put back in training mode
    greedy = generate_tokens(model, n_steps=10, seed=1, top_k=1)  # same random prompt
    assert torch.equal(greedy, generate_tokens(model, n_steps=10, seed=1, temperature=0.0))
    assert len(torch.unique(greedy)) > 1


def test_random_prompt_follows_token_weights():
    model = small()
    weights = np.zeros(V)
    weights[[2, 5]] = 1.0
    # a model that always predicts token 3: the generated steps are 3, the prompt 2 or 5
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), V) * 50.0)
    toks = generate_tokens(model, n_steps=5, token_weights=weights, stride=CTX)
    assert torch.equal(toks, torch.full_like(toks, 3))
    with pytest.raises(DataError, match="token_weights"):
        generate_tokens(model, n_steps=2, token_weights=np.ones(3))


def test_short_prompt_warns():
    model = small()
    with pytest.warns(UserWarning, match="positions before"):
        generate_tokens(model, torch.zeros(4, C, dtype=torch.long), n_steps=2)


def test_missing_session_warns():
    """A model with a session embedding predicts without its session term when session is
    None (inputs unlike training): that warns; a given session does not, and changes the
    predictions."""
    model = small(n_sessions=2)
    with torch.no_grad():
        model.session_proj.weight.normal_()
    prompt = torch.zeros(CTX, C, dtype=torch.long)
    with pytest.warns(UserWarning, match="session=None"):
        _, without = generate_tokens(model, prompt, n_steps=2, return_logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, with_session = generate_tokens(model, prompt, n_steps=2, session=1,
                                          return_logits=True)
        generate_tokens(small(), prompt, n_steps=2)  # no session embedding: no warning
    assert (without - with_session).abs().max() > 1e-3


@pytest.mark.parametrize(("kw", "match", "exc"), [
    ({"n_steps": 0}, "n_steps", NeurofmError),
    ({"stride": 0}, "stride", NeurofmError),
    ({"stride": CTX + 1}, "stride", NeurofmError),
    ({"seed": 1.5}, "seed", NeurofmError),
    ({"session": 0}, "session", NeurofmError),
    ({"prompt": np.zeros((5, C))}, "integer", DataError),
    ({"prompt": torch.zeros(5, C + 1, dtype=torch.long)}, "channels", DataError),
    ({"prompt": [1, 2]}, "prompt", NeurofmError),
    ({"prompt": torch.zeros(2, 12, C, dtype=torch.long), "batch_size": 3}, "batch", DataError),
])
def test_bad_generation_arguments(kw, match, exc):
    kw = {"n_steps": 2, **kw}
    with pytest.raises(exc, match=match):
        generate_tokens(small(), **kw)


# ----------------------------------------------------------------------------- recordings
def test_generate_returns_a_recording_with_its_settings():
    model = small(vocab_size=256, n_sessions=2)
    tok = MuLawTokenizer(scale=2.0)
    ds = generate(model, tok, n_steps=40, seed=4, temperature=0.8, top_k=20, top_p=0.95,
                  session=1)
    validate(ds)
    assert ds.signal.shape == (C, 40) and ds.attrs["sfreq"] == SF
    np.testing.assert_allclose(np.diff(ds.time.values), 1 / SF)
    step = history(ds)[-1]
    assert step["step"] == "generate"
    p = step["params"]
    assert (p["n_steps"], p["temperature"], p["top_k"], p["top_p"], p["seed"], p["session"]) \
        == (40, 0.8, 20, 0.95, 4, 1)
    assert p["model_config"] == json.loads(json.dumps(model.config))
    assert (p["tokenizer"], p["prompt"], p["stride"], p["use_cache"]) == \
        ("MuLawTokenizer", "random", 4, True)
    # the signal is the tokenizer's decoding of the generated tokens
    toks = generate_tokens(model, n_steps=40, seed=4, temperature=0.8, top_k=20, top_p=0.95,
                           session=1)
    np.testing.assert_allclose(ds.signal.values, tok.decode(toks[0].T.numpy()), rtol=1e-6)
    again = generate(model, tok, n_steps=40, seed=4, temperature=0.8, top_k=20, top_p=0.95,
                     session=1, use_cache=False)
    np.testing.assert_array_equal(again.signal.values, ds.signal.values)


def test_generate_from_a_recording_prompt():
    model = small(vocab_size=8)
    rng = np.random.default_rng(0)
    rec = make_recording(rng.standard_normal((C, 30)), channel=["a", "b", "c"], sfreq=SF,
                         modality="eeg")
    tok = QuantileTokenizer(n_bins=8).fit(rec.signal.values)
    ds = generate(model, tok, prompt=rec, n_steps=25, seed=0)
    validate(ds)
    assert list(ds.channel.values) == ["a", "b", "c"]
    assert ds.attrs["modality"] == "eeg" and ds.signal.attrs["units"] == "a.u."
    assert list(ds.ch_type.values) == ["eeg"] * 3
    p = history(ds)[-1]["params"]
    assert (p["prompt"], p["prompt_steps"]) == ("recording", 30)
    # same as continuing the tokenized recording
    toks = generate_tokens(model, torch.as_tensor(tok.encode(rec.signal.values)).T,
                           n_steps=25, seed=0)
    np.testing.assert_allclose(ds.signal.values, tok.decode(toks[0].T.numpy()))
    with pytest.raises(DataError, match="sfreq"):
        generate(model, tok, prompt=rec, n_steps=5, sfreq=100.0)
    with pytest.raises(DataError, match="channels"):
        generate(model, tok, prompt=rec.isel(channel=[0, 1]), n_steps=5)
    with pytest.raises(NeurofmError, match="n_channels"):
        generate(model, tok, n_steps=5, n_channels=C + 1)
    with pytest.raises(DataError, match="channel_names"):
        generate(model, tok, n_steps=5, channel_names=["x"])
    with pytest.raises(NeurofmError, match="MEGGPT"):
        generate(object(), tok, n_steps=5)


# ----------------------------------------------------------------------------- spectra
def _bursts(n_ch, n_t, seed, freq=10.0):
    """10 Hz bursts (0.3-1 s on, 0.1-0.5 s off, smoothed edges) plus weak white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_t) / SF
    out = []
    win = np.hanning(25) / np.hanning(25).sum()
    for _ in range(n_ch):
        env, i = np.zeros(n_t), 0
        while i < n_t:
            on, off = int(rng.uniform(0.3, 1.0) * SF), int(rng.uniform(0.1, 0.5) * SF)
            env[i:i + on] = 1.0
            i += on + off
        env = np.convolve(env, win, mode="same")
        phase = rng.uniform(0, 2 * np.pi)
        out.append(env * np.sin(2 * np.pi * freq * t + phase) + 0.1 * rng.standard_normal(n_t))
    return np.array(out)


def _train(tok, x, *, steps, context=50, d_model=32, seed=0):
    toks = torch.as_tensor(np.asarray(tok.encode(x))).T.contiguous()  # (T, C)
    torch.manual_seed(seed)
    model = MEGGPT(tok.vocab_size, x.shape[0], context=context, loss_last=16, d_model=d_model,
                   n_layers=2, n_heads=4, d_ff=2 * d_model, dropout=0.0)
    opt = torch.optim.AdamW(model.optim_groups(0.01), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, toks.shape[0] - context - 1, (32,), generator=g).tolist()
        loss, _ = model.loss(torch.stack([toks[s:s + context + 1] for s in starts]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _peaks(x, nperseg=250):
    f, p = welch(x, fs=SF, nperseg=nperseg)
    return f[p.argmax(-1)], p


@pytest.fixture(scope="module")
def rhythm():
    x = _bursts(2, 250 * 40, seed=0)
    return x, QuantileTokenizer(n_bins=32, standardize=True).fit(x)


@pytest.mark.parametrize("steps", [0, 150])
def test_trained_model_generates_the_training_rhythm(rhythm, steps):
    """A model trained on 10 Hz bursts generates a signal whose PSD peaks within 1 Hz of the
    data's peak; an untrained model does not (its tokens are close to white noise)."""
    x, tok = rhythm
    model = _train(tok, x, steps=steps)
    prompt = make_recording(x[:, :50], channel=["a", "b"], sfreq=SF, modality="meg")
    ds = generate(model, tok, prompt=prompt, n_steps=1000, seed=0)
    f_data, _ = _peaks(tok.normalize(x))
    f_gen, p_gen = _peaks(ds.signal.values)
    np.testing.assert_allclose(f_data, 10.0)
    if steps:
        assert np.all(np.abs(f_gen - f_data) <= 1.0), f_gen
        assert np.all(p_gen.max(-1) > 20 * np.median(p_gen, axis=-1))  # a real peak
    else:
        assert np.all(np.abs(f_gen - f_data) > 1.0), f_gen


@pytest.mark.slow
def test_mulaw_model_generates_the_training_rhythm_and_spectrum():
    """Slow version: mu-law tokens (V = 256), longer training and generation, 0.5 Hz grid,
    and the whole log-spectrum up to 40 Hz correlates with the data's."""
    x = _bursts(2, 250 * 60, seed=1)
    tok = MuLawTokenizer(standardize=True).fit(x)
    model = _train(tok, x, steps=600, d_model=64, seed=1)
    prompt = make_recording(x[:, :50], channel=["a", "b"], sfreq=SF, modality="meg")
    ds = generate(model, tok, prompt=prompt, n_steps=4000, seed=1)
    f_data, p_data = _peaks(tok.normalize(x), nperseg=500)
    f_gen, p_gen = _peaks(ds.signal.values, nperseg=500)
    assert np.all(np.abs(f_gen - f_data) <= 0.5), (f_gen, f_data)
    band = slice(2, 81)  # 1-40 Hz
    r = [np.corrcoef(np.log(p_data[i, band]), np.log(p_gen[i, band]))[0, 1] for i in range(2)]
    assert min(r) > 0.7, r


def test_cached_generation_under_bf16_autocast():
    """A float32 cache under bf16 autocast: the attention reads it in the queries' dtype."""
    model = small()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = generate_tokens(model, n_steps=20, seed=0)
        b = generate_tokens(model, n_steps=20, seed=0, use_cache=False)
    assert a.shape == (1, 20, C) and int(a.min()) >= 0 and int(a.max()) < V
    assert (a == b).float().mean() > 0.9  # bf16 rounding may flip a rare draw


def test_generate_with_the_released_tokenizer():
    """The MEG-GPT tokenizer: random prompts follow its token counts (weight 0 for the reserved
    id 0), and the stream is decoded in one overlap-add (no window edges)."""
    from pathlib import Path

    from neurofm.models.generation import _tokenizer_weights
    from neurofm.tokenizers import MEGGPTTokenizer

    tok = MEGGPTTokenizer.from_pretrained(Path(__file__).parents[1] / "data" / "meg-gpt-tokenizer")
    assert tok.vocab_size == 66
    weights = _tokenizer_weights(tok, 66)
    assert weights[0] == 0 and np.array_equal(weights[1:], tok.vocab_["total_token_counts"])
    assert _tokenizer_weights(tok, 67) is None and _tokenizer_weights(MuLawTokenizer(), 5) is None
    model = small(vocab_size=66, context=40, loss_last=8)
    ds = generate(model, tok, n_steps=250, seed=0, top_k=10)
    validate(ds)
    assert history(ds)[-1]["params"]["decode"] == {"windowed": False}
    toks = generate_tokens(model, n_steps=250, seed=0, top_k=10, token_weights=weights)
    np.testing.assert_allclose(ds.signal.values,
                               tok.decode(toks[0].T.numpy(), windowed=False), rtol=1e-6)
