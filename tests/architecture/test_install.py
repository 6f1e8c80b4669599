"""A built wheel carries every package and the data the code reads, and works outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    # build from a clean copy of the files git would ship (a stale build/ folder must not hide a missing file)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()  # fmt: skip
    for rel in listed:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, cwd=out, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    (whl,) = out.glob("differ-*.whl")
    return whl


def test_wheel_holds_the_packages_and_their_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in ("differ_common", "data_manifests", "captions", "differ_core", "flows"):
        assert f"{pkg}/__init__.py" in names, pkg
    shipped = {n for n in names if n.startswith("differ_core/configs/")}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "differ_core" / "configs").rglob("*.yaml")}
    assert on_disk and shipped == on_disk  # every training config, ablation overlay and pipeline file
    assert "captions/prompts.yaml" in names
    starts = {n for n in names if n.startswith("differ_core/starts/")}
    starts_on_disk = {
        str(p.relative_to(ROOT)) for p in (ROOT / "differ_core" / "starts").rglob("*") if p.is_file()
    }
    assert "differ_core/starts/synthcc_start/open_clip_model.safetensors" in starts_on_disk
    assert starts == starts_on_disk  # the shipped pre-trained start: weights, config JSON, record
    assert not any(n.startswith(("tests/", "benchmarks/", "scripts/")) for n in names)


def test_installed_wheel_resolves_configs_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine").mkdir()
    (elsewhere / "mine" / "my_run.yaml").write_text("base: synthcc_tiny.yaml\n")
    env = {**os.environ, "PYTHONPATH": str(target), "DIFFER_CONFIG_PATH": str(elsewhere / "mine")}
    code = (
        "import differ_core, sys; from differ_core.config_files import resolve_config; "
        "print(differ_core.__file__); print(resolve_config('configs/synthcc_tiny.yaml')); "
        "print(resolve_config('my_run')); "
        "from differ_core.clip_pretrain.config import load_pretrain_config as L; "
        "from differ_core.clip_pretrain.shipped import find_shipped; "
        "print(find_shipped('synthcc_start', L('synthcc_start')).weights)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pkg, shipped, mine, start = out.stdout.split()
    assert start.startswith(str(target)), start  # the shipped start is found (sha256 checked) in the install
    assert pkg.startswith(str(target)) and shipped.startswith(
        str(target)
    )  # the installed copy, not the checkout
    assert Path(mine) == elsewhere / "mine" / "my_run.yaml"
    cli = subprocess.run(
        [sys.executable, "-m", "flows.cli", "configs", "--path", "ablations/baseline"],
        cwd=elsewhere, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 0 and cli.stdout.strip().startswith(str(target)), cli.stderr
