"""Fixtures of the pipeline tests: the sample BIDS tree built offline into a temp folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    """The bundled sample dataset (real spkit/pyedflib EEG, real nitime BOLD, generated MEG
    and calcium), built by neurofm.datasets into a temp folder."""
    from neurofm.datasets import make_sample_data

    return make_sample_data(tmp_path_factory.mktemp("sample") / "sample")
