"""scripts/paired_differences.py: variant minus the baseline of the same seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "paired_differences.py"


def _module():
    spec = importlib.util.spec_from_file_location("paired_differences", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_differences_are_paired_by_seed():
    rows = []
    for seed, base, differ in ((0, 0.20, 0.25), (1, 0.40, 0.38), (2, 0.30, 0.36)):
        for variant, value in (("baseline", base), ("differ", differ)):
            rows.append({"seed": seed, "variant": variant, "noise": 0.0, "protocol": "clothes_changing",
                         "mAP": value})  # fmt: skip
            rows.append({"seed": seed, "variant": variant, "noise": 0.0, "protocol": "general", "mAP": 0.9})
    table = _module().paired_table(pd.DataFrame(rows), "clothes_changing", "mAP")
    lines = table.splitlines()
    assert lines[2] == "| 0 | 20.0 | 25.0 (+5.0) |"
    assert lines[3] == "| 1 | 40.0 | 38.0 (-2.0) |"
    assert (
        lines[5] == "| mean diff | | +3.0 ± 4.4 |"
    )  # diffs 5, -2, 6: unpaired means would give +3.0 too, std 4.4
    assert lines[6] == "| seeds above baseline | | 2/3 |"
