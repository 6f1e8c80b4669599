"""Pipeline parameters: one validated object, so the Prefect UI shows a form and the CLI a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from differ_common.errors import ConfigError
from differ_common.perspectives import PERSPECTIVES
from differ_core.config_files import resolve_config

Stage = Literal["pretrain", "manifest", "caption", "summarize", "encode", "train", "evaluate"]
STAGES: tuple[str, ...] = ("pretrain", "manifest", "caption", "summarize", "encode", "train", "evaluate")

# Training-config keys that also configure other stages, and the pipeline field each one sets: a training override
# `key=value` sets that field too, so every stage sees it (docs/design.md §4). The pipeline captions at least the
# training perspectives (a study captions all six once for every variant).
SHARED_KEYS: dict[str, str] = {
    "data.dataset": "dataset",  # manifest, caption, encode, evaluate
    "data.workdir": "workdir",  # every stage's workspace
    "text.encoder": "encoder",  # encode
    "text.perspectives": "perspectives",  # caption (and summarize for biometrics)
    "text.caption_targets": "caption_targets",  # caption (which frames of a tracklet), train (whose features)
    "text.caption_every_k": "caption_every_k",
}


def shared_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``{pipeline field: value}`` set by the ``SHARED_KEYS`` among training ``key=value`` overrides."""
    from differ_core.config import apply_overrides

    data = apply_overrides({}, [o for o in overrides or [] if o.split("=", 1)[0].strip() in SHARED_KEYS])
    out: dict[str, Any] = {}
    for key, field in SHARED_KEYS.items():
        section, name = key.split(".")
        if name in data.get(section, {}):
            out[field] = data[section][name]
    return out


def _same(field: str, a: Any, b: Any) -> bool:
    if field == "workdir":
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    if field == "dataset":
        return str(a).strip().lower().replace("_", "-") == str(b).strip().lower().replace("_", "-")
    return a == b


class PipelineConfig(BaseModel):
    """Everything the `differ-pipeline` flow needs; every stage reads only its own fields."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("synthcc", description="ltcc, prcc, celeb-light, ccvid, custom or synthcc")
    root: str | None = Field(None, description="dataset root (SynthCC: where to generate; default W/data)")
    workdir: str | None = Field(None, description="workspace (default $DIFFER_WORKDIR or ./differ-work)")
    manifest_options: dict[str, Any] = Field(default_factory=dict, description="adapter / SynthCC options")
    split: str = Field("train", description="split to caption and encode")
    perspectives: list[str] = Field(default_factory=lambda: list(PERSPECTIVES))
    captioner: str = Field("attributes", description="attributes | hf:<dir> | vllm:<dir>")
    prompts: str | None = Field(None, description="prompts YAML (default: captions/prompts.yaml)")
    caption_noise: float = Field(0.0, ge=0.0, le=1.0, description="attributes captioner noise rate")
    caption_batch_size: int = Field(8, ge=1)
    trust_remote_code: bool = Field(False, description="allow a VLM's own code (hf/vllm) to run")
    device: str | None = Field(None, description="captioning/encoding device (default: auto-detect)")
    # captioning workers (issue 18): one model per worker process and device
    caption_workers: int | None = Field(
        None, ge=1, description="caption worker processes (default: 1 per GPU)"
    )
    caption_devices: str | None = Field(None, description="GPU ids for the caption workers, e.g. 0,1,2,3")
    caption_chunk_size: int | None = Field(
        None, ge=1, description="images per claimed caption chunk (default: n/64, between 8 and 256)"
    )
    vllm_args: dict[str, Any] = Field(default_factory=dict, description="vLLM engine arguments")
    caption_targets: Literal["auto", "frame", "tracklet", "every_k"] = Field(
        "auto",
        description="frames of a video manifest that are captioned, shared by their tracklet (captions.targets): "
        "auto = one per tracklet for ccvid, else every image",
    )
    caption_every_k: int = Field(8, ge=1, description="caption_targets=every_k: one captioned frame in k")
    summarizer: str = Field("extractive", description="extractive | hf:<dir>")
    encoder: str = Field(
        "minilm", description="minilm | open_clip:<arch>[@ckpt] | hf-clip:<dir> | pretrain:<name> | ..."
    )
    train_config: str = Field(
        "configs/synthcc.yaml",
        description="training YAML: a path, or a shipped/`$DIFFER_CONFIG_PATH` config name",
    )
    train_overrides: list[str] = Field(default_factory=list, description="key=value overrides")
    processes: int = Field(1, ge=1, description="training processes (GPUs); >1 launches accelerate")
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0)
    main_process_ip: str | None = None
    evaluate: bool = True
    rerank: bool = False
    flip: bool = False
    plots: int = Field(4, ge=0, description="ranked-list pictures to draw")
    refresh: list[Stage] = Field(default_factory=list, description="stages to recompute even if cached")
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = Field(None, description="scheduler address; none = a local cluster")
    dask_workers: int = Field(2, ge=1)

    @field_validator("perspectives")
    @classmethod
    def _known_perspectives(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in PERSPECTIVES]
        if bad:
            raise ValueError(f"unknown perspectives {bad}; allowed: {list(PERSPECTIVES)}")
        return v

    @model_validator(mode="after")
    def _overrides_reach_every_stage(self) -> PipelineConfig:
        """A ``SHARED_KEYS`` training override sets its pipeline field; one that contradicts a field given
        explicitly is an error (a value must mean the same to every stage)."""
        for field, value in shared_overrides(self.train_overrides).items():
            key = next(k for k, f in SHARED_KEYS.items() if f == field)
            current = getattr(self, field)
            if field == "perspectives":
                value = self._known_perspectives(list(value or []))
                if field in self.model_fields_set:
                    missing = [p for p in value if p not in current]
                    if missing:
                        raise ValueError(
                            f"the training override {key}={value} needs {missing} captioned but the pipeline's "
                            f"perspectives are {current}; add them to perspectives"
                        )
                    continue
            elif field in self.model_fields_set and not _same(field, current, value):
                raise ValueError(
                    f"{field} is {current!r} but the training override {key}={value} says {value!r}; "
                    "give the value once"
                )
            object.__setattr__(self, field, value if field != "workdir" else str(value))
        return self

    def resolved_train_config(self) -> Path:
        try:
            return resolve_config(self.train_config)
        except ConfigError as exc:
            raise ConfigError(f"train_config {exc}") from None


def load_pipeline_config(
    path: str | Path | None = None, defaults: dict[str, Any] | None = None, **overrides: Any
) -> PipelineConfig:
    """``defaults``, then a pipeline YAML (optional), then keyword overrides (``None`` = not given); errors
    name the file and key."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        path = Path(path)
        if not path.exists():  # a shipped pipeline option file by name (`pipelines/synthcc_study`)
            try:
                path = resolve_config(path)
            except ConfigError:
                raise ConfigError(f"{path}: no such config file") from None
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of pipeline keys")
        data.update(loaded.get("pipeline", loaded) if "pipeline" in loaded else loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return PipelineConfig(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        allowed = ", ".join(PipelineConfig.model_fields)
        where = f"{path}: " if path else ""
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys: {allowed}"
        raise ConfigError(
            f"{where}pipeline key {loc!r}: {msg}" if loc else f"{where}pipeline: {msg}"
        ) from exc
