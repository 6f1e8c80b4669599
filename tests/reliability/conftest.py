"""Fixtures of the reliability suite: the toy training workspace of ``tests/training`` and a helper that holds a
lock from another process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from training.conftest import make_toy_workspace, toy_config  # noqa: F401 - re-exported for the tests

HOLDER = """
import sys, time
from differ_common.io import hold_lock
held = hold_lock(sys.argv[1], "x", "y")
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="session")
def toy_rel(tmp_path_factory) -> dict:
    return make_toy_workspace(tmp_path_factory.mktemp("toy_rel"))


@pytest.fixture
def other_process_holds() -> Iterator:
    """``hold(lock_file)`` starts a second Python process that takes ``lock_file`` with ``hold_lock`` and keeps it
    until the test ends (then it is killed, which frees the lock)."""
    procs: list[subprocess.Popen] = []

    def hold(lock_file: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock_file)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)
        time.sleep(0)
