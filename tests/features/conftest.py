"""Shared fixtures of the text-feature tests: one real minilm encoder per session and a counting wrapper."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


class CountingEncoder:
    """Wraps a real TextEncoder: records every string it is asked to encode; can fail after N calls (a kill)."""

    def __init__(self, inner, spec: str | None = None, fail_after: int | None = None) -> None:
        self.inner = inner
        self.spec = spec or inner.spec
        self.dim = inner.dim
        self.fingerprint = inner.fingerprint
        self.batch_size = inner.batch_size
        self.fail_after = fail_after
        self.calls = 0
        self.seen: list[str] = []

    def encode(self, texts, batch_size=None, progress=False):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size=batch_size)


@pytest.fixture(scope="session")
def minilm():
    from captions.encoders import load_encoder

    return load_encoder("minilm", device="cpu")


@pytest.fixture
def counting(minilm):
    return lambda **kw: CountingEncoder(minilm, **kw)
