"""The train stage: one DIFFER run per (training config, inputs, start weights, training code), in-process for one
process, else through ``accelerate launch``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from differ_common.fingerprint import sha256_file, sha256_json
from differ_common.workspace import RunLayout, Workspace
from differ_core.config import RANDOM_INIT
from flows.config import PipelineConfig
from flows.stages import code
from flows.stages.base import result_of, stage_task

CODE = ("differ_core.training",)
TRAIN_LOG_EVERY_S = 30.0


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
    """A run per (config, inputs, pre-trained weights, training code): a change starts a new run and keeps the
    old one."""
    base = train_cfg.get("run", {}).get("name") or "run"
    inputs: list[Any] = [train_cfg, features_fp, manifest_fp, code.stage_code_fingerprint(CODE)]
    weights = pretrained_fingerprint(train_cfg)
    if weights is not None:
        inputs.append(weights)
    return f"{base}-{sha256_json(inputs, 8)}"


def launch_options(cfg: PipelineConfig) -> dict[str, Any]:
    return {
        "processes": cfg.processes,
        "num_machines": cfg.num_machines,
        "machine_rank": cfg.machine_rank,
        "main_process_ip": cfg.main_process_ip,
    }


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
        from flows.launch import launch_training

        # one log line per redraw of the child's progress bar
        launch_training(cfg, run_dir, launch, log, env={"TQDM_MININTERVAL": str(TRAIN_LOG_EVERY_S)})
    ckpts = sorted(RunLayout(run_dir).checkpoints.glob("last.*"))
    if not ckpts:
        from differ_common.errors import DifferError

        raise DifferError(f"{run_dir}: training finished without a checkpoint")
    return run_dir, ckpts[0]


@stage_task("train", code=CODE, log_prints=True)  # in-process training prints its epoch lines
def train_task(
    workdir: str,
    run_name: str,
    train_config: dict,
    features_fp: str,
    manifest_fp: str,
    launch: dict,
) -> dict:
    """Train one run; in-process for one process, else ``accelerate launch`` streaming its log."""
    logger = get_run_logger()
    run_dir, ckpt = run_training(workdir, run_name, train_config, launch, log=logger.info)
    return {"run_dir": str(run_dir), "checkpoint": str(ckpt), "checkpoint_fp": sha256_file(ckpt, 16)}


def train_ok(p: dict[str, Any]) -> bool:
    return any(Workspace.at(p["workdir"]).run(p["run_name"]).checkpoints.glob("last.*"))


def train_inputs(ctx: Any) -> tuple[dict[str, Any], str]:
    """(the carried training config as a plain dict, its run name)."""
    train_cfg = ctx.train.model_dump(mode="json")
    return train_cfg, run_name_for(train_cfg, ctx.features_fp, ctx.manifest_fp)


def train_step(ctx: Any) -> None:
    train_cfg, run_name = train_inputs(ctx)
    st = ctx.call(
        train_task,
        "train",
        train_ok,
        workdir=ctx.workdir,
        run_name=run_name,
        train_config=train_cfg,
        features_fp=ctx.features_fp,
        manifest_fp=ctx.manifest_fp,
        launch=launch_options(ctx.cfg),
    )
    out = result_of("train", st)
    ctx.run_dir, ctx.checkpoint_fp = out["run_dir"], out["checkpoint_fp"]
    ctx.outputs["run_dir"] = out["run_dir"]
    ctx.outputs["checkpoint"] = out["checkpoint"]
    ctx.record("train", st, out["run_dir"])
