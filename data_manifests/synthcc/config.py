"""SynthCC settings: the pydantic ``SynthConfig``, the named sizes and option resolution."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from differ_common.errors import ConfigError


class SynthConfig(BaseModel):
    """Every knob of the generator (the seed is passed separately). See the package docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train_ids: int = Field(100, ge=1, description="identities in the train split")
    num_test_ids: int = Field(50, ge=1, description="identities in query/gallery (disjoint from train)")
    outfits_per_id: int = Field(
        3, ge=2, description="outfits (sessions) per identity; >= 2 for clothes changing"
    )
    images_per_outfit: int = Field(8, ge=2, description="images of each identity in each outfit")
    num_cameras: int = Field(6, ge=2, le=99, description="cameras, each with its own background/light/scale")
    cameras_per_outfit: int = Field(
        3, ge=2, description="cameras that see one outfit (images spread over them)"
    )
    queries_per_outfit: int = Field(2, ge=1, description="query images per test outfit, one per camera")
    img_height: int = Field(128, ge=32, le=1024)
    img_width: int = Field(64, ge=16, le=512)
    identity_cue_strength: float = Field(
        1.0, ge=0.0, le=2.0, description="spread of identity traits (skin, hair colour, height, build, head)"
    )
    identity_detail: float = Field(
        3.0,
        ge=0.0,
        le=4.0,
        description="spread of each identity's own skin, hair and body within its trait words (0 = words only)",
    )
    clothing_saliency: float = Field(
        1.0, ge=0.0, le=1.5, description="saturation/contrast of clothing colours and patterns (0 = all grey)"
    )
    hairstyle_change_prob: float = Field(
        0.3, ge=0.0, le=1.0, description="P(new hairstyle) at each new outfit"
    )
    prop_prob: float = Field(0.15, ge=0.0, le=1.0, description="P(an image shows a hand-held prop)")
    noise_std: float = Field(3.0, ge=0.0, le=64.0, description="Gaussian pixel noise (0-255 units)")
    blur_scale: float = Field(1.0, ge=0.0, le=4.0, description="multiplies the per-camera blur radius")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.cameras_per_outfit > self.num_cameras:
            raise ValueError(
                f"cameras_per_outfit ({self.cameras_per_outfit}) > num_cameras ({self.num_cameras})"
            )
        if self.queries_per_outfit >= self.cameras_per_outfit:
            raise ValueError(
                f"queries_per_outfit ({self.queries_per_outfit}) must be < cameras_per_outfit "
                f"({self.cameras_per_outfit}) so every query keeps a same-clothes gallery match in another camera"
            )
        if self.images_per_outfit < self.cameras_per_outfit:
            raise ValueError(
                f"images_per_outfit ({self.images_per_outfit}) must be >= cameras_per_outfit "
                f"({self.cameras_per_outfit})"
            )
        if self.num_train_ids + self.num_test_ids > 999:
            raise ValueError("at most 999 identities (file names use 3-digit pids)")
        if self.images_per_outfit > 9999 or self.outfits_per_id > 99:
            raise ValueError("at most 99 outfits per id and 9999 images per outfit (file name widths)")
        return self

    @property
    def num_ids(self) -> int:
        return self.num_train_ids + self.num_test_ids

    @property
    def num_images(self) -> int:
        return self.num_ids * self.outfits_per_id * self.images_per_outfit


SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        num_train_ids=8,
        num_test_ids=6,
        outfits_per_id=3,
        images_per_outfit=4,
        num_cameras=4,
        cameras_per_outfit=3,
        queries_per_outfit=1,
    ),
    "small": dict(
        num_train_ids=40,
        num_test_ids=20,
        outfits_per_id=3,
        images_per_outfit=6,
        num_cameras=5,
        cameras_per_outfit=3,
        queries_per_outfit=2,
    ),
    "default": {},
}


def resolve_config(size: str | None = None, num_ids: int | None = None, **knobs: Any) -> SynthConfig:
    """A ``SynthConfig`` from a named ``size`` (tiny, small, default) plus knob overrides.

    ``num_ids`` is a shortcut that sets both splits in the default 2:1 train:test ratio (at least 1 test id).
    Unknown knobs or bad values raise ConfigError naming them.
    """
    size = size or "default"
    if size not in SIZES:
        raise ConfigError(f"SynthCC size {size!r} is unknown; use one of {sorted(SIZES)}")
    values: dict[str, Any] = dict(SIZES[size])
    if num_ids is not None:
        if num_ids < 2:
            raise ConfigError(f"SynthCC num_ids={num_ids}: need at least 2 (train and test identities)")
        n_test = max(1, num_ids // 3)
        values.update(num_train_ids=num_ids - n_test, num_test_ids=n_test)
    values.update({k: v for k, v in knobs.items() if v is not None})
    try:
        return SynthConfig(**values)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid SynthCC options: {msgs}") from exc
