"""Stage steps shared by the pipeline flow and the one-stage flows.

Each step reads the upstream fingerprints it needs from a ``Context`` (filled by the step before it, or read
back from the workspace when a stage runs alone), submits its task and records what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flows.caching import output_present, result_storage_for
from flows.config import PipelineConfig
from flows.stage_calls import default_root, launch_options, resolve_training, run_name_for
from flows.stage_fingerprints import (
    captioner_spec_fingerprint,
    dataset_root_signature,
    encoder_spec_fingerprint,
    file_fingerprint,
    on_disk,
)
from flows.stage_outputs import OUTPUT_CHECKS
from flows.tasks import (
    GPU_TAG,
    encode_task,
    evaluate_task,
    manifest_task,
    summarize_task,
    train_task,
)


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
    def from_disk(cls, cfg: PipelineConfig, pretrain: tuple[str, ...] = ()) -> Context:
        """The context of a stage run alone; ``pretrain``: the ``pretrain:<name>`` files it needs (``encoder``:
        encode; ``encoder``, ``pretrained``: train, evaluate), trained first if missing."""
        from differ_common.workspace import resolve_workdir
        from flows.pretrain_stage import resolve

        ctx = cls(cfg, str(resolve_workdir(cfg.workdir)))
        if pretrain:
            resolve(ctx, pretrain)
        fps = on_disk(ctx.workdir, ctx.cfg.dataset, ctx.cfg.perspectives, ctx.cfg.encoder)
        ctx.manifest_fp, ctx.caption_fps = fps["manifest_fp"], fps["caption_fps"]
        ctx.summary_fp, ctx.features_fp = fps["summary_fp"], fps["features_fp"]
        return ctx

    def prepared(self, task: Any, stage: str, params: dict[str, Any], force: bool = False) -> Any:
        """``task`` storing results in this workspace; refreshed when the user asks, its output is gone or the
        caller knows its inputs changed on disk (``force``); tagged ``gpu`` and ``gpu:<id>`` when it will load
        a model onto a GPU (``stage_tags``)."""
        refresh = force or stage in self.cfg.refresh or not output_present(OUTPUT_CHECKS[stage], params)
        return task.with_options(
            result_storage=result_storage_for(self.workdir),
            refresh_cache=refresh or None,
            tags=stage_tags(self.cfg, stage),
        )

    def call(self, task: Any, stage: str, force: bool = False, **params: Any) -> Any:
        """Run ``task`` with ``params`` (cached by them) and return its final state."""
        return self.prepared(task, stage, params, force)(**params, return_state=True)

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


def uses_gpu(cfg: PipelineConfig, stage: str) -> bool:
    """Will ``stage`` load a model onto a CUDA device? Captioning and summarizing only with a model backend
    (not ``attributes`` / ``extractive``); encode, train and evaluate always load one. The device is
    ``cfg.device`` for captioning, else what auto-detection picks (a visible CUDA GPU)."""
    if stage in ("manifest",):
        return False
    if stage == "caption" and cfg.captioner == "attributes":
        return False
    if stage == "summarize" and cfg.summarizer == "extractive":
        return False
    if stage == "caption" and cfg.device:
        return cfg.device.startswith("cuda")
    import torch

    return bool(torch.cuda.is_available())


def gpu_tags(device_ids: list[str]) -> set[str]:
    """``gpu`` plus one ``gpu:<id>`` per GPU a task occupies (tag concurrency limits: docs/gpu_recipe.md §5)."""
    return {GPU_TAG, *(f"{GPU_TAG}:{i}" for i in device_ids)}


def stage_tags(cfg: PipelineConfig, stage: str) -> set[str]:
    """The tags of a stage's task: ``gpu_tags`` of the GPUs it loads a model onto (``uses_gpu``): the first
    GPU (auto-detection picks ``cuda``), training with ``processes`` N the first N. The caption stage's own
    tasks (plan, finish) load no model; its chunk tasks carry their device's tags (``caption_stage.chunk_tags``)."""
    if stage == "caption" or not uses_gpu(cfg, stage):
        return set()
    n = cfg.processes if stage == "train" else 1
    return gpu_tags([str(k) for k in range(n)])


def manifest_step(ctx: Context) -> None:
    cfg = ctx.cfg
    root = cfg.root or default_root(ctx.workdir, cfg.dataset)
    # SynthCC is generated by the task itself (and reused when current): its folder is an output, not an input.
    from data_manifests.registry import dataset_traits

    generated = dataset_traits(cfg.dataset).generated
    signature = "generated" if generated else dataset_root_signature(root)
    # a SynthCC folder made with other settings is refused unless the user asks to recompute the manifest
    regenerate = generated and "manifest" in cfg.refresh
    st = ctx.call(
        manifest_task,
        "manifest",
        workdir=ctx.workdir,
        dataset=cfg.dataset,
        root=root,
        options={**cfg.manifest_options, "regenerate": True} if regenerate else cfg.manifest_options,
        root_signature=signature,
    )
    out = result_of("manifest", st)
    ctx.manifest_fp = out["fingerprint"]
    ctx.outputs["manifest"] = out["path"]
    ctx.record("manifest", st, out["path"])


def summarize_step(ctx: Context) -> None:
    cfg = ctx.cfg
    if "biometrics" not in ctx.caption_fps:
        return
    st = ctx.call(
        summarize_task,
        "summarize",
        workdir=ctx.workdir,
        dataset=cfg.dataset,
        biometric_fp=ctx.caption_fps["biometrics"],
        summarizer=cfg.summarizer,
        summarizer_fp=captioner_spec_fingerprint(cfg.summarizer),
    )
    out = result_of("summarize", st)
    ctx.summary_fp = out["fingerprint"]
    ctx.record("summarize", st, out["path"])


def encode_step(ctx: Context) -> None:
    cfg = ctx.cfg
    st = ctx.call(
        encode_task,
        "encode",
        workdir=ctx.workdir,
        dataset=cfg.dataset,
        encoder=cfg.encoder,
        encoder_fp=encoder_spec_fingerprint(cfg.encoder),
        caption_fps=dict(sorted(ctx.caption_fps.items())),
        summary_fp=ctx.summary_fp,
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
    st = ctx.call(
        train_task,
        "train",
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


def evaluate_step(ctx: Context) -> None:
    cfg = ctx.cfg
    if ctx.run_dir is None:  # evaluating alone: the run these inputs produced
        from differ_common.errors import DifferError
        from differ_common.workspace import RunLayout, Workspace

        _, run_name = _run_name(ctx)
        run_dir = Workspace.at(ctx.workdir).run_dir(run_name)
        ckpts = sorted(RunLayout(run_dir).checkpoints.glob("last.*"))
        if not ckpts:
            raise DifferError(f"{run_dir}: no trained checkpoint for these inputs; run the train stage first")
        ctx.run_dir, ctx.checkpoint_fp = str(run_dir), file_fingerprint(ckpts[0])
    st = ctx.call(
        evaluate_task,
        "evaluate",
        run_dir=ctx.run_dir,
        checkpoint_fp=ctx.checkpoint_fp,
        manifest_fp=ctx.manifest_fp,
        options={"rerank": cfg.rerank, "flip": cfg.flip, "plots": cfg.plots},
    )
    out = result_of("evaluate", st)
    ctx.outputs.update({k: v for k, v in out.items() if k != "run_dir"})
    ctx.record("evaluate", st, out.get("metrics", ""))
