"""scripts/synthcc_oracles.py: clothing words alone are near chance under the clothes-changing protocol (the
problem is real), identity words alone are the ceiling, and a same-clothes query is found by its clothes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "synthcc_oracles.py"
_spec = importlib.util.spec_from_file_location("synthcc_oracles", _SCRIPT)
oracles = importlib.util.module_from_spec(_spec)
sys.modules["synthcc_oracles"] = oracles
_spec.loader.exec_module(oracles)


def test_oracles_on_a_small_synthcc(tmp_path):
    from data_manifests.synthcc.dataset import build
    from data_manifests.synthcc.generator import load_attributes

    manifest = build(tmp_path, size="small", img_height=32, img_width=16)
    rows = oracles.oracle_table(manifest, load_attributes(manifest.attrs["synthcc"]["folder"]), trials=2)
    got = {(r["oracle"], r["protocol"]): (r["rank1"], r["mAP"]) for r in rows}
    chance = got[("chance (random features)", "clothes_changing")]
    clothing = got[("clothing attributes", "clothes_changing")]
    identity = got[("identity traits", "clothes_changing")]
    assert identity == (100.0, 100.0)  # every identity has its own trait words
    assert clothing[0] <= chance[0] + 10 and clothing[1] <= chance[1] + 10, (clothing, chance)
    assert got[("clothing attributes", "same_clothes")][0] == 100.0  # the clothes do find the same outfit
