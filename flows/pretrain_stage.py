"""The pre-trained start of a config that names ``pretrain:<name>``: the shipped one, else its pre-training is run;
hands on its two halves.

``text.encoder: pretrain:<name>`` (the pipeline's ``encoder``) becomes the text tower's spec
``open_clip:<dir>/<model>.json@<dir>/open_clip_model.safetensors``; ``model.pretrained: pretrain:<name>`` of the
training config becomes the image tower's trunk ``<dir>/visual_trunk.safetensors``. ``<name>`` is a config of
``configs/pretrain/`` or a YAML path. The task is cached by that config's fingerprint; its output is checked on
disk, so a deleted folder is trained again.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from flows.config import PipelineConfig
from flows.tasks import stage_task

PREFIX = "pretrain:"


def pretrain_name(value: Any) -> str | None:
    """``<name>`` of a ``pretrain:<name>`` value, else None."""
    if isinstance(value, str) and value.startswith(PREFIX):
        name = value[len(PREFIX) :].strip()
        if not name:
            from differ_common.errors import ConfigError

            raise ConfigError(f"{value!r}: name the pre-training config, e.g. pretrain:synthcc_start")
        return name
    return None


def requested(cfg: PipelineConfig) -> dict[str, str]:
    """``{"encoder" | "pretrained": name}`` for each place ``cfg`` (and its training config) names a pre-training."""
    from differ_core.config import load_config

    out: dict[str, str] = {}
    if name := pretrain_name(cfg.encoder):
        out["encoder"] = name
    train = load_config(cfg.resolved_train_config(), cfg.train_overrides)
    if name := pretrain_name(train.model.pretrained):
        out["pretrained"] = name
    return out


def file_overrides(train_cfg: Any, workdir: str | None, log: Any = print) -> list[str]:
    """``key=value`` overrides replacing a training config's ``pretrain:<name>`` values by the pre-training's
    files, training it first if needed (for `differ train`, outside the pipeline)."""
    from differ_core.clip_pretrain.shipped import resolve_start

    out: list[str] = []
    starts: dict[str, Any] = {}  # one resolution (config read, sha256 check) per name
    for key, value in (
        ("text.encoder", train_cfg.text.encoder),
        ("model.pretrained", train_cfg.model.pretrained),
    ):
        if name := pretrain_name(value):
            if name not in starts:
                starts[name] = resolve_start(name, workdir, log=log)
            done = starts[name]
            out.append(f"{key}={done.text_encoder if key == 'text.encoder' else done.trunk}")
    return out


@stage_task("pretrain", log_prints=True)
def pretrain_task(workdir: str, config: str, fingerprint: str) -> dict:
    """The shipped start ``config``, or its pre-training trained (or reused) in the workspace; returns its
    text-encoder spec and trunk weights."""
    from differ_core.clip_pretrain.shipped import resolve_start

    out = resolve_start(config, workdir, log=get_run_logger().info)
    return {"dir": str(out.folder), "text_encoder": out.text_encoder, "trunk": str(out.trunk)}


def resolve(ctx: Any, needs: tuple[str, ...] = ("encoder", "pretrained")) -> None:
    """Run the pre-trainings ``ctx.cfg`` names where ``needs`` (``encoder``: the text encoder, ``pretrained``: the
    backbone) and replace the names by their files (``ctx.cfg`` is replaced)."""
    from differ_core.clip_pretrain.config import load_pretrain_config
    from flows.stages import result_of

    cfg: PipelineConfig = ctx.cfg
    wanted = {k: v for k, v in requested(cfg).items() if k in needs}
    if not wanted:
        return
    done: dict[str, dict[str, Any]] = {}
    for name in sorted(set(wanted.values())):
        pcfg = load_pretrain_config(name)
        st = ctx.call(
            pretrain_task, "pretrain", workdir=ctx.workdir, config=name, fingerprint=pcfg.fingerprint()
        )
        done[name] = result_of("pretrain", st)
        ctx.record("pretrain", st, done[name]["dir"])
    update: dict[str, Any] = {}
    if "encoder" in wanted:
        update["encoder"] = done[wanted["encoder"]]["text_encoder"]
    overrides = list(cfg.train_overrides)
    if "pretrained" in wanted:
        overrides.append(f"model.pretrained={done[wanted['pretrained']]['trunk']}")
    # the training config's own text.encoder follows the pipeline's (flows.stage_calls.resolve_training)
    overrides = [o for o in overrides if o.split("=", 1)[0].strip() != "text.encoder"]
    update["train_overrides"] = overrides
    ctx.cfg = cfg.model_copy(update=update)
    ctx.outputs["pretrain"] = ", ".join(d["dir"] for d in done.values())
