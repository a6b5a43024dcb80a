"""Fixtures for the tokenizer tests: the released MEG-GPT tokenizer, generated MEG-like data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizer_helpers import RELEASE


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small GRUs run fastest on one thread (and do not fight other test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def release_dir():
    return RELEASE


@pytest.fixture(scope="session")
def released():
    from neurofm.tokenizers import MEGGPTTokenizer

    return MEGGPTTokenizer.from_pretrained(RELEASE)


@pytest.fixture(scope="session")
def goldens():
    with np.load(RELEASE / "goldens.npz") as npz:
        return {k: npz[k] for k in npz.files}
