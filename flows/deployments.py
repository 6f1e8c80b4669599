"""The deployments `differ serve` serves and `prefect.yaml` declares (keep the two in step)."""

from __future__ import annotations

from typing import Any

TINY_SYNTHCC: dict[str, Any] = {
    "dataset": "synthcc",
    "manifest_options": {"size": "tiny"},
    "train_config": "configs/synthcc_tiny.yaml",
    "plots": 1,
}

# (flow name, deployment name) -> parameters of PipelineConfig (the rest take their defaults)
DEPLOYMENTS: dict[tuple[str, str], dict[str, Any]] = {
    ("differ-pipeline", "synthcc"): {},
    ("differ-pipeline", "synthcc-tiny"): TINY_SYNTHCC,
    ("differ-pipeline", "default"): {},
    ("differ-manifest", "default"): {},
    ("differ-caption", "default"): {},
    ("differ-encode", "default"): {},
    ("differ-train", "default"): {},
    ("differ-evaluate", "default"): {},
}


# Every stage loads its model onto the first GPU (`cuda`) and multi-process training takes all of them, so by
# default one GPU task runs at a time on a machine; raise it with `differ serve --gpu-slots N`.
DEFAULT_GPU_SLOTS = 1


def ensure_gpu_limit(slots: int | None = None) -> int | None:
    """Make sure task runs tagged ``gpu`` have a tag concurrency limit; returns the limit now in force.

    ``slots``: set the limit to that many concurrent task runs; ``None`` keeps an existing limit (or creates
    ``DEFAULT_GPU_SLOTS``); ``0`` leaves the limits alone and returns ``None``.
    """
    if slots == 0:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.tasks import GPU_TAG

    with get_client(sync_client=True) as client:
        if slots is None:
            try:
                return int(client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit)
            except ObjectNotFound:
                slots = DEFAULT_GPU_SLOTS
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)
    return slots


def runner_deployments() -> list[Any]:
    """``RunnerDeployment`` objects for ``prefect.serve``."""
    from flows.config import PipelineConfig
    from flows.pipeline import STAGE_FLOWS, differ_pipeline

    flows = {"differ-pipeline": differ_pipeline, **STAGE_FLOWS}
    out = []
    for (flow_name, name), params in DEPLOYMENTS.items():
        cfg = PipelineConfig(**params)
        out.append(
            flows[flow_name].to_deployment(
                name=name,
                parameters={"config": cfg.model_dump(mode="json")},
                description=f"{flow_name} ({name}); parameters form a PipelineConfig",
                tags=["differ"],
            )
        )
    from flows.pipeline import differ_study
    from flows.study import StudyConfig

    out.append(
        differ_study.to_deployment(
            name="synthcc",
            parameters={"study": StudyConfig().model_dump(mode="json")},
            description="differ-study (synthcc): baseline vs DIFFER vs ablations over 3 seeds on SynthCC",
            tags=["differ"],
        )
    )
    return out
