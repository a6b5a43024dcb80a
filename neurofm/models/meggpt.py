"""MEG-GPT: an autoregressive transformer over per-sample tokens of every channel.

The model reads tokens of shape ``(B, L, C)`` (one token per sample per channel, see
:mod:`neurofm.tokenizers`) and predicts, at every time step and channel, the token of the next
sample (METHODS.md section 3; reference OHBA-analysis/MEG-GPT).

- Input: token + time-position + channel (+ session) embeddings, summed. The session
  embedding is a lookup of width ``vocab_size`` followed by a linear map to ``d_model``, so
  that each row can start as the session's token-frequency distribution
  (:meth:`MEGGPT.init_session_embedding`).
- Pre-LN decoder layers. Causal self-attention over time runs within each channel: channels
  are folded into the batch axis and share the weights. With ``channel_attention=True`` each
  layer first attends across the channels of the same time step (no mixing across time, so
  causality in time is kept).
- A final LayerNorm and one output projection shared by every (time, channel) position.
- Loss: cross-entropy on the last ``loss_last`` positions only (the positions the model learns
  to predict from), top-1 / top-5 accuracy on the same positions.

Attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`. Internally the
activations live as ``(B * C, L, D)``: time attention needs no reshuffle, channel attention
transposes to ``(B * L, C, D)``. When only the last ``k`` positions are needed (the loss, one
generation step without a cache) the last layer computes its queries, feed-forward and head for
those positions only. A :class:`KVCache` (preallocated keys/values of every layer) makes
incremental decoding cost one position per step (:meth:`MEGGPT.step`).

Shapes: B batch, L time steps, C channels, V vocabulary, D ``d_model``, H heads.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_option, check_positive_int
from ..errors import DataError, NeurofmError
from .positional import sincos_1d

__all__ = ["MEGGPT", "POSITIONS", "KVCache", "MEGGPTBlock", "RotaryEmbedding", "count_flops"]

#: Kinds of time position of :class:`MEGGPT`.
POSITIONS = ("learned", "sinusoidal", "rope")


# ----------------------------------------------------------------------------- helpers
def _lower_right_mask(n_q, n_k, device):
    """Boolean (n_q, n_k) mask, True where query i (the i-th of the last n_q) may attend.

    Query i sits at key position ``n_k - n_q + i`` and sees keys up to it.
    """
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(diagonal=n_k - n_q)


def _check_dropout(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= float(value) < 1.0:
        raise NeurofmError(f"dropout must be a number in [0, 1); got {value!r}")
    return float(value)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) of queries and keys, half-rotation layout.

    Feature ``i`` of a head is paired with feature ``i + head_dim / 2`` and the pair is rotated
    by the angle ``pos * base ** (-2 i / head_dim)``; the query-key dot product then depends on
    the positions only through their difference.

    Parameters
    ----------
    head_dim : int
        Per-head width (even).
    max_len : int
        Number of positions with precomputed angles.
    base : float
        Frequency base.
    """

    def __init__(self, head_dim, max_len, base=10000.0):
        super().__init__()
        if head_dim % 2:
            raise NeurofmError(f"RoPE needs an even head width (d_model / n_heads); got "
                               f"{head_dim}")
        half = head_dim // 2
        inv_freq = base ** (-torch.arange(half, dtype=torch.float64) * 2.0 / head_dim)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None]
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # (max_len, hd/2)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x, start=0):
        """Rotate ``x`` whose positions are ``start, start + 1, ...``.

        Parameters
        ----------
        x : Tensor of shape (..., l, head_dim)
        start : int
            Position of the first of the l steps.

        Returns
        -------
        Tensor of shape (..., l, head_dim)
        """
        n = x.shape[-2]
        cos = self.cos[start:start + n].to(x.dtype)  # (l, hd/2)
        sin = self.sin[start:start + n].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class _SelfAttention(nn.Module):
    """Multi-head self-attention on ``(N, l, D)`` with a fused qkv projection."""

    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, *, causal, rope=None, start=0, cache=None, layer=0, n_out=None):
        """Attend over the second axis of ``x``.

        Parameters
        ----------
        x : Tensor of shape (N, l, D)
        causal : bool
            Each step sees itself and the steps before it only.
        rope : RotaryEmbedding, optional
            Rotate queries and keys (positions ``start ...``).
        start : int
            Position of the first of the l steps (cache length before this call).
        cache : KVCache, optional
            Keys/values of the steps before ``start``; the new ones are written into it.
        layer : int
            Which layer's slot of ``cache``.
        n_out : int, optional
            Compute the outputs of the last ``n_out`` steps only (all keys still count).

        Returns
        -------
        Tensor of shape (N, n_out or l, D)
        """
        n, seq, d = x.shape
        h = self.n_heads
        qkv = self.qkv(x).view(n, seq, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (3, N, H, l, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope is not None:
            q, k = rope(q, start), rope(k, start)
        n_keys = seq
        if cache is not None:
            cache.k[layer, :, :, start:start + seq] = k
            cache.v[layer, :, :, start:start + seq] = v
            n_keys = start + seq
            k, v = cache.k[layer, :, :, :n_keys], cache.v[layer, :, :, :n_keys]
            if k.dtype != q.dtype:  # e.g. a float32 cache under bf16 autocast
                k, v = k.to(q.dtype), v.to(q.dtype)
        n_q = seq
        if n_out is not None and n_out < seq:
            q, n_q = q[:, :, seq - n_out:], n_out
        mask, is_causal = None, False
        if causal and n_q > 1:
            if n_q == n_keys:
                is_causal = True
            else:
                mask = _lower_right_mask(n_q, n_keys, x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.proj(y.transpose(1, 2).reshape(n, n_q, d))  # (N, n_q, D)


class MEGGPTBlock(nn.Module):
    """One pre-LN decoder layer: [channel attention], causal time attention, feed-forward.

    Parameters
    ----------
    d_model, n_heads, d_ff : int
        Width, heads, feed-forward hidden width.
    dropout : float
        Dropout on the output of each residual branch.
    channel_attention : bool
        Add attention across the channels of each time step before the time attention.
    """

    def __init__(self, d_model, n_heads, d_ff, dropout, channel_attention=False):
        super().__init__()
        self.channel_attention = channel_attention
        if channel_attention:
            self.norm_chan = nn.LayerNorm(d_model)
            self.chan_attn = _SelfAttention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = _SelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def _channel_mix(self, x, n_channels):
        n, seq, d = x.shape
        b = n // n_channels
        y = self.norm_chan(x).view(b, n_channels, seq, d).transpose(1, 2)  # (B, l, C, D)
        y = self.chan_attn(y.reshape(b * seq, n_channels, d), causal=False)  # (B*l, C, D)
        y = y.view(b, seq, n_channels, d).transpose(1, 2).reshape(n, seq, d)
        return x + self.drop(y)

    def forward(self, x, n_channels, *, rope=None, start=0, cache=None, layer=0, n_out=None):
        """Apply the layer.

        Parameters
        ----------
        x : Tensor of shape (B * C, l, D)
            Channel-major rows: row ``b * C + c``.
        n_channels : int
            C.
        rope, start, cache, layer, n_out
            See :meth:`_SelfAttention.forward`.

        Returns
        -------
        Tensor of shape (B * C, n_out or l, D)
        """
        if self.channel_attention:
            x = self._channel_mix(x, n_channels)
        a = self.attn(self.norm1(x), causal=True, rope=rope, start=start, cache=cache,
                      layer=layer, n_out=n_out)
        if a.shape[1] != x.shape[1]:
            x = x[:, x.shape[1] - a.shape[1]:]
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm2(x)))


class KVCache:
    """Preallocated keys and values of every layer for incremental decoding.

    Parameters
    ----------
    n_layers, rows, n_heads, head_dim, max_len : int
        ``rows`` is B * C (channels are folded into the batch).
    device, dtype
        Where and how the cache is kept.

    Attributes
    ----------
    k, v : Tensor of shape (n_layers, rows, n_heads, max_len, head_dim)
    length : int
        Number of time steps held.
    """

    def __init__(self, n_layers, rows, n_heads, head_dim, max_len, *, device=None,
                 dtype=torch.float32):
        shape = (n_layers, rows, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = int(max_len)
        self.rows = int(rows)
        self.length = 0

    def reset(self):
        """Forget every step (the memory is kept)."""
        self.length = 0


class MEGGPT(nn.Module):
    """Autoregressive transformer over per-sample tokens, channels sharing the weights.

    Parameters
    ----------
    vocab_size : int
        V, number of token ids (the tokenizer's ``vocab_size``).
    n_channels : int
        C, channels of every input (the channel embedding has one row per channel).
    context : int
        Longest input, in time steps (100 in the 2026 release).
    loss_last : int
        The loss covers the last ``loss_last`` positions (16).
    d_model, n_layers, n_heads, d_ff : int
        Width, decoder layers, heads, feed-forward hidden width (256, 5, 4, 1024).
    dropout : float
        Dropout on the embedding sum and on every residual branch (0.2).
    n_sessions : int, optional
        Number of sessions with a learned session embedding; None: no session term.
    position : {"learned", "sinusoidal", "rope"}
        Time position: a learned (context, D) table, fixed sine-cosine, or rotary embedding of
        queries and keys in the time attention (nothing added at the input).
    channel_attention : bool
        Attention across channels at each time step in every layer (off in the release).

    Attributes
    ----------
    config : dict
        The constructor arguments (``MEGGPT(**config)`` rebuilds the model); also
        available as ``hparams``.

    Notes
    -----
    Every output position ``(t, c)`` depends on the tokens at times ``<= t`` only; with
    ``channel_attention=False`` also on channel ``c`` only (and on the session).

    Differences from the reference model: a final LayerNorm before the head (the reference
    feeds the last residual stream to the head directly); the channel-attention option is one
    pre-LN attention sub-block per layer (the reference adds its own feed-forward, channel
    dropout and a stochastic drop of the whole branch); the sine-cosine table concatenates
    sines and cosines instead of interleaving them (a fixed permutation of the width).
    """

    def __init__(self, vocab_size, n_channels, *, context=100, loss_last=16, d_model=256,
                 n_layers=5, n_heads=4, d_ff=1024, dropout=0.2, n_sessions=None,
                 position="learned", channel_attention=False):
        super().__init__()
        vocab_size = check_positive_int("vocab_size", vocab_size)
        if vocab_size < 2:
            raise NeurofmError(f"vocab_size must be >= 2; got {vocab_size}")
        n_channels = check_positive_int("n_channels", n_channels)
        context = check_positive_int("context", context)
        loss_last = check_positive_int("loss_last", loss_last)
        if loss_last > context:
            raise NeurofmError(f"loss_last must be <= context ({context}); got {loss_last}")
        d_model = check_positive_int("d_model", d_model)
        n_layers = check_positive_int("n_layers", n_layers)
        n_heads = check_positive_int("n_heads", n_heads)
        d_ff = check_positive_int("d_ff", d_ff)
        if d_model % n_heads:
            raise NeurofmError(f"d_model ({d_model}) must be divisible by n_heads; got "
                               f"n_heads={n_heads}")
        dropout = _check_dropout(dropout)
        if n_sessions is not None:
            n_sessions = check_positive_int("n_sessions", n_sessions)
        check_option("position", position, POSITIONS)
        if not isinstance(channel_attention, bool):
            raise NeurofmError(f"channel_attention must be a bool; got {channel_attention!r}")
        self.config = {
            "vocab_size": vocab_size, "n_channels": n_channels, "context": context,
            "loss_last": loss_last, "d_model": d_model, "n_layers": n_layers,
            "n_heads": n_heads, "d_ff": d_ff, "dropout": dropout, "n_sessions": n_sessions,
            "position": position, "channel_attention": channel_attention,
        }
        self.vocab_size, self.n_channels, self.context = vocab_size, n_channels, context
        self.loss_last, self.d_model, self.n_heads = loss_last, d_model, n_heads
        self.n_sessions, self.position = n_sessions, position

        self.token_embed = nn.Embedding(vocab_size, d_model)
        self.rope = None
        if position == "learned":
            self.pos_embed = nn.Parameter(torch.empty(context, d_model))
        elif position == "sinusoidal":
            self.register_buffer("pos_embed", sincos_1d(d_model, torch.arange(context)),
                                 persistent=False)
        else:
            self.pos_embed = None
            self.rope = RotaryEmbedding(d_model // n_heads, context)
        self.chan_embed = nn.Parameter(torch.empty(n_channels, d_model))
        if n_sessions is not None:
            self.session_embed = nn.Embedding(n_sessions, vocab_size)
            self.session_proj = nn.Linear(vocab_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            MEGGPTBlock(d_model, n_heads, d_ff, dropout, channel_attention)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.reset_parameters()

    @property
    def hparams(self):
        """The constructor arguments (same dict as :attr:`config`)."""
        return self.config

    @classmethod
    def from_config(cls, config):
        """Build a model from :attr:`config` (weights freshly initialized)."""
        return cls(**config)

    # ---------------------------------------------------------------------- parameters
    def reset_parameters(self):
        """Xavier-uniform linear weights and learned tables, zero biases, U(-0.05, 0.05)
        lookup tables, unit LayerNorms (the reference initializer)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.uniform_(m.weight, -0.05, 0.05)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.chan_embed)
        if self.position == "learned":
            nn.init.xavier_uniform_(self.pos_embed)

    @torch.no_grad()
    def init_session_embedding(self, token_counts):
        """Start each session's embedding row as its token-frequency distribution.

        The session term is ``session_proj(session_embed[s])`` with ``session_embed`` of width
        V, so row ``s`` becomes ``counts[s] / counts[s].sum()`` (uniform for a session without
        tokens), as the reference initializes it from per-session bincounts.

        Parameters
        ----------
        token_counts : array-like of shape (n_sessions, V)
            Non-negative token counts (or frequencies) of each session.

        Returns
        -------
        freqs : ndarray of shape (n_sessions, V), float32
            The rows written.
        """
        if self.n_sessions is None:
            raise NeurofmError("init_session_embedding: this model has no session embedding "
                               "(n_sessions=None)")
        counts = np.asarray(token_counts, dtype=np.float64)
        expected = (self.n_sessions, self.vocab_size)
        if counts.shape != expected:
            raise DataError(f"token_counts must have shape (n_sessions, vocab_size) = "
                            f"{expected}; got {counts.shape}")
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise DataError("token_counts must be finite and non-negative")
        total = counts.sum(axis=1, keepdims=True)
        empty = total[:, 0] <= 0
        counts[empty] = 1.0
        total[empty] = self.vocab_size
        freqs = (counts / total).astype(np.float32)
        self.session_embed.weight.copy_(torch.from_numpy(freqs))
        return freqs

    def optim_groups(self, weight_decay=0.01):
        """Parameter groups with weight decay except on embeddings, norms and biases.

        Parameters
        ----------
        weight_decay : float

        Returns
        -------
        list of dict
            ``[{"params": decayed, "weight_decay": weight_decay},
            {"params": the rest, "weight_decay": 0.0}]`` for a torch optimizer.
        """
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if isinstance(module, (nn.Embedding, nn.LayerNorm)) or name == "bias" \
                        or module is self:  # pos_embed, chan_embed
                    no_decay.append(p)
                else:
                    decay.append(p)
        return [{"params": decay, "weight_decay": float(weight_decay)},
                {"params": no_decay, "weight_decay": 0.0}]

    # ---------------------------------------------------------------------- checks
    def _check_tokens(self, tokens, name="tokens", max_len=None, values=True):
        if not isinstance(tokens, torch.Tensor):
            raise NeurofmError(f"{name} must be a torch.LongTensor of shape (B, L, C); got "
                               f"{type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex \
                or tokens.dtype == torch.bool:
            raise DataError(f"{name} must hold integer token ids; got dtype {tokens.dtype}")
        if tokens.ndim != 3:
            raise DataError(f"{name} must have shape (B, L, C); got shape "
                            f"{tuple(tokens.shape)}")
        b, seq, c = tokens.shape
        if c != self.n_channels:
            raise DataError(f"{name} has {c} channels (last axis of shape "
                            f"{tuple(tokens.shape)}); the model has n_channels="
                            f"{self.n_channels}")
        max_len = self.context if max_len is None else max_len
        if seq < 1 or seq > max_len:
            raise DataError(f"{name} must have 1 to {max_len} time steps (axis 1); got "
                            f"shape {tuple(tokens.shape)}")
        if b < 1:
            raise DataError(f"{name} has an empty batch: shape {tuple(tokens.shape)}")
        if values and not torch.compiler.is_compiling():  # no graph break under compile
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.vocab_size:
                raise DataError(f"{name} must lie in [0, vocab_size - 1 = "
                                f"{self.vocab_size - 1}]; found values in [{lo}, {hi}]")
        return tokens.long()

    def _check_session(self, session, batch, values=True):
        if session is None:
            return None
        if self.n_sessions is None:
            raise NeurofmError("session was given but the model has no session embedding "
                               "(n_sessions=None)")
        if not isinstance(session, torch.Tensor):
            session = torch.as_tensor(session)
        if session.ndim == 0:
            session = session.expand(batch)
        if session.dtype.is_floating_point or session.shape != (batch,):
            raise DataError(f"session must be an integer tensor of shape (B,) = ({batch},); "
                            f"got dtype {session.dtype}, shape {tuple(session.shape)}")
        if values and not torch.compiler.is_compiling():
            lo, hi = int(session.min()), int(session.max())
            if lo < 0 or hi >= self.n_sessions:
                raise DataError(f"session must lie in [0, n_sessions - 1 = "
                                f"{self.n_sessions - 1}]; found values in [{lo}, {hi}]")
        return session.long()

    # ---------------------------------------------------------------------- core
    def _embed(self, tokens, session, start):
        """Summed input embeddings, channel-major: (B, L, C) -> (B * C, L, D)."""
        b, seq, c = tokens.shape
        x = self.token_embed(tokens.transpose(1, 2))  # (B, C, L, D)
        x = x + self.chan_embed[:, None, :]
        if self.pos_embed is not None:
            x = x + self.pos_embed[start:start + seq]
        if session is not None:
            s = self.session_proj(self.session_embed(session.to(x.device)))  # (B, D)
            x = x + s[:, None, None, :]
        return self.drop(x.reshape(b * c, seq, self.d_model))

    def _trunk(self, tokens, session, *, start=0, cache=None, n_out=None):
        """Final-norm features (B * C, n_out or L, D) of checked tokens."""
        x = self._embed(tokens, session, start)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, self.n_channels, rope=self.rope, start=start, cache=cache, layer=i,
                      n_out=n_out if i == last else None)
        return self.norm(x)

    def _to_blc(self, y, batch):
        """(B * C, l, F) -> (B, l, C, F) (a view)."""
        _, seq, f = y.shape
        return y.view(batch, self.n_channels, seq, f).transpose(1, 2)

    def forward(self, tokens, session=None, *, cache=None):
        """Next-token logits at every position.

        Parameters
        ----------
        tokens : LongTensor of shape (B, L, C)
            Token ids in [0, V), L <= ``context``.
        session : LongTensor of shape (B,), optional
            Session ids (models with ``n_sessions``); None adds no session term.
        cache : KVCache, optional
            Decode incrementally: the tokens continue the ones in the cache (see
            :meth:`step`).

        Returns
        -------
        logits : Tensor of shape (B, L, C, V)
            ``logits[:, t, c]`` predicts the token of channel c at time t + 1.
        """
        if cache is not None:
            return self.step(tokens, cache, session)
        tokens = self._check_tokens(tokens)
        session = self._check_session(session, tokens.shape[0])
        return self._to_blc(self.head(self._trunk(tokens, session)), tokens.shape[0])

    def hidden_states(self, tokens, session=None):
        """Features for decoding: the output of the final LayerNorm.

        Parameters
        ----------
        tokens : LongTensor of shape (B, L, C)
        session : LongTensor of shape (B,), optional

        Returns
        -------
        hidden : Tensor of shape (B, L, C, D)
        """
        tokens = self._check_tokens(tokens)
        session = self._check_session(session, tokens.shape[0])
        return self._to_blc(self._trunk(tokens, session), tokens.shape[0])

    def last_logits(self, tokens, session=None, n_last=1):
        """Logits of the last ``n_last`` positions only (cheaper than :meth:`forward`).

        Parameters
        ----------
        tokens : LongTensor of shape (B, L, C)
        session : LongTensor of shape (B,), optional
        n_last : int

        Returns
        -------
        logits : Tensor of shape (B, min(n_last, L), C, V)
            Equal to ``forward(tokens, session)[:, -n_last:]``.
        """
        n_last = check_positive_int("n_last", n_last)
        tokens = self._check_tokens(tokens)
        session = self._check_session(session, tokens.shape[0])
        h = self._trunk(tokens, session, n_out=n_last)
        return self._to_blc(self.head(h), tokens.shape[0])

    def loss(self, tokens, session=None):
        """Teacher-forced cross-entropy on the last ``loss_last`` positions.

        Parameters
        ----------
        tokens : LongTensor of shape (B, L + 1, C)
            Usually L = ``context``; inputs are ``tokens[:, :-1]``, targets
            ``tokens[:, 1:]``. Needs ``loss_last <= L <= context``.
        session : LongTensor of shape (B,), optional

        Returns
        -------
        loss : scalar Tensor
            Mean cross-entropy over batch, the last ``loss_last`` steps and channels.
        metrics : dict of str -> scalar Tensor
            ``"top1"`` and ``"top5"``: accuracies on the same positions (top-5 is top-V when
            V < 5); detached.
        """
        tokens = self._check_tokens(tokens, max_len=self.context + 1)
        if tokens.shape[1] - 1 < self.loss_last:
            raise DataError(f"tokens must have at least loss_last + 1 = {self.loss_last + 1} "
                            f"time steps (axis 1); got shape {tuple(tokens.shape)}")
        session = self._check_session(session, tokens.shape[0])
        k = self.loss_last
        h = self._trunk(tokens[:, :-1], session, n_out=k)  # (B*C, K, D)
        logits = self.head(h)  # (B*C, K, V)
        b, _, c = tokens.shape
        target = tokens[:, -k:].transpose(1, 2).reshape(b * c, k)  # (B*C, K)
        loss = F.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1))
        with torch.no_grad():
            top = logits.topk(min(5, self.vocab_size), dim=-1).indices  # (B*C, K, 5)
            hit = top == target[..., None]
            metrics = {"top1": hit[..., 0].float().mean(), "top5": hit.any(-1).float().mean()}
        return loss, metrics

    # ---------------------------------------------------------------------- decoding
    def new_cache(self, batch_size, *, max_len=None, device=None, dtype=None):
        """An empty :class:`KVCache` for ``batch_size`` sequences of all channels.

        Parameters
        ----------
        batch_size : int
        max_len : int, optional
            Time steps it can hold (default and maximum ``context``).
        device, dtype : optional
            Default: those of the model's parameters.

        Returns
        -------
        KVCache
        """
        batch_size = check_positive_int("batch_size", batch_size)
        max_len = self.context if max_len is None else check_positive_int("max_len", max_len)
        if max_len > self.context:
            raise NeurofmError(f"max_len must be <= context ({self.context}); got {max_len}")
        p = self.head.weight
        return KVCache(len(self.blocks), batch_size * self.n_channels, self.n_heads,
                       self.d_model // self.n_heads, max_len,
                       device=p.device if device is None else device,
                       dtype=p.dtype if dtype is None else dtype)

    def step(self, tokens, cache, session=None, *, n_last=None):
        """Append tokens to a cache and return their logits (incremental decoding).

        Parameters
        ----------
        tokens : LongTensor of shape (B, l, C)
            The next l time steps; ``cache.length + l <= cache.max_len``. Values are not
            range-checked here (generation produces valid ids).
        cache : KVCache
            From :meth:`new_cache` with the same B; ``cache.length`` grows by l.
        session : LongTensor of shape (B,), optional
        n_last : int, optional
            Return the logits of the last ``n_last`` of the l steps only (the keys and values
            of all l are still cached); saves the last layer's work when filling a cache.

        Returns
        -------
        logits : Tensor of shape (B, l or n_last, C, V)
            Equal (up to float rounding) to the last positions of
            ``forward(all tokens so far)``.
        """
        if not isinstance(cache, KVCache):
            raise NeurofmError(f"cache must be a KVCache (model.new_cache); got "
                               f"{type(cache).__name__}")
        start = cache.length
        tokens = self._check_tokens(tokens, max_len=cache.max_len - start, values=False)
        b = tokens.shape[0]
        if b * self.n_channels != cache.rows:
            raise DataError(f"tokens have batch {b} but the cache was made for "
                            f"{cache.rows // self.n_channels}")
        session = self._check_session(session, b, values=False)
        if n_last is not None:
            n_last = check_positive_int("n_last", n_last)
        h = self._trunk(tokens, session, start=start, cache=cache, n_out=n_last)
        cache.length = start + tokens.shape[1]
        return self._to_blc(self.head(h), b)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


def count_flops(model, batch, seq, *, training=True, n_out=None):
    """Matmul FLOPs of one forward (x3 with the backward) over ``(batch, seq, C)`` tokens.

    Linear layers and the attention score / value products (causal: half of them);
    embeddings, norms and softmax are not counted. Used for model-FLOPs utilization.

    Parameters
    ----------
    model : MEGGPT
    batch, seq : int
    training : bool
        Count the backward pass as twice the forward.
    n_out : int, optional
        Positions the last layer computes (``loss_last`` for :meth:`MEGGPT.loss`).

    Returns
    -------
    flops : float
    """
    cfg = model.config
    d, f, c, n_layers = cfg["d_model"], cfg["d_ff"], cfg["n_channels"], cfg["n_layers"]
    rows = batch * c
    total = 0.0
    for i in range(n_layers):
        q = seq if (i < n_layers - 1 or n_out is None) else min(n_out, seq)
        total += rows * seq * 2 * 2 * d * d  # keys and values
        total += rows * q * 2 * (2 * d * d + 2 * d * f)  # queries, output proj, feed-forward
        total += rows * 2 * 2 * d * (q * seq - q * (q - 1) / 2)  # causal scores and values
        if cfg["channel_attention"]:
            total += rows * seq * 2 * (4 * d * d + 2 * c * d)
    total += rows * (n_out or seq) * 2 * d * cfg["vocab_size"]
    return float(total * (3 if training else 1))
