"""The fault matrix: each stage SIGKILLed at a chosen point in a child process, then run again; nothing is lost,
duplicated, stale or left behind. Two processes on one run: one trains, the other is refused in one line.
(The decoded-image cache build is killed in test_image_cache.py.)"""

from __future__ import annotations

import csv
import subprocess
import sys

import pandas as pd
import pytest

from captions.table import caption_status, read_current_captions, read_parts
from data_manifests.registry import make_manifest
from differ_core.config import TrainConfig
from differ_core.training import train
from flows.cli import main

from .conftest import toy_config
from .kill_helpers import run_until

SMALL = {"size": "tiny", "num_train_ids": 4, "num_test_ids": 2}
SMALL_ARGS = ["--size", "tiny", "--set", "num_train_ids=4", "--set", "num_test_ids=2"]


def _temps(folder) -> list[str]:
    return [str(p) for p in folder.rglob(".tmp-*")]


KILL_MANIFEST = """
import sys, time
import data_manifests.synthcc.generator as g
real = g._render_chunk
def slow(specs, *args):
    real(specs[:5], *args)
    print("rendering", flush=True)
    time.sleep(60)
g._render_chunk = slow
from data_manifests.registry import make_manifest
make_manifest(sys.argv[1], "synthcc", None, size="tiny", num_train_ids=4, num_test_ids=2, workers=1)
"""


def test_manifest_killed_while_generating(tmp_path):
    w = tmp_path / "w"
    run_until(KILL_MANIFEST, "rendering", str(w))
    assert (
        not (w / "data" / "SynthCC").exists() and not (w / "manifests").exists()
    )  # nothing half-made in place
    make_manifest(w, "synthcc", None, **SMALL)
    assert [p.name for p in (w / "data").iterdir()] == ["SynthCC"] and not _temps(w)
    m = pd.read_parquet(w / "manifests" / "synthcc.parquet")
    assert m["image_sha"].notna().all() and m["image_id"].is_unique


KILL_CAPTION = """
import sys, time
import captions.writer as wr
real, n = wr.write_part, [0]
def counted(folder, rows):
    out = real(folder, rows)
    n[0] += 1
    if n[0] == 2:
        print("two parts", flush=True)
        time.sleep(60)
    return out
wr.write_part = counted
from flows.cli import main
main(["--workdir", sys.argv[1], "caption", "--dataset", "synthcc", "--perspectives", "clothing"])
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    w = tmp_path_factory.mktemp("small")
    make_manifest(w, "synthcc", None, **SMALL)
    return w


def test_caption_killed_after_some_parts_then_resumed(small, capsys):
    run_until(KILL_CAPTION, "two parts", str(small))
    before = read_parts(small / "captions" / "synthcc" / "perspective=clothing")
    assert 0 < len(before)
    assert (
        main(["--workdir", str(small), "caption", "--dataset", "synthcc", "--perspectives", "clothing"]) == 0
    )
    rows = read_parts(small / "captions" / "synthcc" / "perspective=clothing")
    assert rows["image_id"].is_unique  # the killed run's rows were kept, none captioned twice
    assert set(before["image_id"]) <= set(rows["image_id"])
    st = caption_status(small, "synthcc").set_index("perspective").loc["clothing"]
    assert st["missing"] == 0 and st["stale"] == 0 and st["errors"] == 0
    assert not _temps(small / "captions") and not list((small / ".locks").rglob("*.claim"))


KILL_ENCODE = """
import sys, time
import captions.features.tables as f
real, n = f._write_shard, [0]
def counted(path, table):
    real(path, table)
    n[0] += 1
    print("shard", flush=True)
    time.sleep(60)
f._write_shard = counted
from flows.cli import main
main(["--workdir", sys.argv[1], "encode", "--dataset", "synthcc", "--perspectives", "clothing", "--no-progress",
      "--batch-size", "8"])
"""


def test_encode_killed_after_a_batch_then_resumed(small):
    if not (small / "captions" / "synthcc" / "_current.json").exists():
        assert (
            main(["--workdir", str(small), "caption", "--dataset", "synthcc", "--perspectives", "clothing"])
            == 0
        )
    run_until(KILL_ENCODE, "shard", str(small))
    enc = [
        "--workdir",
        str(small),
        "encode",
        "--dataset",
        "synthcc",
        "--perspectives",
        "clothing",
        "--no-progress",
    ]
    assert main(enc) == 0
    from captions.features.reader import read_perspective
    from captions.features.tables import feature_status

    st = feature_status(small, "synthcc").set_index("perspective").loc["clothing"]
    assert st["missing"] == 0 and st["stale"] == 0 and st["encoded"] == st["current"]
    ids, _ = read_perspective(small, "synthcc", "minilm", "clothing")
    cur = read_current_captions(small, "synthcc", ["clothing"], split="train")
    assert sorted(ids.tolist()) == sorted(cur["image_id"]) and len(set(ids.tolist())) == len(ids)
    folder = small / "features" / "synthcc" / "minilm"
    assert not _temps(folder) and not list(folder.rglob("_pending-*"))


KILL_TRAIN = """
import sys, time
from differ_core.config import TrainConfig
from differ_core.training import Trainer, train
import yaml
real = Trainer.train_step
def step(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    print(f"step {self.step + 1}", flush=True)
    return out
Trainer.train_step = step
train(TrainConfig.model_validate(yaml.safe_load(open(sys.argv[1]))))
"""


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_killed_mid_epoch_then_resumed_and_evaluated(toy_rel, tmp_path):
    run_dir = tmp_path / "run"
    cfg = TrainConfig.model_validate(toy_config(toy_rel, run_dir, run={"checkpoint_every_steps": 3}))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    run_until(KILL_TRAIN, "step 5", str(cfg_file))
    (run_dir / "checkpoints" / ".tmp-last.pt.killed").write_bytes(b"x" * 1000)  # a checkpoint cut by the kill
    train(cfg)
    rows = _rows(run_dir / "train_log.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(1, len(steps) + 1))  # each step once, one header
    assert [int(r["epoch"]) for r in _rows(run_dir / "val_log.csv")] == [1, 2]
    assert not _temps(run_dir)

    from differ_core.evaluation.runner import evaluate_run

    kill_eval = (
        "import sys, time\n"
        "import differ_core.evaluation.runner as r\n"
        "real = r.evaluate_loaded\n"
        "def slow(*a, **k):\n"
        "    print('evaluating', flush=True)\n"
        "    time.sleep(60)\n"
        "r.evaluate_loaded = slow\n"
        "r.evaluate_run(sys.argv[1], progress=False)\n"
    )
    run_until(kill_eval, "evaluating", str(run_dir))
    metrics = evaluate_run(run_dir, progress=False)  # the killed evaluation's lock died with it
    assert (run_dir / "metrics.json").is_file() and metrics["protocols"] and not _temps(run_dir)


TRAIN_CHILD = """
import sys, yaml
from differ_core.config import TrainConfig
from differ_core.training import train
from differ_common.errors import DifferError
try:
    train(TrainConfig.model_validate(yaml.safe_load(open(sys.argv[1]))))
except DifferError as exc:
    print(f"refused: {exc}", flush=True)
    sys.exit(2)
"""


def test_two_trainings_of_one_run_one_writes_the_other_is_refused(toy_rel, tmp_path):
    run_dir = tmp_path / "run"
    files = []
    for lr in (0.001, 0.01):
        f = tmp_path / f"lr{lr}.yaml"
        cfg = TrainConfig.model_validate(
            toy_config(toy_rel, run_dir, optim={"lr": lr}, schedule={"epochs": 1})
        )
        f.write_text(cfg.to_yaml())
        files.append(f)
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, str(f)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for f in files]  # fmt: skip
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(o for o in outs if "refused:" in o).split("refused: ", 1)[1].strip()
    assert refused.count("\n") == 0 and "is held by" in refused, refused
    saved = yaml_lr(run_dir / "config.yaml")
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["optim"]["lr"] == saved  # config.yaml says what last.pt was trained with
    steps = [int(r["step"]) for r in _rows(run_dir / "train_log.csv")]
    assert steps == list(range(1, len(steps) + 1)) and len(_rows(run_dir / "val_log.csv")) == 1


def yaml_lr(path) -> float:
    import yaml

    return float(yaml.safe_load(path.read_text())["optim"]["lr"])
