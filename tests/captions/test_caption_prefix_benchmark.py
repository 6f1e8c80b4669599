"""benchmarks/caption_prefix.py --quick runs, keeps the captions identical and prints its documented last line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prefix_benchmark_quick_mode_prints_its_ratio_last():
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "caption_prefix.py"), "--quick"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert "captions identical: yes" in lines
    assert re.fullmatch(r"speed-up prefix reuse / recompute: \d+\.\d\dx", lines[-1]), lines[-1]
    assert re.search(r"prefix \d+ \(image 64\), question \d+, answer 4", res.stdout)
