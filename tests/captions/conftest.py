"""Shared fixtures of the caption tests: small workspaces and tiny local models (built once per session)."""

from __future__ import annotations

import pytest
from caption_helpers import make_workspace


@pytest.fixture
def synth_ws(tmp_path):
    """A tiny SynthCC-like workspace: 4 identities × 3 train images (+ query/gallery), manifest + attributes."""
    return make_workspace(tmp_path / "w", n_ids=4, per_id=3)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A tiny random-weight LLaVA saved to disk (loaded back with AutoProcessor/AutoModelForImageTextToText)."""
    from captions.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "tiny-llava")


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A tiny random-weight Llama causal LM with tokenizer and chat template."""
    from captions.testing import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "tiny-lm")
