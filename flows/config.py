"""Pipeline parameters: one validated object, so the Prefect UI shows a form and the CLI a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from differ_common.errors import ConfigError
from differ_common.perspectives import PERSPECTIVES
from differ_core.config_files import resolve_config

Stage = Literal["manifest", "caption", "summarize", "encode", "train", "evaluate"]
STAGES: tuple[str, ...] = ("manifest", "caption", "summarize", "encode", "train", "evaluate")


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
    caption_chunk_size: int = Field(256, ge=1, description="images per claimed caption chunk")
    vllm_args: dict[str, Any] = Field(default_factory=dict, description="vLLM engine arguments")
    summarizer: str = Field("extractive", description="extractive | hf:<dir>")
    encoder: str = Field("minilm", description="minilm | open_clip:<arch>[@ckpt] | hf-clip:<dir> | ...")
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

    def resolved_train_config(self) -> Path:
        try:
            return resolve_config(self.train_config)
        except ConfigError as exc:
            raise ConfigError(f"train_config {exc}") from None


def load_pipeline_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """Read a pipeline YAML (optional) and apply keyword overrides; errors name the file and key."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
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
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys: {allowed}"
        raise ConfigError(f"{where}pipeline key {loc!r}: {msg}") from exc
