"""Chunked captioning: claims and leases, worker processes per device, vLLM requests per chunk, and the faults
(a SIGKILLed worker, two `differ caption` processes at once, a worker whose device cannot load the model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from captions import caption_dataset
from captions.chunks import Claims, plan_chunks
from captions.table import read_parts
from differ_common.errors import DifferError
from differ_common.workspace import Workspace

N_TRAIN = 12
KEY = ["image_id", "perspective", "prompt_id", "captioner"]


def _rows(w: Path, perspectives=("biometrics", "clothing")) -> pd.DataFrame:
    ws = Workspace.at(w)
    return pd.concat([read_parts(ws.perspective_dir("synthcc", p)) for p in perspectives], ignore_index=True)


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def _cli(w: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "--workdir", str(w), "caption", "--dataset", "synthcc", *args]


def test_plan_blocks_are_fixed_by_position_so_two_planners_agree():
    ids = [f"i{k}" for k in range(10)]
    a = plan_chunks(ids, {"pose": set(ids)}, 4)
    b = plan_chunks(ids, {"pose": set(ids[4:])}, 4)  # a later plan, after the first block was written
    assert [c.block for c in a][1:] == [c.block for c in b] and b[0].missing == {"pose": ids[4:8]}
    assert [len(c.image_ids) for c in a] == [4, 4, 2]


def test_claims_one_winner_dead_owner_and_expired_lease_taken_over_done_markers_by_plan_time(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    assert a.acquire("pose-x", "0001") == "mine" and b.acquire("pose-x", "0001") == "held"
    claim = tmp_path / "pose-x" / "0001.claim"
    # a dead process on this host: taken over at once
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    info = json.loads(claim.read_text())
    claim.write_text(json.dumps({**info, "owner": f"{a.host}:{int(dead.stdout)}"}))
    assert b.acquire("pose-x", "0001") == "mine" and b.owns("pose-x", "0001") and not a.owns("pose-x", "0001")
    # another machine's claim: held until its lease expires
    claim.write_text(json.dumps({"owner": "elsewhere:1", "token": "t", "lease_s": 30}))
    assert a.acquire("pose-x", "0001") == "held"
    os.utime(claim, (time.time() - 31, time.time() - 31))
    assert a.acquire("pose-x", "0001") == "mine"
    a.finish("pose-x", "0001")
    assert not claim.exists() and b.acquire("pose-x", "0001") == "done"  # finished after b's plan
    later = Claims(tmp_path)  # a new plan has read those rows: the marker no longer counts
    assert later.acquire("pose-x", "0001") == "mine"


def test_old_parts_without_worker_and_device_columns_stay_readable(synth_ws):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from captions.table import part_schema

    ws = Workspace.at(synth_ws)
    caption_dataset(synth_ws, "synthcc", perspectives="pose")
    folder = ws.perspective_dir("synthcc", "pose")
    table = pq.read_table(next(folder.glob("part-*.parquet")), schema=part_schema())
    old = pa.Table.from_pylist(
        [{**r, "image_id": "old/1.png"} for r in table.to_pylist()[:1]],
        schema=pa.schema([f for f in part_schema() if f.name not in ("worker", "device")]),
    )
    pq.write_table(old, folder / "part-00000000T000000000000Z-old.parquet")
    rows = read_parts(folder)
    assert len(rows) == N_TRAIN + 1 and rows.loc[rows["image_id"] == "old/1.png", "worker"].tolist() == [""]
    assert rows["device"].eq("cpu").sum() == N_TRAIN and rows["worker"].str.contains(":").sum() == N_TRAIN


def test_differ_caption_with_two_workers_writes_every_row_once_and_shows_both(tiny_llava, synth_ws):
    cmd = _cli(synth_ws, "--captioner", f"hf:{tiny_llava}", "--perspectives", "biometrics,clothing")
    proc = subprocess.run([*cmd, "--workers", "2", "--threads", "1", "--chunk-size", "2"],
                          capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    df = _rows(synth_ws)
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any()
    assert df["worker"].nunique() == 2 and set(df["device"]) == {"cpu"}
    again = subprocess.run([*cmd, "--workers", "2"], capture_output=True, text=True, env=_env(), timeout=300)
    assert (
        again.returncode == 0 and "generated      0" in again.stdout and len(_rows(synth_ws)) == 2 * N_TRAIN
    )


def test_a_worker_whose_device_fails_to_load_is_one_line_and_the_others_do_its_share(tiny_llava, synth_ws):
    with pytest.raises(DifferError) as err:
        caption_dataset(synth_ws, "synthcc", "biometrics,clothing", captioner=f"hf:{tiny_llava}",
                        devices="cpu,7", threads=1, chunk_size=3)  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and "on cuda:7: cannot load" in msg and "rerun" in msg
    df = _rows(synth_ws)
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any() and set(df["device"]) == {"cpu"}
    r = caption_dataset(synth_ws, "synthcc", "biometrics,clothing", captioner=f"hf:{tiny_llava}")
    assert sum(r.generated.values()) == 0 and r.total == {"biometrics": N_TRAIN, "clothing": N_TRAIN}


def test_a_worker_sigkilled_mid_chunk_is_taken_over_and_every_row_exists_once(tiny_llava, synth_ws):
    cmd = _cli(synth_ws, "--captioner", f"hf:{tiny_llava}", "--perspectives", "biometrics,clothing")
    proc = subprocess.Popen([*cmd, "--workers", "2", "--threads", "1", "--chunk-size", "1", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    claims = Workspace.at(synth_ws).locks() / "caption-claims" / "synthcc"
    victim = None
    deadline = time.monotonic() + 240
    try:
        while victim is None and proc.poll() is None and time.monotonic() < deadline:
            for f in claims.glob("*/*.claim"):  # a claim exists only while its chunk is in flight
                try:
                    pid = int(json.loads(f.read_text())["owner"].rpartition(":")[2])
                except (OSError, ValueError, KeyError):
                    continue
                os.kill(pid, signal.SIGKILL)
                victim = pid
                break
            time.sleep(0.005)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert victim is not None, "no chunk was caught in flight"
    assert proc.returncode == 2 and f":{victim} on cpu ended (killed by signal 9) mid-chunk" in err, err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1
    caption_dataset(synth_ws, "synthcc", "biometrics,clothing", captioner=f"hf:{tiny_llava}")
    df = _rows(synth_ws)
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any()
    assert not df["worker"].str.endswith(f":{victim}").all()


_GATED = textwrap.dedent(
    """
    import os, sys, time
    from captions.attributes_captioner import AttributesCaptioner
    from captions.writer import caption_dataset

    class Gated(AttributesCaptioner):
        min_batch_size = 1

        def caption(self, images, spec, ids):
            gate = sys.argv[2] if len(sys.argv) > 2 else None
            if gate and not os.path.exists(gate):  # say so, wait for the file
                print("CAPTIONING", flush=True)
                while not os.path.exists(gate):
                    time.sleep(0.02)
            return super().caption(images, spec, ids)

    r = caption_dataset(sys.argv[1], "synthcc", "pose,clothing", batch_size=1, chunk_size=1,
                        backend=Gated(sys.argv[1], "synthcc"), show_progress=False)
    print("GENERATED", sum(r.generated.values()))
    """
)


def test_two_caption_processes_at_once_split_the_chunks_and_never_write_a_row_twice(synth_ws, tmp_path):
    script, gate = tmp_path / "gated.py", tmp_path / "gate"
    script.write_text(_GATED)
    first = subprocess.Popen([sys.executable, str(script), str(synth_ws), str(gate)],
                             stdout=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    second = None
    try:
        assert first.stdout.readline().strip() == "CAPTIONING"  # holds the first chunk, gated
        second = subprocess.Popen([sys.executable, str(script), str(synth_ws)],
                                  stdout=subprocess.PIPE, text=True, env=_env())  # fmt: skip
        deadline = time.monotonic() + 60
        while len(_rows(synth_ws, ("pose", "clothing"))) < 2 * N_TRAIN - 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the second did every other chunk and now waits for the one the first holds
        assert len(_rows(synth_ws, ("pose", "clothing"))) == 2 * N_TRAIN - 2 and second.poll() is None
    finally:
        gate.touch()
        out1, _ = first.communicate(timeout=120)
        out2, _ = second.communicate(timeout=120) if second else ("", "")
    assert first.returncode == second.returncode == 0
    assert "GENERATED 2" in out1 and f"GENERATED {2 * N_TRAIN - 2}" in out2
    df = _rows(synth_ws, ("pose", "clothing"))
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any() and df["worker"].nunique() == 2


def test_vllm_one_generate_per_chunk_image_first_engine_args_pass_through(tiny_llava, synth_ws, monkeypatch):
    """A stand-in ``vllm`` module (vLLM is not installed here) records the engine and its generate calls."""
    import importlib.machinery
    import types

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("the real vLLM is installed")
    calls: dict = {"generate": []}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def generate(self, requests, params, use_tqdm=False):
            calls["generate"].append((requests, params))
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"c{k}")])
                for k in range(len(requests))
            ]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr("captions.backends.vllm._CACHE", {})
    r = caption_dataset(synth_ws, "synthcc", "biometrics,clothing", captioner=f"vllm:{tiny_llava}", chunk_size=5,
                        batch_size=2, engine_args={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8})  # fmt: skip
    assert r.generated == {"biometrics": N_TRAIN, "clothing": N_TRAIN}
    assert calls["engine"]["tensor_parallel_size"] == 2 and calls["engine"]["gpu_memory_utilization"] == 0.8
    assert [len(req) for req, _ in calls["generate"]] == [10, 10, 4]  # chunks of 5, 5, 2 images x 2
    requests, params = calls["generate"][0]
    images = [q["multi_modal_data"]["image"] for q in requests]
    assert images[0::2] == images[1::2]  # a picture's perspectives next to each other
    prompts = [q["prompt"] for q in requests[:2]]
    assert all(p.index("<image>") < p.index("ASSISTANT") for p in prompts) and prompts[0] != prompts[1]
    assert {p.kw["temperature"] for p in params} == {0.0}
    df = _rows(synth_ws)
    assert (
        len(df) == 2 * N_TRAIN
        and not df.duplicated(KEY).any()
        and set(df["caption"]) <= {f"c{k}" for k in range(10)}
    )


def test_unset_chunk_size_gives_small_datasets_enough_chunks_to_share():
    from captions.chunks import DEFAULT_CHUNK_SIZE, auto_chunk_size

    # a function of the target size only (every planner of a split agrees), so that --workers 2 on tiny SynthCC
    # (96 training images) has 12 chunks to share, while big datasets keep full 256-image chunks
    assert [auto_chunk_size(n) for n in (1, 96, 9_576, 17_896, 350_000)] == [
        8,
        8,
        150,
        256,
        DEFAULT_CHUNK_SIZE,
    ]
