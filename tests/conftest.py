"""Shared fixtures: real recordings shipped in PyPI wheels (see ../shared/DATA.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("neurofm", deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("neurofm")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (small models: thread start-up outweighs the work
    on 2 cores); restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def spkit_eeg():
    """spkit's REAL 14-channel Emotiv EEG (128 Hz, 16 s, uV) as a canonical recording."""
    from neurofm.datasets import spkit_eeg

    return spkit_eeg()


@pytest.fixture(scope="session")
def edf_path():
    """pyedflib's REAL EDF+ file (11 channels, 200 Hz, 600 s, 2 annotations)."""
    from neurofm.datasets import pyedflib_file

    return pyedflib_file("test_generator.edf")


@pytest.fixture(scope="session")
def bdf_path():
    """pyedflib's REAL BDF+ file with mixed per-channel rates (500-1000 Hz)."""
    from neurofm.datasets import pyedflib_file

    return pyedflib_file("test_generator.bdf")


@pytest.fixture
def small_recording():
    """A generated 8-channel EEG recording (random numbers; for layout tests only)."""
    from neurofm.schema import make_recording

    rng = np.random.default_rng(0)
    return make_recording(rng.standard_normal((8, 1000)) * 10, channel=[f"E{i}" for i in range(8)],
                          sfreq=250.0, modality="eeg", subject="01", task="rest",
                          events=[(0.5, 0.0, "stim/a"), (1.5, 0.2, "stim/b")])
