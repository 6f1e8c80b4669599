"""One resolution of a run's settings: the training YAML is read once, the settings other stages share are settled
by one precedence rule, and the result (a ``PipelineConfig`` and the ``TrainConfig`` it trains) is carried to every
stage, which reads fields and never parses YAML again.

**Precedence** of a shared setting (``flows.config.SHARED_KEYS``: the workspace, dataset, text encoder, perspectives,
caption targets), the same in `differ run`, `differ study`, `differ train` and `differ demo`:

1. a command-line option (``--workdir``, ``--encoder``, ...) or a pipeline-YAML / deployment value;
2. a training override ``key=value`` (given together with 1., the two must agree, else an error names both);
3. the training YAML (with its ``base:`` chain);
4. the default (the workspace: ``$DIFFER_WORKDIR``, else ``./differ-work``).

``pretrain:<name>`` values stay names here; the pretrain stage (``flows.stages.pretrain``) replaces them by the
start's files in the carried ``TrainConfig`` (``with_start_files``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from differ_common.workspace import resolve_workdir
from differ_core import config as train_config_module
from differ_core.config import TrainConfig, apply_overrides, config_from_dict
from differ_core.config_files import resolve_config
from flows.config import PipelineConfig, load_pipeline_config, shared_overrides


@dataclass(frozen=True)
class ResolvedRun:
    """A run's settings, resolved once: the pipeline (shared fields settled, the workspace an absolute path) and
    the training config of its train stage."""

    pipeline: PipelineConfig
    train: TrainConfig

    @property
    def workdir(self) -> str:
        return str(self.pipeline.workdir)


def read_training_yaml(train_config: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(path, mapping)`` of a training YAML and its ``base:`` chain: the one read of a run."""
    path = resolve_config(train_config)
    return path, train_config_module.read_yaml_with_bases(path)


def _validated(data: dict[str, Any], path: Path, overrides: list[str]) -> TrainConfig:
    merged = apply_overrides(data, overrides)
    given = {o.split("=", 1)[0].strip(): o for o in overrides if "=" in o}
    return config_from_dict(merged, source=str(path), overrides=given)


def _train_for(pipeline: PipelineConfig, path: Path, data: dict[str, Any]) -> TrainConfig:
    """The training config of ``pipeline``: the YAML, the user's overrides, then the settled shared values."""
    return _validated(
        data,
        path,
        [
            *pipeline.train_overrides,
            f"data.dataset={pipeline.dataset}",
            f"data.workdir={pipeline.workdir}",
            f"text.encoder={pipeline.encoder}",
            f"text.caption_targets={pipeline.caption_targets}",
            f"text.caption_every_k={pipeline.caption_every_k}",
        ],
    )


def _settled_workdir(pipeline: PipelineConfig, data: dict[str, Any]) -> PipelineConfig:
    """Rule 3 and 4 for the workspace: the training YAML's ``data.workdir``, else the default."""
    yaml_value = (data.get("data") or {}).get("workdir")
    workdir = resolve_workdir(pipeline.workdir or yaml_value)
    return pipeline.model_copy(update={"workdir": str(workdir)})


def resolve_pipeline(cfg: PipelineConfig) -> ResolvedRun:
    """The run of a ``PipelineConfig`` as a flow receives it (a deployment, a study's run): its values are rule 1
    and 2 (``PipelineConfig`` has checked that they agree); the training YAML only fills the workspace."""
    path, data = read_training_yaml(cfg.resolved_train_config())
    cfg = _settled_workdir(cfg, data)
    return ResolvedRun(cfg, _train_for(cfg, path, data))


def _pipeline_from(
    pipeline_yaml: str | Path | None, train_config: str, train_overrides: list[str] | None, **options: Any
) -> tuple[PipelineConfig, Path, dict[str, Any]]:
    overrides = list(train_overrides or [])
    path, data = read_training_yaml(train_config)
    tc = _validated(data, path, overrides)  # rule 2 over rule 3, validated with the override named in errors
    from_training = {
        "dataset": tc.data.dataset,
        "encoder": tc.text.encoder,
        "perspectives": tc.text.perspectives,
        "caption_targets": tc.text.caption_targets,
        "caption_every_k": tc.text.caption_every_k,
    }
    given = shared_overrides(overrides)
    if "perspectives" in given:  # the pipeline YAML may caption more; the validator checks it covers these
        from_training["perspectives"] = given.pop("perspectives")
    merged = dict(options)
    for field, value in given.items():  # an option given too is checked against the override by the validator
        if merged.get(field) is None:
            merged[field] = value
    pipeline = load_pipeline_config(
        pipeline_yaml,
        defaults=from_training,
        train_config=train_config,
        train_overrides=overrides or None,
        **merged,
    )
    return pipeline, path, data


def pipeline_config_for_training(
    pipeline_yaml: str | Path | None, train_config: str, train_overrides: list[str] | None, **options: Any
) -> PipelineConfig:
    """The ``PipelineConfig`` of a command line or a deployment (``options``: ``None`` = not given), its shared
    fields settled by rules 1-3 and the workspace left as given (a study or deployment resolves it per run)."""
    return _pipeline_from(pipeline_yaml, train_config, train_overrides, **options)[0]


def resolve_run(
    pipeline_yaml: str | Path | None, train_config: str, train_overrides: list[str] | None, **options: Any
) -> ResolvedRun:
    """The run of a command line: ``options`` (``None`` = not given) and the pipeline YAML are rule 1, the
    training overrides rule 2, the training YAML rule 3; the YAML is read once."""
    pipeline, path, data = _pipeline_from(pipeline_yaml, train_config, train_overrides, **options)
    pipeline = _settled_workdir(pipeline, data)
    return ResolvedRun(pipeline, _train_for(pipeline, path, data))


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


def start_names(run: ResolvedRun) -> dict[str, str]:
    """``{"encoder" | "pretrained": name}`` for each place the run names a ``pretrain:<name>`` start."""
    out: dict[str, str] = {}
    if name := pretrain_name(run.pipeline.encoder):
        out["encoder"] = name
    if name := pretrain_name(run.train.model.pretrained):
        out["pretrained"] = name
    return out


def with_start_files(
    run: ResolvedRun,
    files: Callable[[str], tuple[str, str]],
    needs: tuple[str, ...] = ("encoder", "pretrained"),
) -> ResolvedRun:
    """``run`` with its ``pretrain:<name>`` values (where ``needs``) replaced by the start's files: ``files(name)
    -> (text-encoder spec, trunk weights)``, called once per name."""
    wanted = {k: v for k, v in start_names(run).items() if k in needs}
    if not wanted:
        return run
    done = {name: files(name) for name in sorted(set(wanted.values()))}
    pipeline, data = run.pipeline, run.train.model_dump(mode="json")
    if "encoder" in wanted:
        encoder = done[wanted["encoder"]][0]
        pipeline = pipeline.model_copy(update={"encoder": encoder})
        data["text"]["encoder"] = encoder
    if "pretrained" in wanted:
        data["model"]["pretrained"] = done[wanted["pretrained"]][1]
    return ResolvedRun(pipeline, TrainConfig.model_validate(data))
