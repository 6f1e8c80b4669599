"""The caption stage under Prefect (issue 18): one plan, one task per chunk mapped over the task runner (threads or
a Dask cluster), one finishing task per perspective; GPU tags per device; claims shared with `differ caption`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from captions.table import read_current_json, read_parts
from differ_common.workspace import Workspace
from flows.config import PipelineConfig
from flows.report import run_flow
from flows.stages.caption import caption_threads, chunk_devices, chunk_tags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "captions"))
from caption_helpers import make_workspace  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
N_TRAIN = 12  # make_workspace: 4 identities x 3 train images
KEY = ["image_id", "perspective", "prompt_id", "captioner"]


def _rows(w: Path, perspectives: tuple[str, ...]) -> pd.DataFrame:
    ws = Workspace.at(w)
    return pd.concat([read_parts(ws.perspective_dir("synthcc", p)) for p in perspectives], ignore_index=True)


def _task_runs(flow_state) -> list[str]:
    """Names of the task runs of one flow run, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(r.name for r in runs)


def _caption_only(cfg: PipelineConfig):
    """The caption step alone in a flow: returns the state (its result: fingerprints and stage records)."""
    from prefect import flow

    from flows.pipeline import task_runner_for
    from flows.stages.caption import caption_step
    from flows.stages.context import Context

    @flow(name="caption-only", persist_result=False)
    def caption_only() -> tuple[dict[str, str], list[dict]]:
        ctx = Context.from_disk(cfg)
        with task_runner_for(cfg) as runner:
            caption_step(ctx, runner)
        return ctx.caption_fps, ctx.stages

    return caption_only(return_state=True)


# ---------------------------------------------------------------- devices and tags (no GPU needed)
def test_chunk_tasks_go_round_robin_over_the_devices_and_carry_their_gpu_tags(monkeypatch):
    import torch

    hf = PipelineConfig(captioner="hf:/m/llava", caption_devices="0,1")
    assert chunk_devices(hf) == ["cuda:0", "cuda:1"] and caption_threads(hf) == 4
    assert chunk_tags(hf, "cuda:1") == {"gpu", "gpu:1"}
    assert chunk_tags(hf, "cuda:0+1") == {"gpu", "gpu:0", "gpu:1"}  # a worker holding two GPUs
    assert chunk_tags(hf, "cuda") == {"gpu", "gpu:0"} and chunk_tags(hf, "cpu") == set()
    assert chunk_tags(PipelineConfig(caption_devices="0,1"), "cuda:0") == set()  # attributes: no model
    assert chunk_devices(PipelineConfig(captioner="hf:/m/llava", caption_workers=2)) == ["cpu", "cpu"]
    assert chunk_devices(PipelineConfig(captioner="vllm:/m/llava", caption_devices="0,1")) == [
        "cuda:0"
    ]  # one engine
    dask = PipelineConfig(captioner="vllm:/m/llava", task_runner="dask")
    assert chunk_devices(dask) == ["auto"] and chunk_tags(dask, "auto") == {"gpu"}  # the worker's own GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    visible = PipelineConfig(captioner="hf:/m/llava")
    assert chunk_devices(visible) == ["cuda:0", "cuda:1", "cuda:2"]  # one slot per GPU visible to the flow
    assert chunk_tags(visible, "auto") == {"gpu", "gpu:0"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert chunk_tags(visible, "auto") == set() and chunk_devices(visible) == ["auto"]


# ---------------------------------------------------------------- the mapped stage
@pytest.fixture
def small_ws(tmp_path):
    return make_workspace(tmp_path / "w", n_ids=4, per_id=3)


def test_the_caption_stage_maps_one_task_per_chunk_and_keeps_per_perspective_fingerprints(small_ws, tmp_path):
    from captions import caption_dataset

    prompts = tmp_path / "prompts.yaml"
    shutil.copy(REPO / "captions" / "prompts.yaml", prompts)
    cfg = PipelineConfig(
        workdir=str(small_ws), perspectives=["clothing", "pose"], caption_chunk_size=3, prompts=str(prompts)
    )
    state = _caption_only(cfg)
    fps, stages = state.result()
    names = _task_runs(state)
    assert (
        sum(n.startswith("caption-chunk-") for n in names) == 4
    )  # 12 images / 3 per chunk, both perspectives
    assert names.count("caption-plan") == 1 and {"caption-clothing", "caption-pose"} <= set(names)
    chunks = next(s for s in stages if s["stage"] == "caption/chunks")
    assert chunks["tasks"] == 4 and chunks["counts"] == {"clothing": N_TRAIN, "pose": N_TRAIN}
    df = _rows(small_ws, ("clothing", "pose"))
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any()
    # the fingerprints downstream stages key on: one per perspective, as `differ caption` records them
    cli = make_workspace(tmp_path / "cli", n_ids=4, per_id=3)
    report = caption_dataset(cli, "synthcc", "clothing,pose", prompts=prompts)
    assert fps == report.fingerprints and set(fps) == {"clothing", "pose"}
    assert {p: e["fingerprint"] for p, e in read_current_json(small_ws, "synthcc").items()} == fps

    spec = yaml.safe_load(prompts.read_text())  # a new clothing prompt: only clothing is captioned again
    items = spec.get("perspectives", spec)
    item = items["clothing"] if isinstance(items, dict) else next(i for i in items if i["name"] == "clothing")
    item["prompt"] += " Name every colour you see."
    prompts.write_text(yaml.safe_dump(spec, sort_keys=False))
    fps2, stages2 = _caption_only(cfg).result()
    status = {s["stage"]: s["status"] for s in stages2}
    assert status["caption/pose"] == "reused (cached)" and status["caption/clothing"] == "recomputed"
    assert next(s for s in stages2 if s["stage"] == "caption/chunks")["counts"] == {"clothing": N_TRAIN}
    assert fps2["pose"] == fps["pose"] and fps2["clothing"] != fps["clothing"]


_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from captions.attributes_captioner import AttributesCaptioner
    from flows.config import PipelineConfig
    from flows.pipeline import differ_caption
    from flows.report import run_flow

    real = AttributesCaptioner.caption

    def slow(self, images, spec, ids):  # a model's pace, so that the run is caught mid-way
        time.sleep(0.25)
        return real(self, images, spec, ids)

    AttributesCaptioner.caption = slow
    run_flow(differ_caption, PipelineConfig(workdir=sys.argv[1], perspectives=["clothing", "pose"],
                                            caption_chunk_size=1, caption_batch_size=1))
    """
)


@pytest.mark.slow
def test_a_prefect_run_killed_mid_way_is_finished_by_the_rerun_with_every_row_once(small_ws, tmp_path):
    from flows.pipeline import differ_caption

    script = tmp_path / "killed_run.py"
    script.write_text(_KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this session's Prefect home: its database is ready
    proc = subprocess.Popen(  # its own process group: the kill takes its Prefect server with it
        [sys.executable, str(script), str(small_ws)],
        env=env,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    claims = Workspace.at(small_ws).locks() / "caption-claims" / "synthcc"
    deadline = time.monotonic() + 240
    try:  # kill it once some chunks are done and one is in flight
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list(claims.glob("*/*.done"))) >= 3 and list(claims.glob("*/*.claim")):
                break
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    before = len(_rows(small_ws, ("clothing", "pose")))
    assert 0 < before < 2 * N_TRAIN and not read_current_json(small_ws, "synthcc")

    cfg = PipelineConfig(workdir=str(small_ws), perspectives=["clothing", "pose"], caption_chunk_size=1)
    result = run_flow(differ_caption, cfg)
    df = _rows(small_ws, ("clothing", "pose"))
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any()  # every (image, perspective) exactly once
    current = read_current_json(small_ws, "synthcc")
    assert {p: current[p]["n_rows"] for p in ("clothing", "pose")} == {"clothing": N_TRAIN, "pose": N_TRAIN}
    chunks = next(s for s in result["stages"] if s["stage"] == "caption/chunks")
    assert sum(chunks["counts"].values()) == 2 * N_TRAIN - before  # only what the killed run left


def test_a_chunk_held_by_a_live_claimant_is_skipped_then_waited_for(small_ws, monkeypatch):
    """A `differ caption` process (here: a live process named as the claim's owner) holds one chunk: the flow's
    task skips it and says so, the step tries it again after a pause (in which the holder dies, so its claim is
    taken over), and no row is written twice."""
    import flows.stages.caption
    from captions.chunk_jobs import caption_chunk, plan_job
    from flows.pipeline import differ_caption

    plan = plan_job(small_ws, "synthcc", ["clothing", "pose"], chunk_size=3)
    job, first = plan["job"], plan["chunks"][0]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    claim = Path(job["workdir"], ".locks", "caption-claims", "synthcc", job["groups"]["clothing"])
    claim.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}:{holder.pid}"
    (claim / f"{first['block']}.claim").write_text(json.dumps({"owner": owner, "token": "t", "lease_s": 900}))
    out = caption_chunk(job, first)
    assert out["skipped"] == {"clothing": f"held by {owner}"}
    assert out["generated"] == {"clothing": 0, "pose": 3}
    assert caption_chunk(job, first)["skipped"] == {"clothing": f"held by {owner}", "pose": "done"}

    def holder_ends(seconds: float) -> None:  # the step's pause between rounds: the holder ends meanwhile
        holder.kill()
        holder.wait()

    monkeypatch.setattr(flows.stages.caption, "time", SimpleNamespace(sleep=holder_ends))
    try:
        cfg = PipelineConfig(workdir=str(small_ws), perspectives=["clothing", "pose"], caption_chunk_size=3)
        result = run_flow(differ_caption, cfg)
    finally:
        holder.kill()
    df = _rows(small_ws, ("clothing", "pose"))
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any()
    chunks = next(s for s in result["stages"] if s["stage"] == "caption/chunks")
    assert "held by another claimant, waited for" in chunks["details"]
    assert read_current_json(small_ws, "synthcc")["clothing"]["n_rows"] == N_TRAIN


@pytest.mark.slow
def test_chunk_tasks_on_a_local_dask_cluster_of_two_processes_write_every_row_once(small_ws, tmp_path):
    import prefect_dask  # noqa: F401  (the test extra: missing means a broken install, not a skip)

    from captions.testing import build_tiny_llava
    from flows.pipeline import differ_caption

    llava = build_tiny_llava(tmp_path / "tiny-llava")
    cfg = PipelineConfig(
        workdir=str(small_ws), perspectives=["clothing", "pose"], captioner=f"hf:{llava}",
        caption_chunk_size=2, task_runner="dask", dask_workers=2,
    )  # fmt: skip
    result = run_flow(differ_caption, cfg)
    df = _rows(small_ws, ("clothing", "pose"))
    assert len(df) == 2 * N_TRAIN and not df.duplicated(KEY).any()
    assert df["worker"].nunique() == 2 and set(df["device"]) == {"cpu"}  # both worker processes captioned
    assert os.getpid() not in {int(w.rpartition(":")[2]) for w in df["worker"]}  # none in the flow process
    chunks = next(s for s in result["stages"] if s["stage"] == "caption/chunks")
    assert chunks["tasks"] == 6
