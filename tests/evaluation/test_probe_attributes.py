"""scripts/probe_attributes.py: the linear probe finds an attribute the features encode, and not one they lack."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "probe_attributes.py"


def _module():
    spec = importlib.util.spec_from_file_location("probe_attributes", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_probe_separates_encoded_from_absent_attributes():
    mod = _module()
    rng = np.random.default_rng(0)
    colours = np.array(["red", "blue", "green", "grey"])

    def split(n):
        y_in = colours[rng.integers(0, 4, n)]
        y_out = colours[rng.integers(0, 4, n)]
        onehot = (y_in[:, None] == colours[None, :]).astype(np.float32)
        x = np.concatenate([onehot * 2.0, rng.normal(size=(n, 12)).astype(np.float32)], 1)
        x += rng.normal(scale=0.3, size=x.shape).astype(np.float32)
        return x, pd.DataFrame({"encoded": y_in, "absent": y_out})

    res = mod.probe(split(300), split(200), ("encoded", "absent"))
    acc_in, chance_in = res["encoded"]
    acc_out, chance_out = res["absent"]
    assert acc_in > 0.9 and chance_in < 0.4
    assert acc_out < 0.45  # four balanced classes: about 0.25
    # an unseen test value counts as wrong, not as skipped
    assert mod.fit_probe(np.eye(2), np.array(["a", "b"]), np.eye(2), np.array(["a", "c"])) == 0.5


def test_markdown_table():
    mod = _module()
    md = mod.to_markdown(pd.DataFrame({"model": ["m"], "skin_tone": [12.345]}))
    assert md.splitlines() == ["| model | skin_tone |", "|---|---|", "| m | 12.3 |"]


def test_the_probe_table_names_each_checkpoints_record(tmp_path):
    from differ_core.reproducibility import record_sha256, update_record

    mod = _module()
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    record = update_record(run, training={"run": "r"})
    lines = mod.record_lines([f"a={run / 'checkpoints' / 'best.pt'}", f"b={tmp_path / 'x.pt'}"])
    assert lines[0] == f"- a: {run / 'reproduce.json'} (sha256 {record_sha256(record)})"
    assert lines[1].startswith("- b: no reproduce.json")
