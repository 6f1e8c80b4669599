"""Units of the orchestration layer that need no stage: cache keys, configs, launcher, CLI errors."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from differ_common.errors import ConfigError, DifferError, TransientError
from flows.cli import main
from flows.config import PipelineConfig, load_pipeline_config
from flows.launch import accelerate_command, run_streaming
from flows.stages import code
from flows.stages.base import is_transient, output_present, stage_cache_policy
from flows.stages.encode import features_fingerprint
from flows.stages.manifest import dataset_root_signature, manifest_ok, manifest_task


def _resolved(cfg: PipelineConfig):
    from differ_core.config import TrainConfig
    from flows.run_config import ResolvedRun

    return ResolvedRun(cfg, TrainConfig())


def test_cache_key_depends_on_exactly_the_parameters_and_the_code(monkeypatch):
    def key(source: str, params: dict, ignore: tuple[str, ...] = ("batch_size",)) -> str:
        monkeypatch.setattr(code, "stage_code_fingerprint", lambda entries: f"{entries}:{source}")
        ctx = SimpleNamespace(task=SimpleNamespace(source_code="the task body"))
        return stage_cache_policy(("m",), ignore).compute_key(ctx, params, {})

    params = {"a": 1, "fp": "x", "batch_size": 8}
    k1 = key("s", params)
    assert k1 == key("s", dict(params)) == key("s", {**params, "batch_size": 64})  # same key in every run
    assert key("s", {**params, "fp": "y"}) != k1
    assert key("t", params) != key("s", params)  # an edit to the code the stage runs
    assert key("s", {**params, "batch_size": 64}, ignore=()) != key("s", params, ignore=())


def test_missing_or_unreadable_output_forces_a_refresh(tmp_path):
    from flows.stages.context import Context

    def broken(p):
        raise ValueError("corrupt")

    assert output_present(lambda p: True, {}) and not output_present(broken, {})
    w = tmp_path / "w"
    ctx = Context(_resolved(PipelineConfig(workdir=str(w))))
    params = {"workdir": str(w), "dataset": "ltcc"}
    assert (
        ctx.prepared(manifest_task, "manifest", manifest_ok, params).refresh_cache is True
    )  # no manifest yet
    (w / "manifests").mkdir(parents=True)
    (w / "manifests" / "ltcc.parquet").write_bytes(b"x")
    assert (
        ctx.prepared(manifest_task, "manifest", manifest_ok, params).refresh_cache is None
    )  # a hit is allowed
    ctx.run = _resolved(PipelineConfig(workdir=str(w), refresh=["manifest"]))
    assert (
        ctx.prepared(manifest_task, "manifest", manifest_ok, params).refresh_cache is True
    )  # the user asked


def test_features_fingerprint_tracks_each_perspective():
    base = features_fingerprint("minilm", "e", {"a": "1", "b": "2"}, "s")
    assert base == features_fingerprint("minilm", "e", {"b": "2", "a": "1"}, "s")
    assert base != features_fingerprint("minilm", "e", {"a": "1", "b": "3"}, "s")
    assert base != features_fingerprint("minilm", "e", {"a": "1", "b": "2"}, None)


def test_root_signature_changes_when_files_are_added(tmp_path):
    (tmp_path / "train").mkdir()
    s1 = dataset_root_signature(tmp_path)
    assert s1 == dataset_root_signature(tmp_path)
    (tmp_path / "query").mkdir()
    assert dataset_root_signature(tmp_path) != s1
    assert dataset_root_signature(tmp_path / "nope").startswith("missing")


def test_pipeline_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="perspectives"):
        load_pipeline_config(perspectives=["biometrics", "shoes"])
    bad = tmp_path / "p.yaml"
    bad.write_text("datset: ltcc\n")
    with pytest.raises(ConfigError, match=r"p\.yaml.*datset.*allowed keys"):
        load_pipeline_config(bad)
    with pytest.raises(ConfigError, match="no such config"):
        load_pipeline_config(tmp_path / "missing.yaml")
    assert PipelineConfig().dataset == "synthcc"


def test_accelerate_command_multi_process_on_cpu():
    cmd, env = accelerate_command("run.yaml", processes=2, cpu=True)
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    assert env["ACCELERATE_USE_CPU"] == "1"  # `--cpu` would silently run one process
    assert cmd[-4:] == ["-m", "differ_core.train_entry", "--config", "run.yaml"]
    cmd, _ = accelerate_command(
        "run.yaml", processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1"
    )
    assert cmd[cmd.index("--num_processes") + 1] == "8" and "--main_process_ip" in cmd
    with pytest.raises(DifferError, match="main-process-ip"):
        accelerate_command("run.yaml", processes=1, num_machines=2)


def test_run_streaming_reports_exit_code_and_last_lines():
    lines: list[str] = []
    run_streaming([sys.executable, "-c", "print('hello')"], log=lines.append)
    assert lines == ["hello"]
    code = "import sys; print('step 1'); print('loss is nan at step 7'); sys.exit(3)"
    with pytest.raises(DifferError, match=r"code 3(.|\n)*loss is nan at step 7"):
        run_streaming([sys.executable, "-c", code], log=lambda s: None)


def test_transient_errors_are_classified_by_type():
    import torch

    assert is_transient(TimeoutError("lock"))
    assert is_transient(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_transient(TransientError("x.lock: another process is running captioning"))
    assert not is_transient(DifferError("/data/LTCC_ReID/train: folder missing"))
    # the permanent case says "out of memory" too; its type decides, not its text
    assert not is_transient(DifferError("/m/llava: out of memory on a single image; lower max_new_tokens"))
    assert not is_transient(RuntimeError("CUDA out of memory"))


def test_cli_unknown_pipeline_yaml_is_one_line_error(tmp_path, capsys):
    rc = main(["--workdir", str(tmp_path), "run", "--config", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "missing.yaml" in err


def test_run_name_changes_when_the_pretrained_weights_are_replaced(tmp_path):
    import os

    from flows.stages.train import run_name_for

    plain = {"run": {"name": "r"}, "model": {"pretrained": None}}
    assert run_name_for(plain, "f", "m") == run_name_for(dict(plain), "f", "m")
    w = tmp_path / "w.pt"
    w.write_bytes(b"a" * 10)
    cfg = {"run": {"name": "r"}, "model": {"pretrained": str(w)}}
    first = run_name_for(cfg, "f", "m")
    assert first == run_name_for(cfg, "f", "m") and first.startswith("r-")
    w.write_bytes(b"b" * 12)  # re-pre-trained: same path, new file
    os.utime(w, ns=(1, 1))
    assert run_name_for(cfg, "f", "m") != first
