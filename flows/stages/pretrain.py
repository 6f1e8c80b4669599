"""The pretrain stage: the start a config names with ``pretrain:<name>``, the shipped one, else its pre-training
run (or reused) in the workspace.

``text.encoder: pretrain:<name>`` (the pipeline's ``encoder``) becomes the text tower's spec
``open_clip:<dir>/<model>.json@<dir>/open_clip_model.safetensors``; ``model.pretrained: pretrain:<name>`` becomes
the image tower's trunk weights. ``<name>`` is a config of ``configs/pretrain/`` or a YAML path. The task is cached
by that config's fingerprint and its code; its output is checked on disk, so a deleted folder is trained again.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from flows.run_config import ResolvedRun, with_start_files
from flows.stages.base import result_of, stage_task

CODE = ("differ_core.clip_pretrain.shipped",)


@stage_task("pretrain", code=CODE, log_prints=True)
def pretrain_task(workdir: str, config: str, fingerprint: str) -> dict:
    """The shipped start ``config``, or its pre-training trained (or reused) in the workspace; returns its
    text-encoder spec and trunk weights."""
    from differ_core.clip_pretrain.shipped import resolve_start

    out = resolve_start(config, workdir, log=get_run_logger().info)
    return {"dir": str(out.folder), "text_encoder": out.text_encoder, "trunk": str(out.trunk)}


def pretrain_ok(p: dict[str, Any]) -> bool:
    """The pre-training's folder is complete (``differ_core.clip_pretrain.train.PretrainOutput``)."""
    from differ_core.clip_pretrain.config import load_pretrain_config
    from differ_core.clip_pretrain.train import output_for

    try:
        return output_for(load_pretrain_config(p["config"]), p["workdir"]).complete()
    except Exception:  # noqa: BLE001 - an unreadable config: the task reports it
        return False


def resolve(ctx: Any, needs: tuple[str, ...] = ("encoder", "pretrained")) -> None:
    """Run the pretrain task of each start the run names where ``needs`` (``encoder``: the text encoder,
    ``pretrained``: the backbone) and carry its files in ``ctx.run``."""
    from differ_core.clip_pretrain.config import load_pretrain_config

    dirs: list[str] = []

    def files(name: str) -> tuple[str, str]:
        st = ctx.call(
            pretrain_task, "pretrain", pretrain_ok,
            workdir=ctx.workdir, config=name, fingerprint=load_pretrain_config(name).fingerprint(),
        )  # fmt: skip
        out = result_of("pretrain", st)
        ctx.record("pretrain", st, out["dir"])
        dirs.append(out["dir"])
        return out["text_encoder"], out["trunk"]

    ctx.run = with_start_files(ctx.run, files, needs)
    if dirs:
        ctx.outputs["pretrain"] = ", ".join(dirs)


def resolve_outside_flow(run: ResolvedRun, log: Any = print) -> ResolvedRun:
    """``run`` with its starts' files, for `differ train` (no flow, no task cache): the shipped start, else its
    pre-training trained first if needed."""
    from differ_core.clip_pretrain.shipped import resolve_start

    def files(name: str) -> tuple[str, str]:
        out = resolve_start(name, run.workdir, log=log)
        return out.text_encoder, str(out.trunk)

    return with_start_files(run, files)
