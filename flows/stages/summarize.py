"""The summarize stage: per-identity biometric summaries from the current biometric captions."""

from __future__ import annotations

from typing import Any

from differ_common.fingerprint import sha256_file
from differ_common.workspace import Workspace
from flows.stages.base import result_of, stage_task
from flows.stages.caption import captioner_spec_fingerprint

CODE = ("captions.summaries",)


@stage_task("summarize", code=CODE)
def summarize_task(
    workdir: str, dataset: str, biometric_fp: str, summarizer: str, summarizer_fp: str
) -> dict:
    """Per-identity biometric summaries from the current biometric captions."""
    from captions.summaries import summarize_dataset

    path = summarize_dataset(workdir, dataset, summarizer=summarizer)
    return {"path": str(path), "fingerprint": sha256_file(path, 16)}


def summarize_ok(p: dict[str, Any]) -> bool:
    return Workspace.at(p["workdir"]).summaries(p["dataset"]).exists()


def summarize_step(ctx: Any) -> None:
    cfg = ctx.cfg
    if "biometrics" not in ctx.caption_fps:
        return
    st = ctx.call(
        summarize_task,
        "summarize",
        summarize_ok,
        workdir=ctx.workdir,
        dataset=cfg.dataset,
        biometric_fp=ctx.caption_fps["biometrics"],
        summarizer=cfg.summarizer,
        summarizer_fp=captioner_spec_fingerprint(cfg.summarizer),
    )
    out = result_of("summarize", st)
    ctx.summary_fp = out["fingerprint"]
    ctx.record("summarize", st, out["path"])
