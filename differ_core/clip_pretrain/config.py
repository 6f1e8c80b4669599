"""The settings of a CLIP-style pre-training (``differ_core/configs/pretrain/*.yaml``) and their fingerprint."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from differ_common.errors import ConfigError
from differ_common.fingerprint import package_versions, sha256_json

# train keys added after configs were published, with the value that keeps them out of the fingerprint
OPTIONAL_TRAIN_KEYS = {"id_weight": 0.0, "lock_image": False}
PACKAGES = ("torch", "timm", "open_clip_torch", "numpy", "pillow")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


class PeopleConfig(_Section):
    """The synthetic people it learns from: a SynthCC generated with its own seed (disjoint from the study's)."""

    seed: int = Field(1000, description="SynthCC generator seed (the study and the demo use 0..4)")
    num_train_ids: int = Field(300, ge=2)
    num_test_ids: int = Field(40, ge=2, description="held-out people for the zero-shot check")
    outfits_per_id: int = Field(4, ge=2)
    images_per_outfit: int = Field(4, ge=2)
    img_height: int = Field(96, ge=32)
    img_width: int = Field(48, ge=16)
    knobs: dict[str, Any] = Field(
        default_factory=dict, description="other SynthCC knobs (clothing_saliency, ...)"
    )


class VisionConfig(_Section):
    timm_model_name: str = Field(
        "regnetx_002", description="a timm trunk; the DIFFER backbone of the same name"
    )
    timm_pool: str = "avg"
    timm_proj: str = "linear"


class TextTowerConfig(_Section):
    context_length: int = Field(96, ge=8)
    width: int = Field(96, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)


class ModelConfig(_Section):
    name: str = Field("synthcc-clip", description="the open_clip model name its config JSON registers")
    embed_dim: int = Field(256, ge=8)
    vision: VisionConfig = VisionConfig()
    text: TextTowerConfig = TextTowerConfig()


class TrainConfig(_Section):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps warming up (one cycle)")
    caption_variants: int = Field(4, ge=1, description="full descriptions per image, one drawn at each step")
    partial_share: float = Field(
        0.0, ge=0, le=1, description="share of the pairs whose text describes only `partial_perspectives`"
    )
    partial_perspectives: list[str] = Field(
        default_factory=lambda: ["biometrics", "hairstyle"], description="what a partial description covers"
    )
    matched_batches: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the steps whose batch holds people in the same clothing colours (hard negatives)",
    )
    matched_by: list[str] = Field(
        default_factory=lambda: ["top_colour", "bottom_colour"],
        description="the attributes a matched batch shares",
    )
    id_weight: float = Field(
        0.0,
        ge=0,
        description="weight of an identity cross-entropy (a cosine classifier over the training people) on the "
        "image embedding, added to the contrastive loss; 0 = CLIP's loss alone",
    )
    lock_image: bool = Field(
        False,
        description="keep the image tower's trunk as the identity stage left it (LiT: only the "
        "projections and the text tower learn)",
    )
    flip: float = Field(0.5, ge=0, le=1)
    threads: int = Field(2, ge=1, description="CPU threads; part of the result (float sums), so fixed")


class IdentityStage(_Section):
    """An identity stage before the contrastive one (``clip_pretrain.identity``); ``epochs: 0`` = none."""

    epochs: int = Field(0, ge=0)
    P: int = Field(16, ge=2, description="identities per batch")
    K: int = Field(4, ge=2, description="images per identity in a batch")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(2.0, ge=0)
    margin: float | None = Field(None, description="triplet margin; null = soft margin")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    pad: int = Field(6, ge=0, description="padded random crop (pixels)")


class PretrainConfig(_Section):
    """One CLIP-style pre-training: people, model, an optional identity stage and the contrastive schedule."""

    people: PeopleConfig = PeopleConfig()
    model: ModelConfig = ModelConfig()
    identity: IdentityStage = IdentityStage()
    train: TrainConfig = TrainConfig()

    def fingerprint(self) -> str:
        """What the result depends on: these settings, the code (the pre-training's modules and all they import:
        the SynthCC generator and the attributes captioner make the corpus) and the versions of the packages doing
        the arithmetic."""
        from differ_common.code_fingerprint import code_fingerprint

        settings = self.model_dump(mode="json")
        train = settings["train"]  # keys added later stay out at their no-op value: older fingerprints hold
        settings["train"] = {k: v for k, v in train.items() if OPTIONAL_TRAIN_KEYS.get(k, object()) != v}
        if not self.identity.epochs:  # no identity stage: configs written before it keep their fingerprint
            settings.pop("identity")
        return sha256_json(
            [settings, code_fingerprint(("differ_core.clip_pretrain.train",)), package_versions(*PACKAGES)],
            12,
        )  # fmt: skip


def resolve_pretrain_config(name: str | Path) -> Path:
    """A pre-training config by path or by name among ``configs/pretrain/`` (``synthcc_clip``)."""
    from differ_core.config_files import resolve_config

    p = Path(str(name)).expanduser()
    if p.is_file():
        return p.resolve()
    rel = str(name).removeprefix("configs/").removeprefix("pretrain/")
    return resolve_config(f"pretrain/{rel}")


def load_pretrain_config(name: str | Path) -> PretrainConfig:
    """Read and validate a pre-training YAML; errors name the file and the key."""
    path = resolve_pretrain_config(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    try:
        cfg = PretrainConfig(**data)
    except (ValidationError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"{path}: {loc}: {err['msg']}") from None
        raise ConfigError(f"{path}: {exc}") from None
    problem = trunk_problem(cfg.model.vision.timm_model_name)
    if problem:
        raise ConfigError(f"{path}: model.vision.timm_model_name: {problem}")
    return cfg


@functools.lru_cache(maxsize=32)
def trunk_problem(name: str) -> str | None:
    """Why open_clip's timm image tower cannot take the timm model ``name`` (None when it can): an unknown
    name, or a conv head after the pooling (its output is wider than the ``num_features`` the tower's projection
    is built for, e.g. ``lcnet_050``)."""
    import timm
    import torch

    from differ_core.model import feature_dim, unknown_timm_model

    unknown = unknown_timm_model(name)
    if unknown:
        return unknown
    try:
        with torch.device("meta"):  # shapes only, no memory
            trunk = timm.create_model(name, num_classes=0, pretrained=False)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: the tower reports it when built
        return None
    hidden = feature_dim(trunk)
    if hidden != trunk.num_features:
        return (
            f"{name} ends in a conv head after the pooling ({trunk.num_features} -> {hidden} channels), which "
            "open_clip's timm tower does not support; choose a trunk that pools its last stage directly (regnetx_002, "
            "resnet18, efficientvit_m0, a ViT)"
        )
    return None
