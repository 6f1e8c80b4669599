"""Prefect flows: `differ-pipeline` (the whole DAG) and one flow per stage, all taking a PipelineConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from differ_common.workspace import RunLayout
from flows import artifacts
from flows.config import PipelineConfig
from flows.reproduce import record_pipeline
from flows.run_config import ResolvedRun, resolve_pipeline
from flows.stages.base import StageStop
from flows.stages.caption import caption_step, caption_threads
from flows.stages.context import Context
from flows.stages.encode import encode_step
from flows.stages.evaluate import evaluate_step
from flows.stages.manifest import manifest_step
from flows.stages.pretrain import resolve
from flows.stages.summarize import summarize_step
from flows.stages.train import train_step
from flows.study import StudyConfig


def task_runner_for(cfg: PipelineConfig):
    """The runner that spreads the caption chunk tasks: threads in this process (two per caption device), or a
    Dask cluster (``dask_address``, else a local one of ``dask_workers`` processes)."""
    if cfg.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # depends on the extra
            from differ_common.errors import DifferError

            raise DifferError("task_runner=dask needs the dask extra: pip install -e '.[dask]'") from exc
        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.dask_workers, "threads_per_worker": 1})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=caption_threads(cfg))


def _finish(ctx: Context, title: str) -> dict[str, Any]:
    logger = get_run_logger()
    metrics = ctx.outputs.get("metrics")
    try:
        if metrics and Path(metrics).exists():
            artifacts.metrics_table(metrics, Path(ctx.run_dir or "").name)
            for png in sorted(RunLayout(Path(ctx.run_dir or ".")).plots.glob("ranked*.png"))[:1]:
                artifacts.picture(png, f"{ctx.cfg.dataset} ranked lists")
        artifacts.run_summary(title, ctx.stages, ctx.outputs)
    except Exception as exc:  # noqa: BLE001 - artifacts are a convenience, never a failure
        logger.warning("could not create artifacts: %s", exc)
    for s in ctx.stages:
        logger.info("%-22s %-16s %s", s["stage"], s["status"], s.get("details", ""))
    return {"workdir": ctx.workdir, "stages": ctx.stages, **ctx.outputs}


def _clean_failures(fn):
    """Flow bodies end in a Failed state carrying the stage's one-line message instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        from prefect.states import Failed

        from differ_common.errors import DifferError

        try:
            return fn(*args, **kwargs)
        except (StageStop, DifferError) as exc:
            get_run_logger().error(str(exc))
            return Failed(message=str(exc))

    return wrapper


def run_pipeline(run: PipelineConfig | ResolvedRun) -> dict[str, Any]:
    """The DAG in dependency order; caption chunks run concurrently over the task runner. A ``PipelineConfig`` is
    resolved here (its training YAML read once); a ``ResolvedRun`` (`differ run` resolved it) is used as it is."""
    from flows.trust import check_remote_code

    ctx = Context(
        run if isinstance(run, ResolvedRun) else resolve_pipeline(run)
    )  # the config validates first
    cfg = ctx.cfg
    check_remote_code(cfg.trust_remote_code)  # before anything is written
    manifest_step(ctx)
    with task_runner_for(cfg) as runner:
        caption_step(ctx, runner)
    summarize_step(ctx)
    resolve(ctx)  # `pretrain:<name>` encoder or backbone: the shipped start or its pre-training
    encode_step(ctx)
    train_step(ctx)
    record_pipeline(ctx.run_dir, cfg, ctx.workdir)  # reproduce.json: the config as given (`pretrain:<name>`)
    if cfg.evaluate:
        evaluate_step(ctx)
    return _finish(ctx, f"differ-pipeline {cfg.dataset}")


@flow(name="differ-pipeline", persist_result=False)
@_clean_failures
def differ_pipeline(config: PipelineConfig = PipelineConfig(), train: dict | None = None) -> dict[str, Any]:  # noqa: B008
    """DIFFER end to end on one dataset; every stage is skipped when its inputs and code are unchanged. ``train``:
    the training config `differ run` resolved from ``config`` (leave it empty: the flow resolves ``config``)."""
    if train is not None:
        from differ_core.config import TrainConfig

        return run_pipeline(ResolvedRun(config, TrainConfig.model_validate(train)))
    return run_pipeline(config)


@flow(name="differ-manifest", persist_result=False)
@_clean_failures
def differ_manifest(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Write the dataset's manifest (SynthCC: generate it)."""
    ctx = Context.from_disk(config)
    manifest_step(ctx)
    return _finish(ctx, f"differ-manifest {config.dataset}")


@flow(name="differ-caption", persist_result=False)
@_clean_failures
def differ_caption(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Caption the missing rows of each perspective, then the identity summaries."""
    ctx = Context.from_disk(config)
    with task_runner_for(config) as runner:
        caption_step(ctx, runner)
    summarize_step(ctx)
    return _finish(ctx, f"differ-caption {config.dataset}")


@flow(name="differ-encode", persist_result=False)
@_clean_failures
def differ_encode(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Text features of the current captions."""
    ctx = Context.from_disk(config, pretrain=("encoder",))
    encode_step(ctx)
    return _finish(ctx, f"differ-encode {config.dataset}")


@flow(name="differ-train", persist_result=False)
@_clean_failures
def differ_train(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Train on the current features."""
    ctx = Context.from_disk(config, pretrain=("encoder", "pretrained"))
    train_step(ctx)
    return _finish(ctx, f"differ-train {config.dataset}")


@flow(name="differ-evaluate", persist_result=False)
@_clean_failures
def differ_evaluate(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Evaluate the run trained on the current inputs."""
    ctx = Context.from_disk(config, pretrain=("encoder", "pretrained"))
    evaluate_step(ctx)
    return _finish(ctx, f"differ-evaluate {config.dataset}")


STAGE_FLOWS = {
    "differ-manifest": differ_manifest,
    "differ-caption": differ_caption,
    "differ-encode": differ_encode,
    "differ-train": differ_train,
    "differ-evaluate": differ_evaluate,
}


@flow(name="differ-study", persist_result=False)
@_clean_failures
def differ_study(study: StudyConfig = StudyConfig()) -> dict[str, Any]:  # noqa: B008
    """Baseline vs DIFFER vs ablations over seeds (and caption-noise levels): one table, markdown and plot."""
    from flows.report import run_flow
    from flows.study import run_study

    logger = get_run_logger()
    out = run_study(study, lambda cfg: run_flow(differ_pipeline, cfg), log=logger.info)
    try:
        artifacts.markdown_file(out["markdown"], f"study {study.name}")
    except Exception as exc:  # noqa: BLE001 - artifacts are a convenience
        logger.warning("could not create the study artifact: %s", exc)
    return out
