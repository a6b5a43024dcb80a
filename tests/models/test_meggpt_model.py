"""MEGGPT: causality in time, channel independence, KV cache, training, sessions, checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurofm.errors import DataError, NeurofmError
from neurofm.models import MEGGPT
from neurofm.models.meggpt import POSITIONS, RotaryEmbedding, count_flops

V, C, CTX = 13, 3, 12
GRID = [(p, ca) for p in POSITIONS for ca in (False, True)]


def small(position="learned", channel_attention=False, **kw):
    cfg = {"context": CTX, "loss_last": 4, "d_model": 32, "n_layers": 2, "n_heads": 4,
           "d_ff": 64, "dropout": 0.0, "position": position,
           "channel_attention": channel_attention}
    cfg.update(kw)
    torch.manual_seed(0)
    return MEGGPT(V, C, **cfg).eval()


def tokens(b=2, length=CTX, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, length, C), generator=g)


@pytest.mark.parametrize(("position", "channel_attention"), GRID)
def test_future_token_never_changes_earlier_logits(position, channel_attention):
    model = small(position, channel_attention)
    x = tokens()
    with torch.no_grad():
        base = model(x)
        for t0 in (0, 5, CTX - 1):
            y = x.clone()
            y[:, t0] = (y[:, t0] + 1 + torch.arange(C)) % V  # every channel changes at t0
            out = model(y)
            torch.testing.assert_close(out[:, :t0], base[:, :t0], rtol=0, atol=1e-6)
            assert (out[:, t0:] - base[:, t0:]).abs().amax() > 1e-3  # the change is seen


@pytest.mark.parametrize("position", POSITIONS)
def test_channels_independent_without_channel_attention(position):
    x = tokens()
    y = x.clone()
    y[:, :, 1] = (y[:, :, 1] + 3) % V  # channel 1 changes at every time step
    with torch.no_grad():
        model = small(position, channel_attention=False)
        a, b = model(x), model(y)
        torch.testing.assert_close(b[:, :, [0, 2]], a[:, :, [0, 2]], rtol=0, atol=1e-6)
        assert (b[:, :, 1] - a[:, :, 1]).abs().amax() > 1e-3
        mixed = small(position, channel_attention=True)  # the same edit reaches channel 0
        assert (mixed(y)[:, :, 0] - mixed(x)[:, :, 0]).abs().amax() > 1e-3


def test_head_shared_across_channels():
    """The same tokens in two channels differ only through the channel embedding."""
    model = small()
    x = tokens(b=1)
    x[..., 1] = x[..., 0]
    with torch.no_grad():
        out = model(x)
        assert (out[..., 0, :] - out[..., 1, :]).abs().amax() > 1e-4
        model.chan_embed[1] = model.chan_embed[0]
        out = model(x)
    torch.testing.assert_close(out[..., 1, :], out[..., 0, :], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("position", "channel_attention"), GRID)
def test_cache_steps_equal_full_forward(position, channel_attention):
    model = small(position, channel_attention, n_sessions=3)
    x, s = tokens(), torch.tensor([2, 0])
    with torch.no_grad():
        full = model(x, s)
        cache = model.new_cache(2)
        parts = [model.step(x[:, :5], cache, s), model.step(x[:, 5:6], cache, s),
                 model(x[:, 6:9], s, cache=cache), model.step(x[:, 9:], cache, s)]
    assert cache.length == CTX
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    with pytest.raises(DataError, match="time steps"):
        model.step(x[:, :1], cache, s)  # the cache is full
    cache.reset()
    with torch.no_grad():
        torch.testing.assert_close(model.step(x, cache, s), full, rtol=0, atol=1e-5)
        cache.reset()  # only the last logits, every step's keys/values still cached
        last = model.step(x[:, :7], cache, s, n_last=2)
        torch.testing.assert_close(last, full[:, 5:7], rtol=0, atol=1e-5)
        torch.testing.assert_close(model.step(x[:, 7:], cache, s), full[:, 7:], rtol=0,
                                   atol=1e-5)


def test_last_logits_and_loss_match_full_forward():
    model = small(n_sessions=2)
    x, s = tokens(length=CTX + 1), torch.tensor([1, 0])
    with torch.no_grad():
        full = model(x[:, :-1], s)  # (B, L, C, V)
        torch.testing.assert_close(model.last_logits(x[:, :-1], s, 4), full[:, -4:],
                                   rtol=0, atol=1e-5)
        loss, metrics = model.loss(x, s)
    pred, target = full[:, -4:], x[:, -4:]
    expected = F.cross_entropy(pred.reshape(-1, V), target.reshape(-1))
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-5)
    top1 = (pred.argmax(-1) == target).float().mean()
    top5 = (pred.topk(5, -1).indices == target[..., None]).any(-1).float().mean()
    torch.testing.assert_close(metrics["top1"], top1)
    torch.testing.assert_close(metrics["top5"], top5)
    assert 0 <= float(metrics["top1"]) <= float(metrics["top5"]) <= 1


def test_hidden_states_are_final_norm_features():
    model = small()
    x = tokens()
    with torch.no_grad():
        h = model.hidden_states(x)
        assert h.shape == (2, CTX, C, 32)
        torch.testing.assert_close(model.head(h), model(x), rtol=0, atol=1e-5)
    # LayerNorm output: zero mean, unit variance over the width (unit gain, zero bias)
    torch.testing.assert_close(h.mean(-1), torch.zeros(2, CTX, C), rtol=0, atol=1e-5)


def _periodic_batch(b=8, length=CTX + 1, period=4, seed=0):
    """Each channel repeats a random pattern of ``period`` tokens (fully predictable)."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randint(0, V, (b, period, C), generator=g)
    return pattern.repeat(1, length // period + 1, 1)[:, :length]


@pytest.mark.parametrize("position", POSITIONS)
def test_every_position_kind_trains(position):
    model = small(position, dropout=0.1).train()
    opt = torch.optim.AdamW(model.optim_groups(0.01), lr=1e-2)
    x = _periodic_batch(period=3)
    losses = []
    for _ in range(60):
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:3])


def test_overfit_one_batch():
    model = small("rope", n_sessions=2).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, s = tokens(b=4, length=CTX + 1, seed=3), torch.tensor([0, 1, 0, 1])
    for _ in range(150):
        loss, metrics = model.loss(x, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        loss, metrics = model.loss(x, s)
    assert float(metrics["top1"]) > 0.97
    assert float(loss) < 0.2


def test_session_embedding_init_from_token_counts():
    model = small(n_sessions=3)
    counts = np.zeros((3, V))
    counts[0, :3] = [1, 1, 2]
    counts[2, 5] = 7
    freqs = model.init_session_embedding(counts)
    w = model.session_embed.weight.detach().numpy()
    np.testing.assert_allclose(w[0, :3], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(w[0, 3:], 0)
    np.testing.assert_allclose(w[1], np.full(V, 1 / V), rtol=1e-6)  # no tokens: uniform
    np.testing.assert_allclose(w[2], np.eye(V)[5])
    np.testing.assert_allclose(freqs, w)
    # the session term is session_proj(freqs[s]), added to every position and channel
    x = tokens(b=1)
    with torch.no_grad():
        h0 = model._embed(x, torch.tensor([0]), 0)
        h2 = model._embed(x, torch.tensor([2]), 0)
        shift = model.session_proj(torch.from_numpy(w[2] - w[0]).float())
    torch.testing.assert_close(h2 - h0, shift.expand_as(h0), rtol=0, atol=1e-5)
    with pytest.raises(DataError, match="token_counts"):
        model.init_session_embedding(np.ones((2, V)))
    with pytest.raises(DataError, match="non-negative"):
        model.init_session_embedding(-np.ones((3, V)))
    with pytest.raises(NeurofmError, match="n_sessions=None"):
        small().init_session_embedding(np.ones((3, V)))


def test_rope_depends_on_relative_position_only():
    rope = RotaryEmbedding(8, 50)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)

    def score(i, j):
        return float((rope(q, i) * rope(k, j)).sum())

    assert score(3, 1) == pytest.approx(score(20, 18), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    assert score(0, 0) == pytest.approx(float((q * k).sum()), abs=1e-6)  # angle 0: identity


def test_state_dict_round_trip():
    model = small("rope", channel_attention=True, n_sessions=2)
    model.init_session_embedding(np.arange(2 * V).reshape(2, V))
    buf = io.BytesIO()
    torch.save({"config": model.config, "state_dict": model.state_dict()}, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    clone = MEGGPT.from_config(payload["config"]).eval()
    clone.load_state_dict(payload["state_dict"], strict=True)
    x, s = tokens(), torch.tensor([1, 0])
    with torch.no_grad():
        torch.testing.assert_close(clone(x, s), model(x, s), rtol=0, atol=0)
    assert clone.config == model.config == model.hparams
    assert "rope" not in "".join(model.state_dict())  # tables are rebuilt, not stored


def test_optim_groups_skip_embeddings_norms_biases():
    model = small(n_sessions=2)
    decay, no_decay = model.optim_groups(0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert {"token_embed.weight", "session_embed.weight", "pos_embed", "chan_embed",
            "norm.weight", "head.bias"} <= kept
    assert "blocks.0.attn.qkv.weight" in decayed and "session_proj.weight" in decayed
    assert all(n.endswith("weight") for n in decayed)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)


def test_count_flops_matches_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = small(d_model=64, n_heads=4, d_ff=128)
    x = tokens(length=CTX)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    counts = counter.get_flop_counts()["Global"]
    linear = sum(v for k, v in counts.items() if "mm" in str(k))  # addmm / mm / bmm
    # attention products, counted for the causal half: 2 layers x B*C rows x (QK^T + AV)
    d, rows = 64, 2 * C
    attn_causal = 2 * rows * 2 * 2 * d * (CTX * CTX - CTX * (CTX - 1) / 2)
    expected = linear + attn_causal
    assert count_flops(model, 2, CTX, training=False) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"vocab_size": 1}, "vocab_size"),
    ({"n_channels": 0}, "n_channels"),
    ({"context": 0}, "context"),
    ({"loss_last": 20}, "loss_last"),
    ({"n_heads": 5}, "n_heads"),
    ({"dropout": 1.0}, "dropout"),
    ({"position": "alibi"}, "position"),
    ({"n_sessions": 0}, "n_sessions"),
    ({"channel_attention": "yes"}, "channel_attention"),
    ({"position": "rope", "d_model": 12, "n_heads": 4}, "even head width"),
])
def test_bad_constructor_arguments(kwargs, match):
    cfg = {"vocab_size": V, "n_channels": C, "context": CTX, "loss_last": 4, "d_model": 32,
           "n_heads": 4, "d_ff": 64, "n_layers": 1}
    cfg.update(kwargs)
    with pytest.raises(NeurofmError, match=match):
        MEGGPT(**cfg)


def test_bad_inputs():
    model = small(n_sessions=2)
    x = tokens()
    with pytest.raises(DataError, match="channels"):
        model(x[..., :2])
    with pytest.raises(DataError, match="time steps"):
        model(tokens(length=CTX + 1))
    with pytest.raises(DataError, match=r"\[0, vocab_size - 1 = 12\]"):
        model(x + V)
    with pytest.raises(DataError, match="integer"):
        model(x.float())
    with pytest.raises(DataError, match=r"shape \(B, L, C\)"):
        model(x[0])
    with pytest.raises(NeurofmError, match=r"torch\.LongTensor"):
        model(x.numpy())
    with pytest.raises(DataError, match="session must lie"):
        model(x, torch.tensor([0, 2]))
    with pytest.raises(DataError, match="session must be"):
        model(x, torch.tensor([0]))
    with pytest.raises(NeurofmError, match="no session embedding"):
        small()(x, torch.tensor([0, 1]))
    with pytest.raises(DataError, match="loss_last"):
        model.loss(tokens(length=4))
    with pytest.raises(NeurofmError, match="KVCache"):
        model.step(x, cache=None)
    with pytest.raises(DataError, match="batch"):
        model.step(x, model.new_cache(3))
    with pytest.raises(NeurofmError, match="max_len"):
        model.new_cache(1, max_len=CTX + 1)


@pytest.mark.slow
def test_loss_traces_without_graph_breaks():
    """torch.compile sees one graph (the token range checks are skipped while compiling)."""
    model = small(n_sessions=2, channel_attention=True)
    explained = torch._dynamo.explain(model.loss)(tokens(length=CTX + 1), torch.tensor([0, 1]))
    assert explained.graph_break_count == 0, explained.break_reasons
