"""A real 2-process CPU run (gloo) through ``accelerate launch``: disjoint batches per rank, a loadable checkpoint."""

from __future__ import annotations

import os
import shutil
import socket
from collections import defaultdict

import torch
import yaml

from differ_common.shared_array import read_header

from .conftest import toy_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_run_has_disjoint_batches(toy, tmp_path, monkeypatch, capsys):
    """``differ train --processes 2`` → flows.launch.accelerate_command + run_streaming → 2 gloo ranks."""
    from differ_core.model import load_model_for_inference
    from flows.cli import main

    work = tmp_path / "work"  # a fresh workspace: the ranks write its image cache
    shutil.copytree(toy["work"] / "manifests", work / "manifests")
    cfg = toy_config(toy, tmp_path / "run", run={"debug_batches": True, "val_ids": 0.0, "threads": 1},
                     schedule={"epochs": 2})  # fmt: skip
    cfg["data"]["workdir"] = str(work)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["train", "--config", str(cfg_file), "--processes", "2", "--main-process-port", str(_free_port())]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in out and "on 2 process(es)" in out
    assert (tmp_path / "run" / "launch_config.yaml").exists()

    per_rank: dict[int, dict[int, tuple[int, list[str]]]] = {}
    for rank in (0, 1):
        rows = (tmp_path / "run" / "debug" / f"batches-rank{rank}.txt").read_text().splitlines()
        per_rank[rank] = {int(s): (int(e), ids.split(",")) for s, e, ids in (r.split("\t") for r in rows)}
    assert per_rank[0].keys() == per_rank[1].keys() and len(per_rank[0]) > 0  # lockstep
    by_epoch: dict[tuple[int, int], set[str]] = defaultdict(set)
    for rank, steps in per_rank.items():
        for step, (epoch, ids) in steps.items():
            assert len(ids) == 4  # P x K = 2 x 2 per process
            assert not set(ids) & set(per_rank[1 - rank][step][1])
            by_epoch[(rank, epoch)] |= set(ids)
    for epoch in (0, 1):
        assert not by_epoch[(0, epoch)] & by_epoch[(1, epoch)]

    caches = list((work / "cache" / "images").glob("*.npy"))  # both ranks read one file, written once by one
    assert len(caches) == 1 and read_header(caches[0])["writer"]["pid"] != os.getpid()
    assert not list((work / "cache" / "images").glob(".tmp-*"))

    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == len(per_rank[0])
    model, _, info = load_model_for_inference(tmp_path / "run" / "checkpoints" / "last.pt")
    assert model(torch.randn(2, 3, 32, 16), torch.tensor([0, 1])).shape == (2, 192)
