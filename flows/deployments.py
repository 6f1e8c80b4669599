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
