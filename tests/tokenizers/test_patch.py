"""PatchTokenizer: shapes, exact least-squares inverse, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.errors import DataError, FormatError
from neurofm.tokenizers import PatchTokenizer, load


def test_patch_embedding_values_and_inverse():
    torch.manual_seed(0)
    tok = PatchTokenizer(patch_size=4, d_model=6)
    x = np.random.default_rng(0).standard_normal((2, 3, 12)).astype(np.float32)
    e = tok.encode(x)
    assert e.shape == (2, 3, 3, 6) and tok.n_patches(12) == 3 and tok.vocab_size is None
    W = tok.proj.weight.detach().numpy()
    b = tok.proj.bias.detach().numpy()
    np.testing.assert_allclose(e[1, 2, 1], W @ x[1, 2, 4:8] + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tok.decode(e), x, atol=1e-4)  # d_model >= patch_size: exact
    assert tok.pve(x[0]) > 99.99


def test_patch_under_complete_decode_is_projection():
    torch.manual_seed(1)
    tok = PatchTokenizer(patch_size=8, d_model=3, bias=False)
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    x_hat = tok.decode(tok.encode(x))
    W = tok.proj.weight.detach().numpy().astype(np.float64)
    P = np.linalg.pinv(W) @ W  # projection onto the row space
    np.testing.assert_allclose(x_hat[0, :8], P @ x[0, :8], atol=1e-4)


def test_patch_module_keeps_gradients_and_save_load(tmp_path):
    tok = PatchTokenizer(patch_size=5, d_model=8)
    x = torch.randn(2, 4, 20, requires_grad=True)
    tok(x).sum().backward()
    assert x.grad is not None and tok.proj.weight.grad is not None
    tok.save(tmp_path)
    back = load(tmp_path)
    torch.testing.assert_close(back.proj.weight, tok.proj.weight)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    state["proj.weight"] = torch.zeros(8, 4)
    torch.save(state, tmp_path / "weights.pt")
    with pytest.raises(FormatError, match=r"proj.weight: expected \(8, 5\), found \(8, 4\)"):
        load(tmp_path)


def test_patch_errors():
    tok = PatchTokenizer(patch_size=4, d_model=6)
    with pytest.raises(DataError, match="not a multiple of patch_size=4; crop it to 8"):
        tok.encode(np.zeros((2, 10)))
    with pytest.raises(DataError, match=r"shape \(C, N, 6\)"):
        tok.decode(np.zeros((2, 3, 5)))


def test_patch_with_channel_positions_brainlm_style(tmp_path):
    torch.manual_seed(3)
    tok = PatchTokenizer(patch_size=4, d_model=8, pos_dim=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    pos = rng.standard_normal((5, 3)).astype(np.float32)
    e = tok.encode(x, pos)
    W, b = tok.proj.weight.detach().numpy(), tok.proj.bias.detach().numpy()
    P, c = tok.pos_proj.weight.detach().numpy(), tok.pos_proj.bias.detach().numpy()
    np.testing.assert_allclose(e[1, 3, 1], W @ x[1, 3, 4:] + b + P @ pos[3] + c, atol=1e-5)
    np.testing.assert_allclose(tok.decode(e, pos), x, atol=1e-4)
    with pytest.raises(DataError, match=r"pass ch_pos of shape \(C, 3\)"):
        tok.encode(x)
    with pytest.raises(DataError, match="with C = 5"):
        tok.encode(x, pos[:4])
    tok.save(tmp_path)
    np.testing.assert_allclose(load(tmp_path).encode(x, pos), e, atol=1e-6)
