"""The evaluate stage: a run's metrics under its dataset's protocols, plus ranked-list pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from differ_common.workspace import RunLayout
from flows.stages.base import file_fingerprint, result_of, stage_task
from flows.stages.train import train_inputs

CODE = ("differ_core.evaluation.runner",)


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


@stage_task("evaluate", code=CODE)
def evaluate_task(run_dir: str, checkpoint_fp: str, manifest_fp: str, options: dict) -> dict:
    """Metrics under the dataset's protocols, plus pictures; returns the metrics file."""
    out = run_evaluation(run_dir, options)
    return {"run_dir": run_dir, **{k: str(v) for k, v in out.items()}}


def evaluate_ok(p: dict[str, Any]) -> bool:
    return RunLayout(Path(p["run_dir"])).metrics.exists()


def evaluate_step(ctx: Any) -> None:
    cfg = ctx.cfg
    if ctx.run_dir is None:  # evaluating alone: the run these inputs produced
        from differ_common.errors import DifferError
        from differ_common.workspace import Workspace

        _, run_name = train_inputs(ctx)
        run_dir = Workspace.at(ctx.workdir).run_dir(run_name)
        ckpts = sorted(RunLayout(run_dir).checkpoints.glob("last.*"))
        if not ckpts:
            raise DifferError(f"{run_dir}: no trained checkpoint for these inputs; run the train stage first")
        ctx.run_dir, ctx.checkpoint_fp = str(run_dir), file_fingerprint(ckpts[0])
    st = ctx.call(
        evaluate_task,
        "evaluate",
        evaluate_ok,
        run_dir=ctx.run_dir,
        checkpoint_fp=ctx.checkpoint_fp,
        manifest_fp=ctx.manifest_fp,
        options={"rerank": cfg.rerank, "flip": cfg.flip, "plots": cfg.plots},
    )
    out = result_of("evaluate", st)
    ctx.outputs.update({k: v for k, v in out.items() if k != "run_dir"})
    ctx.record("evaluate", st, out.get("metrics", ""))
