"""`differ reproduce` without training: a changed real dataset is refused naming the manifest; the record's
git state and the command line handed down by the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from PIL import Image

from differ_core.config import load_config
from differ_core.config_files import resolve_config
from differ_core.reproducibility import git_state, manifest_record, update_record
from flows.config import PipelineConfig
from flows.reproduce import pipeline_config_for, rebuild_manifest

LTCC = {
    "train": ["005_1_c3_015857.png", "005_2_c7_000010.png", "012_1_c1_000001.png", "012_3_c2_000002.png"],
    "query": ["020_1_c2_000100.png", "031_2_c5_000101.png"],
    "test": ["020_1_c4_000200.png", "020_2_c6_000201.png", "031_1_c5_000202.png", "031_2_c9_000203.png"],
}


def _ltcc(root: Path) -> Path:
    for split, names in LTCC.items():
        for i, name in enumerate(names):
            path = root / "LTCC_ReID" / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 8), (10 * i, 60, 30)).save(path)
    return root


def _recorded_run(tmp_path: Path, root: Path) -> Path:
    """A run folder whose record names an LTCC manifest built from ``root`` in another workspace."""
    from data_manifests.registry import make_manifest
    from data_manifests.schema import load_manifest

    w0 = tmp_path / "w0"
    make_manifest(w0, "ltcc", root)
    run = w0 / "runs" / "r"
    train_cfg = load_config(resolve_config("synthcc_tiny"), ["data.dataset=ltcc", f"data.workdir={w0}"])
    pipe = PipelineConfig(dataset="ltcc", root=str(root), workdir=str(w0)).model_dump(mode="json")
    update_record(
        run,
        training={"config": train_cfg.model_dump(mode="json"),
                  "inputs": {"manifest": manifest_record(load_manifest(w0, "ltcc"))}},
        pipeline={"config": pipe, "prompts_yaml": None},
    )  # fmt: skip
    (run / "metrics.json").write_text(json.dumps({"protocols": {"general": {"rank1": 1.0, "mAP": 1.0}}}))
    return run


def test_unchanged_dataset_rebuilds_the_same_manifest_fingerprint_in_another_workspace(tmp_path):
    root = _ltcc(tmp_path / "data")
    run = _recorded_run(tmp_path, root)
    rec = json.loads((run / "reproduce.json").read_text())
    cfg = pipeline_config_for(rec, tmp_path / "w1", "r")
    assert cfg.root == str(root) and cfg.workdir == str(tmp_path / "w1") and not cfg.evaluate
    assert rebuild_manifest(cfg)["fingerprint"] == rec["training"]["inputs"]["manifest"]["fingerprint"]


def test_changed_dataset_is_refused_naming_the_manifest(tmp_path, capsys):
    from flows.cli import main

    root = _ltcc(tmp_path / "data")
    run = _recorded_run(tmp_path, root)
    (root / "LTCC_ReID" / "train" / "012_3_c2_000002.png").unlink()  # the dataset changed since the run
    assert main(["reproduce", str(run), "--workdir", str(tmp_path / "w1")]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("first input that differs"))
    assert line.startswith("first input that differs: manifest: recorded ") and "not retraining" in line
    assert str(root) in line
    assert not (tmp_path / "w1" / "runs").exists()  # nothing was trained


def test_reproduce_refuses_a_run_without_a_record_and_the_runs_own_workspace(tmp_path, capsys):
    from flows.cli import main

    (tmp_path / "old").mkdir()
    assert main(["reproduce", str(tmp_path / "old"), "--workdir", str(tmp_path / "w1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "reproduce.json: no training part" in err and "\n" not in err
    run = _recorded_run(tmp_path, _ltcc(tmp_path / "data"))
    assert main(["reproduce", str(run), "--workdir", str(tmp_path / "w0")]) == 2
    assert "holds the run itself; give a fresh folder" in capsys.readouterr().err


def test_git_state_names_the_commit_and_whether_the_tree_is_dirty(tmp_path):
    assert git_state(tmp_path) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("one")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("two")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}
