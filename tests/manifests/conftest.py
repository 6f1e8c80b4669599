"""Fixtures of the manifest tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A dataset root whose own path looks like labels: it must not change a single one."""
    r = tmp_path / "reid_2024_c1" / "007_3_c12_000045"
    r.mkdir(parents=True)
    return r
