"""The package graph runs one way: differ_common → data_manifests → captions → differ_core → flows.

Every import counts, including those inside functions and lazy ``importlib`` tables, so a cycle cannot hide in a
function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["differ_common", "data_manifests", "captions", "differ_core", "flows"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every first-party import in one file, string tables included."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # lazy export tables ("name": "captions.writer") and importlib.import_module("...") strings
            if node.value.split(".")[0] in RANK and node.value.count(".") >= 1 and " " not in node.value:
                names = [node.value]
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in RANK]
    return found


def _package_files() -> dict[str, list[Path]]:
    return {pkg: sorted((ROOT / pkg).rglob("*.py")) for pkg in LAYERS}


def test_every_import_points_down_the_layers():
    upward = []
    for pkg, files in _package_files().items():
        for f in files:
            for line, target in _imports(f):
                if RANK[target] > RANK[pkg]:
                    upward.append(f"{f.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "imports against the layer order " + " → ".join(LAYERS) + ":\n" + "\n".join(upward)


def test_the_foundation_and_the_layer_check_see_real_imports():
    # the scanner must see both kinds of import, or the test above proves nothing
    files = _package_files()
    seen = {t for f in files["flows"] for _, t in _imports(f)}
    assert {"differ_common", "data_manifests", "captions", "differ_core"} <= seen
    assert all(t == "differ_common" for f in files["differ_common"] for _, t in _imports(f))


def _captions_modules(path: Path) -> set[str]:
    """Every ``captions.*`` module one file imports (function bodies included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        out |= {n for n in names if n.startswith("captions.")}
    return out


def test_the_text_feature_stage_is_its_own_subpackage():
    # captions/features/ reads the caption tables and nothing else of the captioning side; the captioning side
    # (prompts, backends, writer, summaries) never imports the text-feature stage (captions/__init__'s lazy table
    # of public names aside)
    features = ROOT / "captions" / "features"
    inward = {
        f"{f.relative_to(ROOT)} imports {m}"
        for f in sorted(features.rglob("*.py"))
        for m in _captions_modules(f)
        if not m.startswith("captions.features") and m != "captions.table"
    }
    outward = {
        f"{f.relative_to(ROOT)} imports {m}"
        for f in sorted((ROOT / "captions").rglob("*.py"))
        if features not in f.parents
        for m in _captions_modules(f)
        if m.startswith("captions.features")
    }
    assert sorted(features.glob("*.py")) and not inward and not outward, sorted(inward | outward)
