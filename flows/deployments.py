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
    ("differ-pipeline", "synthcc"): {
        "encoder": "pretrain:synthcc_start"
    },  # configs/synthcc.yaml's text tower
    ("differ-pipeline", "synthcc-tiny"): TINY_SYNTHCC,
    ("differ-pipeline", "default"): {},
    ("differ-manifest", "default"): {},
    ("differ-caption", "default"): {},
    ("differ-encode", "default"): {},
    ("differ-train", "default"): {},
    ("differ-evaluate", "default"): {},
}


def gpu_device_ids() -> list[str]:
    """The GPU ids whose ``gpu:<id>`` tag limits ``differ serve`` makes sure of: the GPUs visible here and the
    ids named by the deployments' ``caption_devices``."""
    import torch

    from captions.workers import resolve_devices

    ids = {str(k) for k in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)}
    for params in DEPLOYMENTS.values():
        for label in resolve_devices("attributes", None, params.get("caption_devices"), None):
            if label.startswith("cuda:"):
                ids.update(label.removeprefix("cuda:").split("+"))
    return sorted(ids, key=int)


def ensure_gpu_limits(slots: int | None = None, device_ids: list[str] | None = None) -> dict[str, int] | None:
    """Make sure the tag concurrency limits of GPU task runs exist; returns the limits now in force.

    ``gpu``: ``slots`` concurrent task runs; ``None`` keeps an existing limit, else creates one slot per GPU (at
    least 1). ``gpu:<id>``: one task run at a time on each GPU of ``device_ids`` (default ``gpu_device_ids()``),
    created when missing, an existing one kept. ``slots=0`` leaves every limit alone and returns ``None``.
    """
    if slots == 0:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.stages.base import GPU_TAG

    ids = gpu_device_ids() if device_ids is None else list(device_ids)
    out: dict[str, int] = {}
    with get_client(sync_client=True) as client:

        def kept(tag: str, default: int) -> int:
            try:
                return int(client.read_concurrency_limit_by_tag(tag).concurrency_limit)
            except ObjectNotFound:
                return default

        wanted = {GPU_TAG: slots if slots is not None else kept(GPU_TAG, max(1, len(ids)))}
        wanted.update({f"{GPU_TAG}:{i}": kept(f"{GPU_TAG}:{i}", 1) for i in ids})
        for tag, limit in wanted.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)  # creates or updates
            out[tag] = limit
    return out


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

    for name, study in STUDIES.items():
        out.append(
            differ_study.to_deployment(
                name=name,
                parameters={"study": study().model_dump(mode="json")},
                description=f"differ-study ({name}): {STUDY_DESCRIPTIONS[name]}",
                tags=["differ"],
            )
        )
    return out


def study_v3(train_config: str, name: str, variants: tuple[str, ...], five_seeds: tuple[str, ...]) -> Any:
    """The SynthCC study v3 of docs/results.md (the `small` size, from the shipped start): every variant at seeds
    0-2, the ``five_seeds`` variants at 0-4."""
    from flows.run_config import pipeline_config_for_training
    from flows.study import StudyConfig

    pipeline = pipeline_config_for_training("pipelines/synthcc_study", train_config, [])
    return StudyConfig(
        name=name,
        pipeline=pipeline,
        variants=list(variants),
        seeds=[0, 1, 2],
        variant_seeds={v: [0, 1, 2, 3, 4] for v in five_seeds},
    )


STUDY_VARIANTS = ("baseline", "bio_only", "nbdetach_only", "differ", "clothing_only", "official_head")
STUDIES: dict[str, Any] = {
    "synthcc": lambda: study_v3(
        "configs/synthcc_study.yaml", "synthcc-v3", STUDY_VARIANTS, five_seeds=("baseline", "differ")
    ),
    "synthcc-paper": lambda: study_v3(
        "configs/synthcc_study_paper.yaml", "synthcc-v3-paper", ("baseline", "differ"), five_seeds=()
    ),
}
STUDY_DESCRIPTIONS = {
    "synthcc": "study v3, the tuned recipe from the shipped start: baseline and DIFFER at 5 seeds, ablations at 3",
    "synthcc-paper": "study v3 under the paper's values (logit scale 1, GRL 1, loss weights 1): baseline and DIFFER, 3 seeds",
}
