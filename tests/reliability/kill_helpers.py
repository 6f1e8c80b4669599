"""Run a Python snippet in a child process and SIGKILL it when it prints a marker line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run_until(
    code: str, marker: str, *args: str, timeout: float = 120.0, env: dict | None = None
) -> list[str]:
    """Start ``python -c code args...``; SIGKILL it as soon as a stdout line equals ``marker``. Returns the lines it
    printed. Fails when the child ends (or ``timeout`` passes) without printing the marker."""
    repo = Path(__file__).resolve().parents[2]
    child_env = {**os.environ, "PYTHONPATH": str(repo), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env)  # fmt: skip
    lines: list[str] = []
    t0 = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if lines[-1] == marker:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return lines
        if time.monotonic() - t0 > timeout:
            break
    proc.kill()
    _, err = proc.communicate(timeout=30)
    raise AssertionError(f"the child never printed {marker!r}; its output: {lines[-5:]} {err[-2000:]}")
