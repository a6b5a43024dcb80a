"""Autoregressive generation with :class:`~neurofm.models.meggpt.MEGGPT`.

:func:`generate_tokens` samples token sequences (all channels of a time step at once, each
channel from its own next-token distribution); :func:`generate` decodes them with a tokenizer
into a canonical recording. :func:`sample_logits` is the sampler (temperature, top-k, top-p).

Window schedule. The model sees at most ``context`` time steps. Before predicting step ``t``
the window ``[s, t)`` is moved forward by ``stride`` steps while it is longer than
``context``. The default ``stride = loss_last`` keeps every prediction at one of the positions
the loss trained (the last ``loss_last`` of a full window); ``stride=1`` is the reference's
one-step slide. With ``use_cache=True`` the keys/values of the window are kept in a
:class:`~neurofm.models.meggpt.KVCache`: each step costs one position, and a slide re-reads
the ``context - stride`` kept steps once. ``use_cache=False`` runs the whole window at every
step; both give the same tokens for the same seed.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import xarray as xr

from .._checks import check_positive, check_positive_int
from .._logging import use_log_level, warn
from ..errors import DataError, NeurofmError
from ..schema import append_history, make_recording, validate
from .meggpt import MEGGPT

__all__ = ["generate", "generate_tokens", "sample_logits"]


# ----------------------------------------------------------------------------- sampling
def _check_sampling(temperature, top_k, top_p):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not np.isfinite(temperature) or temperature < 0:
        raise NeurofmError(f"temperature must be a finite number >= 0 (0: greedy); got "
                           f"{temperature!r}")
    if top_k is not None:
        top_k = check_positive_int("top_k", top_k)
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) \
                or not 0.0 < float(top_p) <= 1.0:
            raise NeurofmError(f"top_p must be a number in (0, 1]; got {top_p!r}")
        top_p = float(top_p)
    return float(temperature), top_k, top_p


def sample_logits(logits, *, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Draw one token per row of logits.

    The logits are divided by ``temperature``, restricted to the ``top_k`` largest, then to
    the smallest set of most probable tokens whose probability reaches ``top_p`` (nucleus),
    and a token is drawn from the softmax of what is left.

    Parameters
    ----------
    logits : Tensor of shape (..., V)
    temperature : float
        > 0 scales the logits; 0 takes the argmax (greedy).
    top_k : int, optional
        Keep the k most likely tokens (``top_k=1`` is greedy).
    top_p : float in (0, 1], optional
        Keep the most likely tokens up to and including the one whose cumulative
        probability first reaches ``top_p``.
    generator : torch.Generator, optional
        Source of randomness (on the device of ``logits``).

    Returns
    -------
    tokens : LongTensor of shape (...)
    """
    temperature, top_k, top_p = _check_sampling(temperature, top_k, top_p)
    if temperature == 0.0 or top_k == 1:
        return logits.argmax(dim=-1)
    v = logits.shape[-1]
    z = logits.reshape(-1, v).float() / temperature  # (N, V)
    if top_k is not None and top_k < v:
        kth = z.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_z, order = z.sort(dim=-1, descending=True)
        probs = sorted_z.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        drop = before >= top_p
        drop[:, 0] = False
        z = z.scatter(1, order, sorted_z.masked_fill(drop, float("-inf")))
    tokens = torch.multinomial(z.softmax(dim=-1), 1, generator=generator)  # (N, 1)
    return tokens.reshape(logits.shape[:-1])


# ----------------------------------------------------------------------------- tokens
def _as_prompt(prompt, model):
    if isinstance(prompt, np.ndarray):
        if prompt.dtype.kind not in "iu":
            raise DataError(f"prompt must hold integer token ids; got dtype {prompt.dtype}")
        prompt = torch.from_numpy(np.ascontiguousarray(prompt))
    if not isinstance(prompt, torch.Tensor):
        raise NeurofmError(f"prompt must be a token array of shape (B, P, C) or (P, C) (or a "
                           f"recording for generate); got {type(prompt).__name__}")
    if prompt.ndim == 2:
        prompt = prompt[None]
    if prompt.ndim != 3 or prompt.shape[1] < 1:
        raise DataError(f"prompt must have shape (B, P, C) or (P, C) with P >= 1; got shape "
                        f"{tuple(prompt.shape)}")
    return model._check_tokens(prompt, "prompt", max_len=prompt.shape[1])


def _random_prompt(model, batch, weights, generator, device):
    v = model.vocab_size
    if weights is None:
        w = torch.ones(v, dtype=torch.float64)
    else:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.shape != (v,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise DataError(f"token_weights must be {v} non-negative finite numbers "
                            f"(vocab_size) with a positive sum; got shape {tuple(w.shape)}")
    n = batch * model.context * model.n_channels
    draw = torch.multinomial(w.to(device).float(), n, replacement=True, generator=generator)
    return draw.view(batch, model.context, model.n_channels)


@torch.no_grad()
def generate_tokens(model, prompt=None, *, n_steps, batch_size=None, temperature=1.0,
                    top_k=None, top_p=None, seed=0, session=None, stride=None, use_cache=True,
                    token_weights=None, return_logits=False, verbose=None):
    """Sample ``n_steps`` new time steps of tokens for every channel.

    Parameters
    ----------
    model : MEGGPT
        Run in eval mode (its mode is restored afterwards).
    prompt : LongTensor or ndarray of shape (B, P, C) or (P, C), optional
        Tokens to continue. None: ``context`` steps drawn independently from
        ``token_weights`` (uniform when None), as the reference does.
    n_steps : int
        Time steps to generate.
    batch_size : int, optional
        Independent sequences (default: the prompt's batch, else 1).
    temperature, top_k, top_p
        See :func:`sample_logits`.
    seed : int
        Seeds the random prompt and every draw: the same seed gives the same tokens.
    session : int or LongTensor of shape (B,), optional
        Session id(s) for a model with a session embedding (such a model warns when none is
        given: its inputs then lack the session term it was trained with).
    stride : int, optional
        Steps the window moves when it is full (default ``model.loss_last``; see the module
        docstring).
    use_cache : bool
        Decode incrementally with a KV cache (same tokens, faster).
    token_weights : array-like of shape (V,), optional
        Unigram weights of the random prompt.
    return_logits : bool
        Also return the logits each step was drawn from.
    verbose : bool | str | None
        Log level for this call.

    Returns
    -------
    tokens : LongTensor of shape (B, n_steps, C)
        The generated steps only (not the prompt), on the model's device.
    logits : Tensor of shape (B, n_steps, C, V)
        Only with ``return_logits=True``.
    """
    if not isinstance(model, MEGGPT):
        raise NeurofmError(f"model must be a MEGGPT; got {type(model).__name__}")
    n_steps = check_positive_int("n_steps", n_steps)
    temperature, top_k, top_p = _check_sampling(temperature, top_k, top_p)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise NeurofmError(f"seed must be an integer; got {seed!r}")
    ctx = model.context
    stride = model.loss_last if stride is None else check_positive_int("stride", stride)
    if stride > ctx:
        raise NeurofmError(f"stride must be <= context ({ctx}); got {stride}")
    device = model.head.weight.device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    with use_log_level(verbose):
        if prompt is None:
            batch = 1 if batch_size is None else check_positive_int("batch_size", batch_size)
            prompt = _random_prompt(model, batch, token_weights, generator, device)
        else:
            prompt = _as_prompt(prompt, model).to(device)
            if batch_size is not None:
                batch_size = check_positive_int("batch_size", batch_size)
                if prompt.shape[0] == 1:
                    prompt = prompt.expand(batch_size, -1, -1)
                elif prompt.shape[0] != batch_size:
                    raise DataError(f"prompt has batch {prompt.shape[0]} but batch_size="
                                    f"{batch_size}")
        batch, n_prompt, c = prompt.shape
        if session is not None:
            session = model._check_session(session, batch).to(device)
        elif model.n_sessions is not None:
            warn(f"the model has a session embedding (n_sessions={model.n_sessions}) but "
                 "session=None: every step is predicted without the session term the model "
                 "was trained with; pass session= (the index of the prompt's recording in "
                 "the checkpoint's session table, model.extra['session_ids'])")
        first = min(n_prompt, ctx)
        if first < ctx - model.loss_last + 1:
            warn(f"prompt has {n_prompt} time steps: the first predictions come from "
                 f"positions before the ones the loss trained (the last loss_last="
                 f"{model.loss_last} of context={ctx}); give at least "
                 f"{ctx - model.loss_last + 1} steps")
        seq = torch.empty((batch, n_prompt + n_steps, c), dtype=torch.long, device=device)
        seq[:, :n_prompt] = prompt
        out_logits = (torch.empty((batch, n_steps, c, model.vocab_size), device=device)
                      if return_logits else None)
        cache = model.new_cache(batch) if use_cache else None
        cache_start = None
        start = max(0, n_prompt - ctx)
        was_training = model.training
        model.eval()
        try:
            for t in range(n_prompt, n_prompt + n_steps):
                while t - start > ctx:
                    start += stride
                if not use_cache:
                    logits = model.last_logits(seq[:, start:t], session, 1)[:, -1]
                elif cache_start != start:  # (re)fill the cache with the window
                    cache.reset()
                    logits = model.step(seq[:, start:t], cache, session, n_last=1)[:, -1]
                    cache_start = start
                else:
                    logits = model.step(seq[:, t - 1:t], cache, session)[:, -1]
                # logits: (B, C, V)
                seq[:, t] = sample_logits(logits, temperature=temperature, top_k=top_k,
                                          top_p=top_p, generator=generator)
                if out_logits is not None:
                    out_logits[:, t - n_prompt] = logits
        finally:
            model.train(was_training)
    tokens = seq[:, n_prompt:]
    return (tokens, out_logits) if return_logits else tokens


# ----------------------------------------------------------------------------- signals
def _tokenizer_weights(tokenizer, vocab_size):
    """Unigram weights from a tokenizer's vocabulary counts (ids 1..K), if it has them."""
    vocab = getattr(tokenizer, "vocab_", None)
    counts = None if not isinstance(vocab, dict) else vocab.get("total_token_counts")
    if counts is None:
        return None
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size + 1 != vocab_size or counts.sum() <= 0:
        return None
    return np.concatenate([[0.0], counts])


def _decode(tokenizer, tokens):
    """(C, T) tokens -> (C, T) float32 signal and the decode options used."""
    from ..tokenizers import MEGGPTTokenizer

    if isinstance(tokenizer, MEGGPTTokenizer):  # one overlap-add over the whole stream
        return np.asarray(tokenizer.decode(tokens, windowed=False), np.float32), \
            {"windowed": False}
    return np.asarray(tokenizer.decode(tokens), np.float32), {}


def generate(model, tokenizer, *, prompt=None, n_channels=None, n_steps, temperature=1.0,
             top_k=None, top_p=None, seed=0, session=None, sfreq=250.0, use_cache=True,
             stride=None, modality=None, channel_names=None, verbose=None):
    """Generate a recording: sample tokens with the model, decode them with the tokenizer.

    Parameters
    ----------
    model : MEGGPT
    tokenizer : Tokenizer
        The tokenizer the model was trained on (``decode`` maps tokens to a signal;
        ``encode`` tokenizes a recording prompt).
    prompt : xarray.Dataset or token array of shape (P, C) or (1, P, C), optional
        What to continue: a canonical recording (tokenized with ``tokenizer``; its channel
        names, types, positions, modality and units carry over) or tokens. None: a random
        prompt of ``context`` steps drawn from the tokenizer's token counts when it has them
        (the MEG-GPT tokenizer), uniform otherwise.
    n_channels : int, optional
        Must equal ``model.n_channels`` when given (the channel embedding fixes it).
    n_steps : int
        Samples to generate (the prompt is not part of the output).
    temperature, top_k, top_p, seed, session, stride, use_cache
        See :func:`generate_tokens`.
    sfreq : float
        Sampling frequency of the output (Hz); a recording prompt must have the same.
    modality : str, optional
        Modality of the output (default: the prompt's, else "meg").
    channel_names : sequence of str, optional
        Channel names (default: the prompt's, else ``ch000``, ``ch001``, ...).
    verbose : bool | str | None

    Returns
    -------
    ds : xarray.Dataset
        A canonical recording of shape (C, n_steps). Its history ends with a ``generate``
        step recording the model config, the tokenizer and every sampling setting. Units:
        "a.u." when the tokenizer works on z-scores.
    """
    if not isinstance(model, MEGGPT):
        raise NeurofmError(f"model must be a MEGGPT; got {type(model).__name__}")
    if not hasattr(tokenizer, "decode"):
        raise NeurofmError(f"tokenizer must be a neurofm tokenizer (with decode); got "
                           f"{type(tokenizer).__name__}")
    if n_channels is not None and check_positive_int("n_channels", n_channels) \
            != model.n_channels:
        raise NeurofmError(f"n_channels must equal the model's n_channels "
                           f"({model.n_channels}); got {n_channels}")
    sfreq = check_positive("sfreq", sfreq)
    c = model.n_channels
    names = [f"ch{i:03d}" for i in range(c)]
    meta = {"modality": modality or "meg", "ch_type": "misc", "units": "a.u.",
            "ch_pos": None}
    token_weights = None
    if isinstance(prompt, xr.Dataset):
        validate(prompt, check_values=False, name="prompt")
        ds_sfreq = float(prompt.attrs["sfreq"])
        if not np.isclose(ds_sfreq, sfreq):
            raise DataError(f"prompt is sampled at {ds_sfreq} Hz but sfreq={sfreq}; resample "
                            f"the prompt or pass sfreq={ds_sfreq}")
        if prompt.sizes["channel"] != c:
            raise DataError(f"prompt has {prompt.sizes['channel']} channels; the model has "
                            f"n_channels={c}")
        names = [str(n) for n in prompt["channel"].values]
        meta = {"modality": modality or prompt.attrs["modality"],
                "ch_type": [str(t) for t in prompt["ch_type"].values],
                "units": ("a.u." if getattr(tokenizer, "standardize", False)
                          else prompt["signal"].attrs.get("units", "a.u.")),
                "ch_pos": np.asarray(prompt["ch_pos"].values, dtype=np.float64)}
        if meta["units"] == "mixed":
            meta["units"] = [str(u) for u in prompt["ch_units"].values]
        prompt_kind = "recording"
        tokens = np.asarray(tokenizer.encode(prompt["signal"].values))  # (C, P)
        prompt_tokens = torch.from_numpy(tokens.T.copy())  # (P, C)
    elif prompt is None:
        prompt_kind = "random"
        prompt_tokens = None
        token_weights = _tokenizer_weights(tokenizer, model.vocab_size)
    else:
        prompt_kind = "tokens"
        prompt_tokens = prompt
    if channel_names is not None:
        names = [str(n) for n in channel_names]
        if len(names) != c:
            raise DataError(f"channel_names has {len(names)} names; the model has "
                            f"n_channels={c}")
    if prompt_tokens is not None:
        prompt_tokens = _as_prompt(prompt_tokens, model)
        if prompt_tokens.shape[0] != 1:
            raise DataError(f"generate makes one recording: prompt must have batch 1; got "
                            f"shape {tuple(prompt_tokens.shape)}")
    n_prompt = model.context if prompt_tokens is None else int(prompt_tokens.shape[1])
    tokens = generate_tokens(model, prompt_tokens, n_steps=n_steps, temperature=temperature,
                             top_k=top_k, top_p=top_p, seed=seed, session=session,
                             stride=stride, use_cache=use_cache, token_weights=token_weights,
                             verbose=verbose)
    signal, decode_opts = _decode(tokenizer, tokens[0].T.cpu().numpy())  # (C, T)
    ds = make_recording(signal, channel=names, sfreq=sfreq, modality=meta["modality"],
                        ch_type=meta["ch_type"], units=meta["units"], ch_pos=meta["ch_pos"],
                        source_format="meggpt-generated")
    session_value = session
    if isinstance(session, torch.Tensor):
        session_value = session.tolist()
    ds = append_history(
        ds, "generate", model="MEGGPT", model_config=model.config,
        tokenizer=type(tokenizer).__name__, decode=decode_opts, prompt=prompt_kind,
        prompt_steps=n_prompt, n_steps=n_steps, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed, session=session_value,
        stride=model.loss_last if stride is None else stride, use_cache=bool(use_cache),
        sfreq=sfreq)
    validate(ds, name="generated recording")
    return ds
