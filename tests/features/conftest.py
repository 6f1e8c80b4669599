"""Shared fixtures of the text-feature tests: one real minilm encoder per session and a counting wrapper."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from feature_helpers import CountingEncoder  # noqa: E402


@pytest.fixture(scope="session")
def minilm():
    from captions.features.encoders import load_encoder

    return load_encoder("minilm", device="cpu")


@pytest.fixture
def counting(minilm):
    return lambda **kw: CountingEncoder(minilm, **kw)
