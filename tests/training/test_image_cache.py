"""The shared decoded-image cache (docs/design.md §10): one file written once under a lock, gathered per batch,
rebuilt when damaged, and the per-batch disk path when it does not fit."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from differ_common.errors import ConfigError
from differ_common.shared_array import header_path, read_header
from differ_core.decode import decode_images
from differ_core.image_cache import open_image_cache
from differ_core.images import open_images

from .conftest import toy_config

SIZE = (32, 16)


def _train_rows(toy) -> tuple[list[str], list[str]]:
    m = toy["manifest"]
    m = m[m["split"] == "train"]
    return m["path"].tolist(), m["image_id"].tolist()


def test_gathered_batches_equal_directly_decoded_images_bit_for_bit(toy, tmp_path):
    paths, ids = _train_rows(toy)
    src = open_images(tmp_path, "toy-train", paths, ids, SIZE, log=lambda _m: None)
    assert src.kind == "mapped" and src.shape == (len(paths), 3, *SIZE)
    direct = decode_images(paths, SIZE, threads=1)
    idx = [5, 0, 5, len(paths) - 1, 17]
    assert torch_equal(src[idx], direct[idx]) and src[idx].dtype == direct.dtype
    assert torch_equal(src[2:9], direct[2:9])
    view = src.subset(np.arange(len(paths))[::3])  # a view of rows, like the training / validation split
    assert len(view) == len(range(0, len(paths), 3))
    assert torch_equal(view[[1, 2]], direct[[3, 6]])
    assert [rows for rows, _ in view.batches([[0, 1], [2]])] == [[0, 1], [2]]
    head = read_header(src.array.filename)
    assert head["meta"]["image_ids"] == ids and head["shape"] == [len(paths), 3, *SIZE]


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


_RACER = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    from differ_common.shared_array import open_shared_array

    path, lock = sys.argv[1], sys.argv[2]
    built, logs = [], []

    def blocks():
        built.append(True)
        time.sleep(1.5)  # a slow writer: the other process must wait, not write too
        yield np.arange(12, dtype=np.uint8).reshape(3, 4)

    mm, head = open_shared_array(path, "k1", (3, 4), "uint8", blocks, lock, log=logs.append)
    print(json.dumps({"pid": os.getpid(), "built": bool(built), "logs": logs, "sum": int(mm.sum()),
                      "writer": head["writer"]["pid"]}))
    """
)


def test_two_processes_share_one_file_written_once_and_the_second_writer_waits(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    target, lock = tmp_path / "cache" / "a.npy", tmp_path / "locks" / "a.lock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, str(script), str(target), str(lock)], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]  # fmt: skip
    out = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    builders = [o for o in out if o["built"]]
    assert len(builders) == 1  # written once
    waiter = next(o for o in out if not o["built"])
    assert any("waiting" in line for line in waiter["logs"])
    assert {o["writer"] for o in out} == {builders[0]["pid"]} and {o["sum"] for o in out} == {66}
    before = (target.stat().st_mtime_ns, header_path(target).read_text())
    again = json.loads(subprocess.run([sys.executable, str(script), str(target), str(lock)], capture_output=True,
                                      text=True, env=env, check=True).stdout)  # fmt: skip
    assert not again["built"] and again["writer"] == builders[0]["pid"]
    assert (target.stat().st_mtime_ns, header_path(target).read_text()) == before  # a later run only reads


def test_a_truncated_or_mismatched_cache_is_rebuilt_with_one_line(toy, tmp_path):
    paths, ids = _train_rows(toy)
    direct = decode_images(paths, SIZE, threads=1).numpy()
    mm = open_image_cache(tmp_path, "toy-train", paths, ids, SIZE, log=lambda _m: None)
    file = Path(mm.filename)
    del mm
    size = file.stat().st_size
    os.truncate(file, size - 100)  # a partial copy
    logs: list[str] = []
    mm = open_image_cache(tmp_path, "toy-train", paths, ids, SIZE, log=logs.append)
    assert file.stat().st_size == size and np.array_equal(np.asarray(mm), direct)
    rebuilt = [line for line in logs if "rebuilding" in line]
    assert len(rebuilt) == 1 and "truncated or partial" in rebuilt[0] and str(file) in rebuilt[0]
    del mm
    head = json.loads(header_path(file).read_text())
    head["meta"]["image_ids"] = list(reversed(ids))  # a header that does not describe these images
    header_path(file).write_text(json.dumps(head))
    logs.clear()
    mm = open_image_cache(tmp_path, "toy-train", paths, ids, SIZE, log=logs.append)
    assert np.array_equal(np.asarray(mm), direct)
    assert sum("rebuilding" in line for line in logs) == 1
    logs.clear()
    open_image_cache(tmp_path, "toy-train", paths, ids, SIZE, log=logs.append)
    assert logs == []  # a good cache is only opened


def _losses(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "train_log.csv", newline="") as fh:
        return [(r["step"], r["loss"]) for r in csv.DictReader(fh)]


def test_the_disk_fallback_trains_the_same_run_and_says_its_line(toy, tmp_path, capsys):
    from differ_core.config import TrainConfig
    from differ_core.training import train

    sections = {"schedule": {"epochs": 1, "warmup_epochs": 0}}
    cached = train(TrainConfig.model_validate(toy_config(toy, tmp_path / "cached", **sections)))
    out = capsys.readouterr().out
    assert "decoding from disk per batch instead" not in out
    tiny = {"image_cache_max_gb": 1e-6, "num_workers": 1, "decode_threads": 1}
    cfg = toy_config(toy, tmp_path / "disk", data={**toy_config(toy, tmp_path)["data"], **tiny}, **sections)
    disk = train(TrainConfig.model_validate(cfg))
    lines = [line for line in capsys.readouterr().out.splitlines() if "decoding from disk per batch" in line]
    assert (
        len(lines) == 1 and "data.image_cache_max_gb=1e-06" in lines[0] and "1 DataLoader worker" in lines[0]
    )
    assert _losses(disk) == _losses(cached) and len(_losses(cached)) > 0  # the same bytes, the same run
    paths, ids = _train_rows(toy)
    with pytest.raises(ConfigError, match="data.image_cache=disk.*raise the limit"):
        open_images(tmp_path, "toy-train", paths, ids, SIZE, mode="disk", max_gb=1e-6)
