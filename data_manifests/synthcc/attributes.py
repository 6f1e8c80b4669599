"""SynthCC attribute sampling: per identity, per outfit, per camera and per image.

Everything here is a pure function of ``(config, seed)``: each part draws from its own
``numpy.random.Generator`` seeded by ``SeedSequence([seed, PART, ...])``, so the same seed gives the same
attributes whatever the number of worker processes, and changing one knob does not reshuffle unrelated parts
more than it must.

The sampled ``ImageSpec`` carries two kinds of fields: the attribute strings of the ground-truth table
(``ATTRIBUTE_COLUMNS``, the captioner's vocabulary) and the continuous drawing parameters (``render``) that make
two identities with similar words still look different.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_manifests.synthcc.config import SynthConfig

# The ground-truth table's columns, in order (contract: consumers key on these names).
ATTRIBUTE_COLUMNS: tuple[str, ...] = (
    "image_id", "pid", "outfit", "camid",
    "gender", "age", "height", "build", "skin_tone", "head_shape",
    "hair_colour", "hairstyle",
    "top_colour", "top_pattern", "sleeves", "bottom_colour", "bottom_type", "shoes_colour", "bag",
    "direction", "stride", "arm_swing", "prop",
    "background", "lighting", "blur", "scale",
)  # fmt: skip
INT_ATTRIBUTES = ("pid", "outfit", "camid")
IDENTITY_ATTRIBUTES = ("gender", "age", "height", "build", "skin_tone", "head_shape", "hair_colour")
CLOTHING_ATTRIBUTES = (
    "top_colour",
    "top_pattern",
    "sleeves",
    "bottom_colour",
    "bottom_type",
    "shoes_colour",
    "bag",
)
CAMERA_ATTRIBUTES = ("background", "lighting", "blur", "scale")

# ------------------------------------------------------------------ vocabularies (word -> drawing parameters)
GENDERS = ("male", "female")
AGES = {"young": (0.150, 0.0), "adult": (0.140, 0.0), "middle-aged": (0.138, 0.02), "elderly": (0.136, 0.05)}
HEIGHTS = {"short": 0.84, "average": 0.91, "tall": 0.98}  # figure height as a fraction of the camera's frame
BUILDS = {
    "slim": (0.80, 0.80),
    "average": (1.0, 0.95),
    "broad": (1.18, 1.0),
    "heavy": (1.12, 1.28),
}  # (shoulder, waist)
SKIN_TONES = {
    "very light": (243, 216, 196),
    "light": (226, 186, 152),
    "medium": (196, 146, 104),
    "tan": (165, 112, 74),
    "brown": (122, 80, 52),
    "dark": (78, 52, 36),
}
HEAD_SHAPES = {
    "round": (0.95, 0.5),
    "oval": (0.80, 0.5),
    "long": (0.68, 0.45),
    "square": (0.92, 0.15),
}  # (w/h, corner)
HAIR_COLOURS = {
    "black": (22, 20, 20),
    "dark brown": (60, 38, 24),
    "brown": (112, 72, 40),
    "blond": (218, 184, 112),
    "red": (168, 68, 30),
    "grey": (152, 150, 148),
    "white": (232, 230, 224),
}
HAIRSTYLES = ("short", "buzz cut", "bald", "long", "ponytail", "bun", "curly", "bob")
_HAIRSTYLE_P = {
    "male": (0.34, 0.2, 0.08, 0.08, 0.04, 0.02, 0.18, 0.06),
    "female": (0.10, 0.02, 0.0, 0.32, 0.18, 0.12, 0.12, 0.14),
}
CLOTH_COLOURS = {
    "red": (200, 30, 36),
    "blue": (34, 78, 200),
    "green": (36, 150, 60),
    "yellow": (236, 204, 36),
    "black": (28, 28, 30),
    "white": (236, 236, 232),
    "grey": (128, 128, 128),
    "orange": (236, 120, 24),
    "purple": (118, 48, 160),
    "pink": (236, 130, 170),
    "navy": (24, 34, 92),
    "brown": (116, 72, 40),
    "beige": (212, 190, 150),
    "teal": (20, 140, 140),
    "maroon": (116, 20, 40),
    "olive": (110, 116, 40),
}
TOP_PATTERNS = ("plain", "horizontal stripes", "vertical stripes", "checked", "dotted", "two-tone")
_TOP_PATTERN_P = (0.35, 0.17, 0.12, 0.14, 0.1, 0.12)
SLEEVES = ("short sleeves", "long sleeves", "sleeveless")
BOTTOM_TYPES = ("trousers", "shorts", "skirt")
_BOTTOM_P = {"male": (0.8, 0.2, 0.0), "female": (0.5, 0.15, 0.35)}
SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
BAGS = ("none", "backpack", "shoulder bag", "handbag")
_BAG_P = (0.5, 0.22, 0.16, 0.12)
DIRECTIONS = ("front", "back", "left", "right")
STRIDES = {"standing": 0.03, "walking": 0.16, "striding": 0.30}  # leg angle (radians)
ARM_SWINGS = {"none": 0.04, "small": 0.22, "large": 0.5}  # arm angle (radians)
PROPS = ("phone", "cup", "umbrella", "book")
BACKGROUNDS = (
    "brick wall",
    "grass",
    "pavement",
    "office",
    "corridor",
    "parking lot",
    "shop front",
    "station",
)
LIGHTINGS = {
    "neutral": (1.0, 1.0, 1.0),
    "bright": (1.18, 1.16, 1.12),
    "dim": (0.66, 0.66, 0.7),
    "warm": (1.1, 0.96, 0.78),
    "cool": (0.84, 0.96, 1.14),
}
BLURS = {"none": 0.0, "slight": 0.55, "strong": 1.1}  # Gaussian radius in output pixels (x blur_scale)
SCALES = {
    "close": (0.97, 1.0),
    "medium": (0.9, 1.0),
    "far": (0.8, 0.55),
}  # (frame fraction, resolution factor)

# SeedSequence tags of the independent parts
_IDENTITY, _OUTFIT, _CAMERA, _IMAGE, _LAYOUT = 1, 2, 3, 4, 5


def part_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one part of the dataset (``key`` e.g. ``(_OUTFIT, pid, outfit)``)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key]))


def _choice(rng: np.random.Generator, options: Any, p: Any = None) -> Any:
    opts = list(options)
    return opts[int(rng.choice(len(opts), p=p))]


def _lerp(a: Any, b: Any, t: float) -> tuple[float, ...]:
    return tuple(float(x) + (float(y) - float(x)) * t for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Identity:
    pid: int
    words: dict[str, str]  # IDENTITY_ATTRIBUTES
    hairstyle: str  # the first outfit's hairstyle
    render: dict[str, Any]


@dataclass(frozen=True)
class Outfit:
    pid: int
    outfit: int
    words: dict[str, str]  # CLOTHING_ATTRIBUTES + hairstyle
    cameras: tuple[int, ...]
    render: dict[str, Any]


@dataclass(frozen=True)
class Camera:
    camid: int
    words: dict[str, str]  # CAMERA_ATTRIBUTES
    render: dict[str, Any]


@dataclass
class ImageSpec:
    """One image: where it goes, its table row and everything the renderer needs."""

    image_id: str  # "<split folder>/<pid>_<outfit>_c<cam+1>_<idx>.png"
    split: str  # train | query | gallery
    row: dict[str, Any]  # ATTRIBUTE_COLUMNS
    render: dict[str, Any] = field(default_factory=dict)
    seed: tuple[int, ...] = ()


def sample_identities(cfg: SynthConfig, seed: int) -> list[Identity]:
    """Identities 1..N with distinct trait words (when the vocabulary allows) and continuous jitter.

    ``identity_cue_strength`` (s) scales how far each identity's traits sit from the population mean: at 0
    everyone has the same body, skin and hair; at 1 the vocabularies' full spread; above 1 exaggerated.
    """
    s = cfg.identity_cue_strength
    j = cfg.identity_detail * s  # each identity's own variation within its words
    rng = part_rng(seed, _IDENTITY)
    used: set[tuple[str, ...]] = set()
    mean_skin = np.mean(list(SKIN_TONES.values()), axis=0)
    mean_hair = np.mean(list(HAIR_COLOURS.values()), axis=0)
    out = []
    for pid in range(1, cfg.num_ids + 1):
        for _attempt in range(50):
            gender = _choice(rng, GENDERS)
            age = _choice(rng, AGES, p=(0.3, 0.35, 0.22, 0.13))
            hair_p = np.array([0.26, 0.22, 0.18, 0.14, 0.06, 0.1, 0.04])
            if age == "elderly":
                hair_p = np.array([0.04, 0.04, 0.04, 0.04, 0.02, 0.5, 0.32])
            words = {
                "gender": gender,
                "age": age,
                "height": _choice(rng, HEIGHTS, p=(0.28, 0.44, 0.28)),
                "build": _choice(rng, BUILDS, p=(0.28, 0.36, 0.2, 0.16)),
                "skin_tone": _choice(rng, SKIN_TONES),
                "head_shape": _choice(rng, HEAD_SHAPES),
                "hair_colour": _choice(rng, HAIR_COLOURS, p=hair_p / hair_p.sum()),
            }
            key = tuple(words[k] for k in IDENTITY_ATTRIBUTES)
            if key not in used:
                break
        used.add(key)
        hairstyle = _choice(rng, HAIRSTYLES, p=_HAIRSTYLE_P[gender])
        shoulder, waist = BUILDS[words["build"]]
        head_ratio, stoop = AGES[age]
        aspect, corner = HEAD_SHAPES[words["head_shape"]]
        jitter = rng.normal(0.0, 1.0, size=12)
        female = gender == "female"
        render = {
            "skin": tuple(
                np.clip(_lerp(mean_skin, SKIN_TONES[words["skin_tone"]], s) + jitter[0:3] * 6 * j, 0, 255)
            ),
            "hair": tuple(
                np.clip(_lerp(mean_hair, HAIR_COLOURS[words["hair_colour"]], s) + jitter[3:6] * 8 * j, 0, 255)
            ),
            "height": 0.91 + (HEIGHTS[words["height"]] - 0.91) * s + jitter[6] * 0.012 * j,
            "shoulder": 1.0 + ((shoulder - 1.0) + (-0.12 if female else 0.06)) * s + jitter[7] * 0.04 * j,
            "waist": 1.0 + (waist - 1.0) * s + jitter[8] * 0.04 * j,
            "hips": 1.0 + ((0.14 if female else -0.06) + (waist - 1.0) * 0.6) * s + jitter[9] * 0.03 * j,
            "leg_ratio": 0.5 + jitter[10] * 0.018 * j,
            "head_ratio": 0.142 + (head_ratio - 0.142) * s + jitter[11] * 0.005 * j,
            "head_aspect": 0.84 + (aspect - 0.84) * s,
            "head_corner": 0.5 + (corner - 0.5) * min(s, 1.0),
            "stoop": stoop * s,
            "female": female,
        }
        out.append(Identity(pid, words, hairstyle, render))
    return out


def _pick_cloth(rng: np.random.Generator, avoid: set[str]) -> str:
    names = [c for c in CLOTH_COLOURS if c not in avoid] or list(CLOTH_COLOURS)
    return names[int(rng.integers(len(names)))]


def sample_outfits(cfg: SynthConfig, seed: int, identity: Identity) -> list[Outfit]:
    """The identity's outfits 1..K: every outfit's top colour and (bottom colour, type) differ from the
    identity's other outfits; the hairstyle changes at each new outfit with ``hairstyle_change_prob``."""
    out: list[Outfit] = []
    tops: set[str] = set()
    bottoms: set[tuple[str, str]] = set()
    hairstyle = identity.hairstyle
    gender = identity.words["gender"]
    for k in range(1, cfg.outfits_per_id + 1):
        rng = part_rng(seed, _OUTFIT, identity.pid, k)
        if k > 1 and rng.random() < cfg.hairstyle_change_prob:
            p = np.array(_HAIRSTYLE_P[gender], dtype=float)
            p[HAIRSTYLES.index(hairstyle)] = 0.0
            hairstyle = _choice(rng, HAIRSTYLES, p=p / p.sum())
        top = _pick_cloth(rng, tops)
        bottom_type = _choice(rng, BOTTOM_TYPES, p=_BOTTOM_P[gender])
        bottom = _pick_cloth(rng, {top} | {c for c, t in bottoms if t == bottom_type})
        tops.add(top)
        bottoms.add((bottom, bottom_type))
        pattern = _choice(rng, TOP_PATTERNS, p=_TOP_PATTERN_P)
        second = _pick_cloth(rng, {top})
        words = {
            "top_colour": top,
            "top_pattern": pattern,
            "sleeves": _choice(rng, SLEEVES, p=(0.45, 0.42, 0.13)),
            "bottom_colour": bottom,
            "bottom_type": bottom_type,
            "shoes_colour": _choice(rng, SHOE_COLOURS),
            "bag": _choice(rng, BAGS, p=_BAG_P),
            "hairstyle": hairstyle,
        }
        cams = tuple(
            sorted(int(c) for c in rng.choice(cfg.num_cameras, size=cfg.cameras_per_outfit, replace=False))
        )
        c = cfg.clothing_saliency
        render = {
            "top": _saliency(CLOTH_COLOURS[top], c, rng),
            "second": _saliency(CLOTH_COLOURS[second], c, rng),
            "bottom": _saliency(CLOTH_COLOURS[bottom], c, rng),
            "shoes": _saliency(CLOTH_COLOURS.get(words["shoes_colour"], (30, 30, 30)), c, rng),
            "bag_colour": _saliency(CLOTH_COLOURS[_pick_cloth(rng, set())], c, rng),
            "pattern_period": float(rng.uniform(5.0, 9.0)),
            "collar": bool(rng.random() < 0.4),
        }
        out.append(Outfit(identity.pid, k, words, cams, render))
    return out


def _saliency(rgb: tuple[int, int, int], c: float, rng: np.random.Generator) -> tuple[float, ...]:
    """Blend a clothing colour towards mid grey by ``clothing_saliency`` (1 = as named), with a little jitter."""
    grey = (128.0, 128.0, 128.0)
    base = np.array(_lerp(grey, rgb, c)) + rng.normal(0.0, 5.0, size=3)
    return tuple(float(v) for v in np.clip(base, 0, 255))


def sample_cameras(cfg: SynthConfig, seed: int) -> list[Camera]:
    """Cameras 0..C-1, each with its own background (different neighbours), lighting, blur and scale."""
    rng = part_rng(seed, _CAMERA)
    bgs = list(rng.permutation(len(BACKGROUNDS)))
    out = []
    for cam in range(cfg.num_cameras):
        bg = BACKGROUNDS[int(bgs[cam % len(bgs)])]
        words = {
            "background": bg,
            "lighting": _choice(rng, LIGHTINGS, p=(0.3, 0.2, 0.16, 0.17, 0.17)),
            "blur": _choice(rng, BLURS, p=(0.45, 0.35, 0.2)),
            "scale": _choice(rng, SCALES, p=(0.3, 0.45, 0.25)),
        }
        render = {
            "bg_seed": int(rng.integers(2**31)),
            "bg_hue": float(rng.uniform(-1.0, 1.0)),
            "tint": tuple(float(v) for v in rng.normal(0.0, 0.03, size=3)),
        }
        out.append(Camera(cam, words, render))
    return out


def sample_images(cfg: SynthConfig, seed: int) -> tuple[list[ImageSpec], list[Camera]]:
    """Every image of the dataset: ids 1..num_train_ids are train, the rest test (query + gallery).

    Each outfit's images are spread round-robin over its cameras; for a test outfit, ``queries_per_outfit``
    of its cameras give one query image each and everything else is gallery, so every query has a
    same-clothes match in another camera and clothes-changing matches in the identity's other outfits.
    """
    cameras = sample_cameras(cfg, seed)
    specs: list[ImageSpec] = []
    for ident in sample_identities(cfg, seed):
        test = ident.pid > cfg.num_train_ids
        for outfit in sample_outfits(cfg, seed, ident):
            rng = part_rng(seed, _LAYOUT, ident.pid, outfit.outfit)
            order = rng.permutation(cfg.images_per_outfit)
            cams = [outfit.cameras[int(i) % len(outfit.cameras)] for i in order]
            query_idx: set[int] = set()
            if test:
                qcams = rng.choice(outfit.cameras, size=cfg.queries_per_outfit, replace=False)
                for qc in qcams:
                    query_idx.add(min(i for i, c in enumerate(cams) if c == int(qc)))
            for i, cam in enumerate(cams):
                split = ("query" if i in query_idx else "gallery") if test else "train"
                folder = {"train": "train", "query": "query", "gallery": "test"}[split]
                image_id = f"{folder}/{ident.pid:03d}_{outfit.outfit}_c{cam + 1}_{i + 1:04d}.png"
                specs.append(_image(cfg, seed, ident, outfit, cameras[cam], i, image_id, split))
    return specs, cameras


def _image(
    cfg: SynthConfig,
    seed: int,
    ident: Identity,
    outfit: Outfit,
    cam: Camera,
    i: int,
    image_id: str,
    split: str,
) -> ImageSpec:
    rng = part_rng(seed, _IMAGE, ident.pid, outfit.outfit, i)
    prop = _choice(rng, PROPS) if rng.random() < cfg.prop_prob else "none"
    row: dict[str, Any] = {
        "image_id": image_id,
        "pid": ident.pid,
        "outfit": outfit.outfit,
        "camid": cam.camid,
        **ident.words,
        **outfit.words,
        "direction": _choice(rng, DIRECTIONS, p=(0.34, 0.3, 0.18, 0.18)),
        "stride": _choice(rng, STRIDES, p=(0.25, 0.5, 0.25)),
        "arm_swing": _choice(rng, ARM_SWINGS, p=(0.3, 0.45, 0.25)),
        "prop": prop,
        **cam.words,
    }
    render = {
        "identity": ident.render,
        "outfit": outfit.render,
        "camera": cam.render,
        "dx": float(rng.normal(0.0, 0.035)),
        "dy": float(rng.normal(0.0, 0.015)),
        "size": float(rng.normal(1.0, 0.02)),
        "light": float(rng.normal(1.0, 0.04)),
        "phase": float(rng.uniform(-1.0, 1.0)),
    }
    return ImageSpec(
        image_id, split, {c: row[c] for c in ATTRIBUTE_COLUMNS}, render, (seed, ident.pid, outfit.outfit, i)
    )
