"""Stage steps shared by the pipeline flow and the one-stage flows.

Each step reads the upstream fingerprints it needs from a ``Context`` (filled by the step before it, or read
back from the workspace when a stage runs alone), submits its task and records what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.caching import result_storage_for
from flows.config import PipelineConfig
from flows.fingerprints import dataset_root_signature, file_fingerprint, model_dir_fingerprint, on_disk
from flows.stage_calls import caption_settings, default_root, launch_options, resolve_training, run_name_for
from flows.tasks import caption_task, encode_task, evaluate_task, manifest_task, summarize_task, train_task


class StageStop(Exception):
    """A stage failed with its own clear message; the flow ends Failed with that message."""


def result_of(stage: str, state: Any) -> dict[str, Any]:
    """The task's result, or StageStop carrying the stage's one-line message (no traceback wall)."""
    if state.is_failed() or state.is_crashed() or state.is_cancelled():
        raise StageStop(state.message or f"{stage} failed")
    return state.result()


@dataclass
class Context:
    cfg: PipelineConfig
    workdir: str
    manifest_fp: str = "missing"
    caption_fps: dict[str, str] = field(default_factory=dict)
    summary_fp: str | None = None
    features_fp: str = "missing"
    run_dir: str | None = None
    checkpoint_fp: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_disk(cls, cfg: PipelineConfig) -> Context:
        from differ_core.workspace import resolve_workdir

        workdir = str(resolve_workdir(cfg.workdir))
        fps = on_disk(workdir, cfg.dataset, cfg.perspectives, cfg.encoder)
        ctx = cls(cfg, workdir, fps["manifest_fp"], fps["caption_fps"], fps["summary_fp"], fps["features_fp"])
        return ctx

    def with_opts(self, task: Any, stage: str) -> Any:
        return task.with_options(
            result_storage=result_storage_for(self.workdir), refresh_cache=stage in self.cfg.refresh or None
        )

    def record(self, stage: str, state: Any, details: str = "", counts: dict[str, int] | None = None) -> None:
        """Note what a stage did; ``counts`` are the rows it computed (zero when reused)."""
        cached = state.name == "Cached"
        self.stages.append(
            {
                "stage": stage,
                "status": "reused (cached)" if cached else "recomputed",
                "details": details,
                "counts": {} if cached else dict(counts or {}),
            }
        )


def manifest_step(ctx: Context) -> None:
    cfg = ctx.cfg
    root = cfg.root or default_root(ctx.workdir, cfg.dataset)
    st = ctx.with_opts(manifest_task, "manifest")(
        ctx.workdir, cfg.dataset, root, cfg.manifest_options, dataset_root_signature(root), return_state=True
    )
    out = result_of("manifest", st)
    ctx.manifest_fp = out["fingerprint"]
    ctx.outputs["manifest"] = out["path"]
    ctx.record("manifest", st, out["path"])


def caption_step(ctx: Context, runner: Any) -> None:
    """One task per perspective, spread by ``runner`` (threads or a Dask cluster)."""
    cfg = ctx.cfg
    prompt_ids = caption_settings(cfg)
    task = ctx.with_opts(caption_task, "caption")
    captioner_fp = model_dir_fingerprint(cfg.captioner)
    futures = {
        p: runner.submit(
            task,
            parameters=dict(
                workdir=ctx.workdir,
                dataset=cfg.dataset,
                perspective=p,
                manifest_fp=ctx.manifest_fp,
                captioner=cfg.captioner,
                captioner_fp=captioner_fp,
                prompt_id=prompt_ids[p],
                prompts=cfg.prompts,
                split=cfg.split,
                noise=cfg.caption_noise,
                batch_size=cfg.caption_batch_size,
            ),
        )
        for p in cfg.perspectives
    }
    for f in futures.values():
        f.wait()
    for p, f in futures.items():
        out = result_of(f"caption/{p}", f.state)
        ctx.caption_fps[p] = out["fingerprint"]
        generated = 0 if f.state.name == "Cached" else out["generated"]
        ctx.record(f"caption/{p}", f.state, f"{out['n_rows']} rows, {generated} generated", {p: generated})
    ctx.outputs["captions"] = str(Path(ctx.workdir) / "captions" / cfg.dataset)


def summarize_step(ctx: Context) -> None:
    cfg = ctx.cfg
    if "biometrics" not in ctx.caption_fps:
        return
    st = ctx.with_opts(summarize_task, "summarize")(
        ctx.workdir,
        cfg.dataset,
        ctx.caption_fps["biometrics"],
        cfg.summarizer,
        model_dir_fingerprint(cfg.summarizer),
        return_state=True,
    )
    out = result_of("summarize", st)
    ctx.summary_fp = out["fingerprint"]
    ctx.record("summarize", st, out["path"])


def encode_step(ctx: Context) -> None:
    cfg = ctx.cfg
    st = ctx.with_opts(encode_task, "encode")(
        ctx.workdir,
        cfg.dataset,
        cfg.encoder,
        model_dir_fingerprint(cfg.encoder),
        dict(sorted(ctx.caption_fps.items())),
        ctx.summary_fp,
        return_state=True,
    )
    out = result_of("encode", st)
    ctx.features_fp = out["fingerprint"]
    ctx.outputs["features"] = out["dir"]
    encoded = {} if st.name == "Cached" else {k: v for k, v in out["encoded"].items() if v}
    ctx.record("encode", st, f"encoded {encoded or 'nothing new'}", out["encoded"])


def _run_name(ctx: Context) -> tuple[dict[str, Any], str]:
    train_cfg = resolve_training(ctx.cfg, ctx.workdir)
    return train_cfg, run_name_for(train_cfg, ctx.features_fp, ctx.manifest_fp)


def train_step(ctx: Context) -> None:
    train_cfg, run_name = _run_name(ctx)
    st = ctx.with_opts(train_task, "train")(
        ctx.workdir,
        run_name,
        train_cfg,
        ctx.features_fp,
        ctx.manifest_fp,
        launch_options(ctx.cfg),
        return_state=True,
    )
    out = result_of("train", st)
    ctx.run_dir, ctx.checkpoint_fp = out["run_dir"], out["checkpoint_fp"]
    ctx.outputs["run_dir"] = out["run_dir"]
    ctx.outputs["checkpoint"] = out["checkpoint"]
    ctx.record("train", st, out["run_dir"])


def evaluate_step(ctx: Context) -> None:
    cfg = ctx.cfg
    if ctx.run_dir is None:  # evaluating alone: the run these inputs produced
        from differ_core.errors import DifferError
        from differ_core.workspace import Workspace

        _, run_name = _run_name(ctx)
        run_dir = Workspace.at(ctx.workdir).run_dir(run_name)
        ckpts = sorted((run_dir / "checkpoints").glob("last.*"))
        if not ckpts:
            raise DifferError(f"{run_dir}: no trained checkpoint for these inputs; run the train stage first")
        ctx.run_dir, ctx.checkpoint_fp = str(run_dir), file_fingerprint(ckpts[0])
    st = ctx.with_opts(evaluate_task, "evaluate")(
        ctx.run_dir,
        ctx.checkpoint_fp,
        ctx.manifest_fp,
        {"rerank": cfg.rerank, "flip": cfg.flip, "plots": cfg.plots},
        return_state=True,
    )
    out = result_of("evaluate", st)
    ctx.outputs.update({k: v for k, v in out.items() if k != "run_dir"})
    ctx.record("evaluate", st, out.get("metrics", ""))
