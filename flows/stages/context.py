"""What one step hands the next: the resolved run (``flows.run_config``), the upstream fingerprints, the outputs and
a record of what each stage did. A stage run alone reads its upstream fingerprints back from the workspace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from differ_core.config import TrainConfig
from flows.config import PipelineConfig
from flows.run_config import ResolvedRun, resolve_pipeline
from flows.stages.base import output_present, result_storage_for, stage_tags
from flows.stages.encode import on_disk
from flows.stages.pretrain import resolve


@dataclass
class Context:
    run: ResolvedRun
    manifest_fp: str = "missing"
    caption_fps: dict[str, str] = field(default_factory=dict)
    summary_fp: str | None = None
    features_fp: str = "missing"
    run_dir: str | None = None
    checkpoint_fp: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cfg(self) -> PipelineConfig:
        return self.run.pipeline

    @property
    def train(self) -> TrainConfig:
        return self.run.train

    @property
    def workdir(self) -> str:
        return self.run.workdir

    @classmethod
    def from_disk(cls, cfg: PipelineConfig | ResolvedRun, pretrain: tuple[str, ...] = ()) -> Context:
        """The context of a stage run alone; ``pretrain``: the ``pretrain:<name>`` files it needs (``encoder``:
        encode; ``encoder``, ``pretrained``: train, evaluate), trained first if missing."""
        ctx = cls(cfg if isinstance(cfg, ResolvedRun) else resolve_pipeline(cfg))
        if pretrain:
            resolve(ctx, pretrain)
        fps = on_disk(ctx.workdir, ctx.cfg.dataset, ctx.cfg.perspectives, ctx.cfg.encoder)
        ctx.manifest_fp, ctx.caption_fps = fps["manifest_fp"], fps["caption_fps"]
        ctx.summary_fp, ctx.features_fp = fps["summary_fp"], fps["features_fp"]
        return ctx

    def prepared(
        self, task: Any, stage: str, output_ok: Callable[[dict[str, Any]], bool], params: dict[str, Any],
        force: bool = False,
    ) -> Any:  # fmt: skip
        """``task`` storing results in this workspace; refreshed when the user asks, its output is gone
        (``output_ok``) or the caller knows its inputs changed on disk (``force``); tagged ``gpu`` and
        ``gpu:<id>`` when it will load a model onto a GPU (``stage_tags``)."""
        refresh = force or stage in self.cfg.refresh or not output_present(output_ok, params)
        return task.with_options(
            result_storage=result_storage_for(self.workdir),
            refresh_cache=refresh or None,
            tags=stage_tags(self.cfg, stage),
        )

    def call(
        self, task: Any, stage: str, output_ok: Callable[[dict[str, Any]], bool], force: bool = False,
        **params: Any,
    ) -> Any:  # fmt: skip
        """Run ``task`` with ``params`` (cached by them and its code) and return its final state."""
        return self.prepared(task, stage, output_ok, params, force)(**params, return_state=True)

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
