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
    assert lines[6] == "| 95% interval | | [-7.8, +13.8] |"  # 3.0 ± t(0.975, 2) 4.303 x 4.36 / sqrt(3)
    assert lines[7] == "| seeds above baseline | | 2/3 |"


def test_a_variant_with_fewer_seeds_is_paired_on_its_own_seeds():
    rows = [
        {"seed": s, "variant": "baseline", "noise": 0.0, "protocol": "general", "mAP": 0.1 * s}
        for s in range(5)
    ]
    rows += [{"seed": s, "variant": "bio", "noise": 0.0, "protocol": "general", "mAP": 0.1 * s + 0.01 * (s + 1)}
             for s in range(3)]  # fmt: skip
    lines = _module().paired_table(pd.DataFrame(rows), "general", "mAP").splitlines()
    assert lines[2 + 4] == "| 4 | 40.0 | — |"
    assert lines[7] == "| mean diff | | +2.0 ± 1.0 |"  # diffs 1, 2, 3: seeds 3 and 4 are not paired
    assert lines[8] == "| 95% interval | | [-0.5, +4.5] |"
    assert lines[9] == "| seeds above baseline | | 3/3 |"
