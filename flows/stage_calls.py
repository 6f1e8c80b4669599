"""The calls the flows make into the stage packages, kept in one place so tasks stay thin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from differ_common.fingerprint import sha256_json
from differ_common.io import write_text_atomic
from differ_common.workspace import RunLayout, Workspace
from differ_core.config import RANDOM_INIT
from flows.config import PipelineConfig


def default_root(workdir: str, dataset: str) -> str | None:
    """SynthCC is generated inside the workspace; real datasets need an explicit root."""
    from data_manifests.registry import dataset_traits

    if dataset_traits(dataset).generated:
        return str(Path(workdir) / "data")
    return None


def build_and_write_manifest(workdir: str, dataset: str, root: str | None, options: dict) -> Path:
    """Build, validate and atomically write the manifest (and SynthCC's attribute table)."""
    from data_manifests.registry import make_manifest

    return make_manifest(workdir, dataset, root, **options)


def caption_settings(cfg: PipelineConfig) -> dict[str, str]:
    """The current ``prompt_id`` of each perspective (prompt text + generation settings)."""
    from captions.prompts import load_prompts

    prompts = load_prompts(cfg.prompts)
    return {p: prompts[p].prompt_id for p in cfg.perspectives}


def resolve_training(cfg: PipelineConfig, workdir: str) -> dict[str, Any]:
    """The training config as a plain dict: the YAML (with its ``base`` overlays), the user's ``key=value``
    overrides, then the pipeline's dataset, workspace and encoder (the values every other stage uses; a training
    override of them has already set them, ``flows.config.SHARED_KEYS``); validated by the trainer's schema."""
    from differ_core.config import load_config

    overrides = [
        *cfg.train_overrides,
        f"data.dataset={cfg.dataset}",
        f"data.workdir={workdir}",
        f"text.encoder={cfg.encoder}",
        f"text.caption_targets={cfg.caption_targets}",
        f"text.caption_every_k={cfg.caption_every_k}",
    ]
    train_cfg = load_config(cfg.resolved_train_config(), overrides)
    return train_cfg.model_dump(mode="json")


def pretrained_fingerprint(train_cfg: dict[str, Any]) -> str | None:
    """``model.pretrained``'s identity as (resolved path, size, mtime): replaced weights give a new run."""
    path = (train_cfg.get("model") or {}).get("pretrained")
    if not path or path == RANDOM_INIT:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        return f"missing:{p}"  # the trainer reports it with the fix
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def run_name_for(train_cfg: dict[str, Any], features_fp: str, manifest_fp: str) -> str:
    """A run per (config, inputs, pre-trained weights): a change starts a new run and keeps the old one."""
    base = train_cfg.get("run", {}).get("name") or "run"
    inputs: list[Any] = [train_cfg, features_fp, manifest_fp]
    weights = pretrained_fingerprint(train_cfg)
    if weights is not None:  # runs without pre-trained weights keep their names
        inputs.append(weights)
    return f"{base}-{sha256_json(inputs, 8)}"


def launch_options(cfg: PipelineConfig) -> dict[str, Any]:
    return {
        "processes": cfg.processes,
        "num_machines": cfg.num_machines,
        "machine_rank": cfg.machine_rank,
        "main_process_ip": cfg.main_process_ip,
    }


TRAIN_LOG_EVERY_S = 30.0


def run_training(
    workdir: str, run_name: str, train_cfg: dict[str, Any], launch: dict[str, Any], log: Callable[[str], None]
) -> tuple[Path, Path]:
    """Train in-process (one process) or through ``accelerate launch``; returns (run dir, final checkpoint).

    ``log`` gets the progress: in-process, the newest ``train_log.csv`` row every ``TRAIN_LOG_EVERY_S``
    seconds; launched, every line of the child's output (its progress bar redrawn at most that often).
    """
    from differ_core.config import TrainConfig
    from flows.run_logging import TrainLogTail

    cfg = dict(train_cfg)
    cfg["run"] = {**cfg.get("run", {}), "name": run_name}
    run_dir = Workspace.at(workdir).run_dir(run_name)
    if launch.get("processes", 1) * launch.get("num_machines", 1) <= 1:
        from differ_core.training import train

        with TrainLogTail(run_dir / "train_log.csv", log, TRAIN_LOG_EVERY_S):
            run_dir = Path(train(TrainConfig(**cfg)))
    else:
        from flows.launch import accelerate_command, run_streaming

        cfg_file = run_dir / "launch_config.yaml"
        write_text_atomic(cfg_file, yaml.safe_dump(cfg, sort_keys=False))
        cmd, env = accelerate_command(cfg_file, **launch)
        env.setdefault("TQDM_MININTERVAL", str(TRAIN_LOG_EVERY_S))  # one log line per redraw of the bar
        log("launching: " + " ".join(cmd))
        run_streaming(cmd, env=env, log=log)
    ckpts = sorted(RunLayout(run_dir).checkpoints.glob("last.*"))
    if not ckpts:
        from differ_common.errors import DifferError

        raise DifferError(f"{run_dir}: training finished without a checkpoint")
    return run_dir, ckpts[0]


def run_evaluation(run_dir: str, options: dict[str, Any]) -> dict[str, Path]:
    """Evaluate a run (its selected checkpoint) and draw its pictures; returns the written files."""
    from differ_core.evaluation.runner import evaluate_run

    evaluate_run(
        run_dir,
        rerank=options.get("rerank", False),
        flip=options.get("flip", False),
        plots=options.get("plots", 0),
    )
    return {"metrics": RunLayout(Path(run_dir)).metrics}
