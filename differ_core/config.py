"""Training configuration: one pydantic schema, YAML files with ``base:`` overlays, ``key=value`` overrides.

Every section forbids unknown keys, so a typo is an error that names the key and the allowed keys::

    cfg = load_config("configs/synthcc.yaml", ["model.backbone=resnet18", "losses=[id,triplet]"])
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from differ_common.errors import ConfigError
from differ_common.perspectives import PERSPECTIVES

LossName = Literal["id", "triplet", "bio", "nbdetach"]
LOSS_NAMES: tuple[str, ...] = ("id", "triplet", "bio", "nbdetach")
RANDOM_INIT = "random"  # model.pretrained value that asks for random initialisation explicitly


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)


class AugmentationConfig(_Section):
    """Training augmentation (the eval transform only normalises); docs/fidelity.md lists the official values."""

    flip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    crop: float = Field(1.0, ge=0, le=1, description="probability of the random crop")
    crop_style: Literal["pad", "resize"] = Field(
        "pad",
        description="pad: zero-pad `pad` px, crop back; resize: enlarge x`crop_scale`, crop back (official)",
    )
    pad: int = Field(10, ge=0, description="crop_style=pad: pad size in pixels before the random crop")
    crop_scale: float = Field(1.125, ge=1, description="crop_style=resize: enlargement before the crop")
    grayscale: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of turning an image grey (ITU-R 601 luma), before normalising",
    )
    erasing: float = Field(0.5, ge=0, le=1, description="random erasing probability")
    erasing_style: Literal["noise", "official"] = Field(
        "noise",
        description="noise: N(0,1) fill, log-uniform aspect, 10 tries; official: constant erasing_fill, "
        "uniform aspect, 100 tries",
    )
    erasing_fill: tuple[float, float, float] = Field(
        (0.4914, 0.4822, 0.4465), description="erasing_style=official: fill per channel (normalised space)"
    )


class DataConfig(_Section):
    dataset: str = "synthcc"
    workdir: str | None = Field(None, description="workspace (default $DIFFER_WORKDIR or ./differ-work)")
    img_size: tuple[int, int] = Field((128, 64), description="(height, width) of the network input")
    mean: tuple[float, float, float] | None = Field(
        None, description="normalisation mean (default: backbone's)"
    )
    std: tuple[float, float, float] | None = None
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    decode_threads: int = Field(4, ge=1, description="threads decoding images (cache writing, disk path)")
    image_cache: Literal["auto", "disk", "memory", "off"] = Field(
        "auto",
        description="auto: the shared memory-mapped cache W/cache/images when it fits, else decode per batch; "
        "disk: the cache or an error; memory: decode into each process; off: decode per batch",
    )
    image_cache_max_gb: float = Field(
        64.0, ge=0, description="largest image cache to write; above it (or the free disk) decode per batch"
    )
    num_workers: int = Field(
        2, ge=0, description="DataLoader worker processes decoding per batch when no cache is used"
    )
    frames_per_tracklet: int | None = Field(
        None,
        ge=1,
        description="video manifests (track_id): frames each training tracklet piece gives per epoch, CAL's clip "
        "rule (differ_core.video_sampling); none = every frame, every epoch",
    )
    frame_stride: int = Field(4, ge=1, description="frames_per_tracklet: stride of a piece's clip (CAL's 4)")
    tracklet_split: int = Field(
        64,
        ge=0,
        description="frames_per_tracklet: training tracklets cut into pieces of this many frames first, the last "
        "keeping the rest (CAL's dense sampling, 64); 0 = whole tracklets",
    )

    @field_validator("img_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError(f"img_size {v} too small; give (height, width), each >= 8")
        return v


class TextConfig(_Section):
    encoder: str = Field("minilm", description="encoder spec whose features the losses use")
    perspectives: list[str] = Field(
        default_factory=lambda: ["biometrics", "hairstyle", "clothing"],
        description="first = the biometric perspective, the rest = non-biometric (one NBDetach branch each)",
    )
    bio_source: Literal["image", "summary"] = Field(
        "image", description="biometric text: per image or per identity"
    )
    features_file: str | None = Field(
        None,
        description="optional .pt {'image_ids': [...], 'features': [N,1+K,D]} instead of the workspace features",
    )
    dim: int | None = Field(
        None,
        ge=1,
        description="expected text feature dimension, checked before captioning and training; none = any",
    )
    feature_dtype: Literal["float32", "float16"] = Field(
        "float32", description="storage of the memory-mapped text features (batches are float32)"
    )
    caption_targets: Literal["auto", "frame", "tracklet", "every_k"] = Field(
        "auto",
        description="which frames of a tracklet carry captions, shared by the tracklet's other frames "
        "(captions.targets): frame = every image; tracklet = its middle frame; every_k = every "
        "caption_every_k-th frame; auto = tracklet for ccvid, else frame",
    )
    caption_every_k: int = Field(8, ge=1, description="caption_targets=every_k: one captioned frame in k")

    @field_validator("perspectives")
    @classmethod
    def _valid(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in PERSPECTIVES]
        if bad:
            raise ValueError(f"unknown perspectives {bad}; allowed: {list(PERSPECTIVES)}")
        if not v or v[0] != "biometrics":
            raise ValueError("the first perspective must be 'biometrics' (the biometric text)")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate perspectives in {v}")
        return v

    @property
    def non_bio(self) -> list[str]:
        return list(self.perspectives[1:])


class ModelConfig(_Section):
    backbone: str = Field("vit_tiny_patch16_224", description="any timm model name")
    backbone_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra timm create_model kwargs"
    )
    pretrained: str | None = Field(
        None,
        description="local weights file (.pt/.pth/.bin/.safetensors), or 'random' for random weights on purpose; "
        "none = random, an error for the published datasets",
    )
    lambda_cam: float = Field(3.0, ge=0, description="camera embedding scale (0 disables it)")
    bio_head: bool = Field(False, description="ViT: last block + final norm as a separate biometric head")
    bnneck: bool = Field(False, description="BatchNorm neck before the ID classifier")
    drop_path: float = Field(0.1, ge=0, lt=1)
    head_init: Literal["normal", "official"] = Field(
        "normal", description="ID classifier: normal = N(0, 1e-3); official = trunc_normal(0.02) x 0.001"
    )
    final_norm: Literal["pretrained", "fresh", "official"] = Field(
        "pretrained",
        description="ViT final norm: keep model.pretrained's, reset to (1, 0), or official = fresh when both "
        "text losses are used (their clipFc layout drops norm.*), else pretrained",
    )
    grad_checkpointing: bool = False
    channels_last: bool = Field(True, description="CNNs on GPU: channels_last memory format")

    @property
    def weights_file(self) -> str | None:
        """The backbone weights file to load; None for random initialisation (``null`` or ``random``)."""
        return None if self.pretrained in (None, "", RANDOM_INIT) else self.pretrained


class LossConfig(_Section):
    use: list[LossName] = Field(default_factory=lambda: ["id", "triplet", "bio", "nbdetach"])
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    bio_weight: float = 1.0
    nbdetach_weight: float = 1.0
    logit_scale: float = Field(1.0, gt=0, description="contrastive logit scale (the paper's constant 1)")
    learnable_scale: bool = False
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    triplet_margin: float | None = Field(None, description="none = soft margin (softplus)")
    grl_alpha: float = Field(1.0, ge=0)
    grl_schedule: Literal["constant", "dann"] = Field("constant", description="dann: alpha*(2/(1+e^-10p)-1)")
    nbdetach_index: Literal["perspective", "batch"] = Field(
        "perspective",
        description="batch = the official HEAD bug: sample k's projections vs perspective k's texts (ablation)",
    )

    @model_validator(mode="before")
    @classmethod
    def _list_shorthand(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return {"use": list(v)}
        if isinstance(v, str):
            return {"use": [s.strip() for s in v.strip("[]").split(",") if s.strip()]}
        return v

    @field_validator("use")
    @classmethod
    def _need_some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"at least one loss is needed; allowed: {list(LOSS_NAMES)}")
        return list(dict.fromkeys(v))


class OptimConfig(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(2e-6, gt=0)
    bias_lr_factor: float = 2.0
    backbone_lr_factor: float = Field(
        1.0,
        ge=0,
        description="LR multiplier of the backbone's parameters (fine-tuning a start gently; 0 = frozen)",
    )
    weight_decay: float = 0.05
    weight_decay_bias: float | None = Field(None, description="none = weight_decay")
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = Field(None, description="max grad norm; none = no clipping")


class ScheduleConfig(_Section):
    """LR schedule. ``timm_cosine`` is the official one: timm ``CosineLRScheduler`` stepped once per epoch
    (warm-up from ``warmup_lr`` over ``warmup_epochs``, cosine over all ``epochs`` at the absolute epoch, floor
    ``min_lr_factor`` x ``optim.lr``). ``step_cosine``: per-step warm-up from ``warmup_factor`` x each group's LR,
    then a cosine restarted after the warm-up down to ``min_lr_factor`` x each group's LR (or flat)."""

    name: Literal["step_cosine", "timm_cosine"] = "step_cosine"
    epochs: int = Field(60, ge=1)
    warmup_epochs: float = Field(20, ge=0)
    warmup_factor: float = Field(0.01, gt=0, le=1, description="step_cosine: LR factor at the first step")
    warmup_lr: float = Field(7.8125e-7, ge=0, description="timm_cosine: absolute LR the warm-up starts from")
    cosine: bool = Field(True, description="step_cosine: false = flat after the warm-up")
    min_lr_factor: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _cosine_only_per_step(self) -> ScheduleConfig:
        if self.name == "timm_cosine" and not self.cosine:
            raise ValueError(
                "schedule.cosine=false applies to name=step_cosine only; set schedule.cosine=true"
            )
        return self


class SamplerConfig(_Section):
    P: int = Field(4, ge=1, description="identities per batch (per process)")
    K: int = Field(2, ge=1, description="images per identity")
    style: Literal["distinct", "official"] = Field(
        "distinct",
        description="distinct: P different identities per batch; official: shuffled K-chunks dealt P per batch "
        "(the official RandomIdentitySampler epoch)",
    )


class RunConfig(_Section):
    name: str = "run"
    seed: int = 0
    output: str | None = Field(None, description="run folder (default W/runs/<name>)")
    val_ids: float = Field(
        0.1, ge=0, lt=1, description="fraction of train identities held out for validation"
    )
    select_protocol: Literal["clothes_changing", "general"] = "clothes_changing"
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    resume: str = Field("auto", description="auto (continue last.pt if present) | never | <checkpoint path>")
    log_every: int = Field(10, ge=1)
    progress: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    eval_batch_size: int = Field(128, ge=1)
    stop_after_steps: int | None = Field(
        None, ge=1, description="debug: stop (as if killed) after this many steps"
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="also write last.pt every this many steps (mid-epoch resume)"
    )
    debug_batches: bool = Field(False, description="debug: each rank writes its batches' image ids to debug/")
    log_with: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "dvclive"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="accelerate experiment trackers ([] = none; tensorboard writes the run's tensorboard/)",
    )

    @field_validator("log_with", mode="before")
    @classmethod
    def _one_tracker(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        from differ_common.errors import ConfigError
        from differ_common.workspace import safe_name

        try:
            return safe_name("run", v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class TrainConfig(_Section):
    """The whole training run; ``model_dump(mode='json')`` round-trips through YAML."""

    data: DataConfig = Field(default_factory=DataConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    losses: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if "nbdetach" in self.losses.use and not self.text.non_bio:
            raise ValueError(
                "losses.use has 'nbdetach' but text.perspectives lists no non-biometric perspective"
            )
        if ("triplet" in self.losses.use) and self.sampler.K < 2:
            raise ValueError("the triplet loss needs sampler.K >= 2 images per identity")
        return self

    @property
    def needs_text(self) -> bool:
        return bool({"bio", "nbdetach"} & set(self.losses.use))

    def pretrained_problem(self, source: str = "the config") -> str | None:
        """One line if ``model.pretrained`` is unset for a published dataset (``DatasetInfo.published``: random
        weights by mistake)."""
        from data_manifests.registry import dataset_traits

        if self.model.pretrained in (None, "") and dataset_traits(self.data.dataset).published:
            return (
                f"model.pretrained: {source} trains {self.data.dataset} from random weights; pass "
                f"model.pretrained=/path/to/{self.model.backbone}.safetensors (docs/gpu_recipe.md §2), or "
                f"model.pretrained={RANDOM_INIT} to train from scratch on purpose"
            )
        return None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading
def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (the parent of the offending key)."""
    cur: Any = model
    for part in loc:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cur is None:
            return []
    return list(cur.model_fields) if cur is not None else []


def format_validation_error(
    exc: ValidationError, source: str, overrides: dict[str, str] | None = None
) -> str:
    """One line per problem: ``source: key.path: message (allowed keys: ...)``; a key set by a command-line
    override (``overrides``: dotted key -> its ``key=value``) names that override instead of ``source``."""
    lines, original = [], source
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, int))
        dotted = ".".join(str(p) for p in err["loc"]) or "<root>"
        source = next(
            (f"override {item!r}" for key, item in (overrides or {}).items()
             if dotted == key or dotted.startswith(f"{key}.") or key.startswith(f"{dotted}.")),
            source,
        )  # fmt: skip
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(TrainConfig, loc[:-1])
            lines.append(f"{source}: unknown key '{dotted}' (allowed keys: {', '.join(allowed)})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {dotted}: {msg} (got {err.get('input')!r})")
        source = original
    return "; ".join(lines)


def config_from_dict(
    data: dict[str, Any], source: str = "config", overrides: dict[str, str] | None = None
) -> TrainConfig:
    """Validate a plain dict; raise ConfigError naming the key and allowed keys/values (and the command-line
    override that set it, ``overrides``: dotted key -> ``key=value``)."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overrides)) from None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _normalise_shorthands(data: dict[str, Any]) -> dict[str, Any]:
    """``losses: [id, triplet]`` means ``losses: {use: [id, triplet]}`` (so overlays keep the weights)."""
    if isinstance(data.get("losses"), (list, tuple)):
        data = {**data, "losses": {"use": list(data["losses"])}}
    return data


def _base_file(including: Path, base: str) -> Path:
    """A ``base:`` entry: a path relative to the including file, else a config name (``synthcc_tiny``,
    ``ablations/baseline``: ``differ configs``)."""
    rel = including.parent / base
    if rel.exists() or Path(base).expanduser().is_absolute():
        return rel
    from differ_core.config_files import resolve_config

    try:
        return resolve_config(base)
    except ConfigError:
        raise ConfigError(
            f"{including}: base {base!r} is neither a file beside it ({rel}) nor a config name; give a path "
            "relative to this file or one of `differ configs`"
        ) from None


def read_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping with its ``base: other.yaml`` chain merged in (paths relative to the including file)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'base:' chain {[str(p) for p in _seen]}")
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    data = _normalise_shorthands(data)
    bases = data.pop("base", None)
    if bases is None:
        return data
    merged: dict[str, Any] = {}
    for b in [bases] if isinstance(bases, str) else list(bases):
        merged = _deep_merge(merged, read_yaml_with_bases(_base_file(path, str(b)), (*_seen, path)))
    return _deep_merge(merged, data)


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML: numbers, lists ``[id,triplet]``, null)."""
    out = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. model.backbone=resnet18")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key part")
        if parts[0] not in TrainConfig.model_fields:
            raise ConfigError(
                f"override {item!r}: unknown section '{parts[0]}' (allowed: {', '.join(TrainConfig.model_fields)})"
            )
        cur = out
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                cur[p] = nxt
            cur = nxt
        cur[parts[-1]] = value
        out = _normalise_shorthands(out)
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML (with ``base:`` overlays), apply ``key=value`` overrides, validate."""
    data = read_yaml_with_bases(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    given = {o.split("=", 1)[0].strip(): o for o in overrides or [] if "=" in o}
    return config_from_dict(data, source=str(path) if path is not None else "config", overrides=given)
