"""``attributes``: SynthCC captions written from the generator's ground-truth attributes.

Each (image, perspective) gets one of several templates; with ``noise`` > 0 every attribute is independently
corrupted with probability ``noise`` (half of the time dropped, half of the time replaced by another value of
the same column, e.g. a wrong colour), so the captions behave like an imperfect VLM. Everything is
deterministic for (seed, prompt_id, image_id, perspective): two workspaces give identical tables, and an
edited prompt gives a new (equally valid) phrasing. Attribute values may be any strings.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from differ_common.code_fingerprint import code_fingerprint
from differ_common.errors import ConfigError, DataError
from differ_common.fingerprint import frame_fingerprint, sha256_json
from differ_common.workspace import Workspace

if TYPE_CHECKING:
    from captions.prompts import PerspectiveSpec


def templates_code() -> str:
    """The fingerprint of this module's source (its templates): an edit makes its captions stale."""
    return code_fingerprint((__name__,), follow_imports=False)


# perspective -> attribute columns it describes (the SynthCC attribute table contract)
PERSPECTIVE_COLUMNS: dict[str, tuple[str, ...]] = {
    "biometrics": ("gender", "age", "height", "build", "skin_tone", "head_shape"),
    "hairstyle": ("hair_colour", "hairstyle"),
    "clothing": (
        "top_colour",
        "top_pattern",
        "sleeves",
        "bottom_colour",
        "bottom_type",
        "shoes_colour",
        "bag",
    ),
    "pose": ("direction", "stride", "arm_swing"),
    "interaction": ("prop", "bag"),
    "environment": ("background", "lighting", "blur", "scale"),
}
REQUIRED_COLUMNS = ("image_id", *sorted({c for cols in PERSPECTIVE_COLUMNS.values() for c in cols}))
COLOUR_COLUMNS = ("hair_colour", "top_colour", "bottom_colour", "shoes_colour")
ABSENT = {"", "none", "no", "nan", "null", "n/a"}
FALLBACK_COLOURS = ("black", "white", "grey", "red", "blue", "green", "yellow", "brown")

# how each attribute is phrased: several variants, "{}" is the value
PHRASES: dict[str, tuple[str, ...]] = {
    "height": ("{} height", "a {} stature"),
    "build": ("{} build", "a {} body build"),
    "skin_tone": ("{} skin", "a {} skin tone"),
    "head_shape": ("a {} head shape", "a {} face"),
    "hair_colour": ("{} hair", "hair coloured {}"),
    "hairstyle": ("a {} hairstyle", "hair worn {}"),
    "sleeves": ("{} sleeves",),
    "shoes_colour": ("{} shoes", "{} footwear"),
    "bag": ("a {}", "carrying a {}"),
    "direction": ("facing {}", "heading {}"),
    "stride": ("a {} stride", "a {} gait"),
    "arm_swing": ("{} arm swing", "arms swinging {}"),
    "prop": ("holding a {}", "with a {} in hand"),
    "background": ("a {} background", "a {} backdrop"),
    "lighting": ("{} lighting", "{} light"),
    "blur": ("{} blur", "a {} level of blur"),
    "scale": ("{} in the frame", "appearing {} in the image"),
}
OPENINGS: dict[str, tuple[str, ...]] = {
    "biometrics": ("{}.", "The person is {}.", "Biometric traits: {}.", "This pedestrian is {}."),
    "hairstyle": ("{}.", "The person has {}.", "Hair: {}."),
    "clothing": ("Wearing {}.", "The person wears {}.", "Outfit: {}.", "{}."),
    "pose": ("Walking, {}.", "Pose: {}.", "In motion, {}."),
    "interaction": ("The person is {}.", "{}.", "Objects: {}."),
    "environment": ("Scene with {}.", "The photo shows {}.", "{}."),
}
NOTHING: dict[str, str] = {
    "biometrics": "No clear biometric traits are visible.",
    "hairstyle": "The hair is not clearly visible.",
    "clothing": "The clothing is not clearly visible.",
    "pose": "The pose is unclear.",
    "interaction": "No objects in hand.",
    "environment": "The surroundings are unclear.",
}


def _value(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    s = " ".join(str(v).replace("_", " ").split())
    return s or None


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _articles(s: str) -> str:
    """ "a oval" → "an oval"."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", s)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass
class Draft:
    """A caption and which of its attributes were corrupted (for tests and noise statistics)."""

    text: str
    dropped: tuple[str, ...]
    replaced: tuple[str, ...]
    n_attributes: int


def render(
    row: dict[str, Any],
    perspective: str,
    rng: random.Random,
    noise: float = 0.0,
    vocab: dict[str, list[str]] | None = None,
) -> Draft:
    """The caption of one image for one perspective (template chosen first, then per-attribute noise)."""
    vocab = vocab or {}
    cols = PERSPECTIVE_COLUMNS[perspective]
    opening = rng.choice(OPENINGS[perspective])
    variant = rng.randrange(2)
    values: dict[str, str | None] = {}
    dropped, replaced = [], []
    n_attr = 0
    for col in cols:
        v = _value(row.get(col))
        absent = v is None or v.lower() in ABSENT
        u = rng.random()
        if v is None:
            values[col] = None
            continue
        n_attr += 1
        if u < noise / 2:
            values[col] = None
            dropped.append(col)
            continue
        if u < noise:
            pool = [x for x in vocab.get(col, []) if x != v]
            if col in COLOUR_COLUMNS and not pool:
                pool = [x for x in FALLBACK_COLOURS if x != v]
            if pool:
                values[col] = pool[rng.randrange(len(pool))]
                replaced.append(col)
                continue
            values[col] = None
            dropped.append(col)
            continue
        values[col] = None if absent and col in ("bag", "prop") else v
    for col in ("bag", "prop"):  # a replaced "none" is still no object
        if values.get(col) is not None and values[col].lower() in ABSENT:
            values[col] = None
    pieces = _pieces(perspective, values, variant)
    text = _cap(_articles(opening.format(_join(pieces)))) if pieces else NOTHING[perspective]
    return Draft(text, tuple(dropped), tuple(replaced), n_attr)


def _phrase(col: str, value: str, variant: int) -> str:
    if value.lower() in ABSENT:  # e.g. blur "none" -> "no blur"
        return f"no {col.replace('_', ' ')}"
    options = PHRASES[col]
    text = options[variant % len(options)].format(value)
    return re.sub(r"\b(\w+) \1\b", r"\1", text)  # "long sleeves sleeves" -> "long sleeves"


def _pieces(perspective: str, v: dict[str, str | None], variant: int) -> list[str]:
    if perspective == "biometrics":
        subject = " ".join(x for x in (v.get("age"), v.get("gender")) if x)
        rest = [
            _phrase(c, x, variant) for c in ("height", "build", "skin_tone", "head_shape") if (x := v.get(c))
        ]
        if not subject:
            return rest
        head = f"a {subject} person"
        if not rest:
            return [head]
        return [f"{head} with {_join(rest)}"]
    if perspective == "clothing":
        out = []
        top = v.get("top_colour")
        if top or v.get("top_pattern"):
            out.append(f"a {top} top" if top else "a top")
            if v.get("top_pattern"):
                out[-1] += f" with a {v['top_pattern']} pattern"
        if v.get("sleeves"):
            out.append(_phrase("sleeves", v["sleeves"], variant))
        if v.get("bottom_colour") or v.get("bottom_type"):
            out.append(" ".join(x for x in (v.get("bottom_colour"), v.get("bottom_type") or "bottoms") if x))
        if v.get("shoes_colour"):
            out.append(_phrase("shoes_colour", v["shoes_colour"], variant))
        if v.get("bag"):
            out.append(_phrase("bag", v["bag"], variant))
        return out
    if perspective == "hairstyle":
        colour, style = v.get("hair_colour"), v.get("hairstyle")
        if colour and style:
            return [f"{style} {colour} hair" if variant == 0 else f"{colour} hair in a {style} style"]
        return [_phrase(c, x, variant) for c, x in (("hair_colour", colour), ("hairstyle", style)) if x]
    if perspective == "interaction":
        out = []
        if v.get("prop"):
            out.append(_phrase("prop", v["prop"], variant))
        if v.get("bag"):
            out.append(f"carrying a {v['bag']}")
        return out
    return [_phrase(c, x, variant) for c, x in v.items() if x]


def attributes_captioner_name(noise: float, seed: int = 0) -> str:
    """The ``captioner`` column value of the attributes captioner (cheap: reads nothing)."""
    return f"attributes:noise={float(noise):g}" + (f",seed={int(seed)}" if seed else "")


class AttributesCaptioner:
    """Captions from ``Workspace.attributes(dataset)`` (SynthCC's ground truth), no model involved."""

    needs_images = False
    min_batch_size = 4096  # no model: large batches keep the number of Parquet parts small

    def __init__(
        self, workdir: str | os.PathLike | None, dataset: str | None, noise: float = 0.0, seed: int = 0
    ) -> None:
        import pandas as pd

        from data_manifests.registry import dataset_traits

        if not 0.0 <= float(noise) <= 1.0:
            raise ConfigError(f"--noise must be in [0, 1] (got {noise})")
        if not dataset_traits(dataset).generated:
            raise ConfigError(
                f"the attributes captioner needs SynthCC's ground-truth attributes; dataset {dataset!r} has "
                "none: use --captioner hf:<local VLM dir>"
            )
        ws = Workspace.at(workdir)
        path = ws.attributes(dataset)
        if not path.exists():
            raise DataError(f"{path}: attribute table not found; run `differ manifest synthcc` first")
        table = pd.read_parquet(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(
                f"{path}: missing attribute column(s) {missing}; regenerate with `differ manifest synthcc`"
            )
        if table["image_id"].duplicated().any():
            raise DataError(f"{path}: duplicated image_id rows; regenerate with `differ manifest synthcc`")
        self.path = path
        self.noise = float(noise)
        self.seed = int(seed)
        cols = list(REQUIRED_COLUMNS)
        self._rows: dict[str, dict[str, Any]] = {
            r["image_id"]: r for r in table[cols].astype(object).to_dict(orient="records")
        }
        self.vocab: dict[str, list[str]] = {}
        for c in REQUIRED_COLUMNS[1:]:
            vals = {x for x in (_value(v) for v in table[c].tolist()) if x}
            self.vocab[c] = sorted(vals)
        colours = sorted({x for c in COLOUR_COLUMNS for x in self.vocab[c]})
        for c in COLOUR_COLUMNS:  # a wrong colour may come from any colour column
            self.vocab[c] = colours
        self.name = attributes_captioner_name(self.noise, self.seed)
        self.fingerprint = sha256_json(
            [templates_code(), self.noise, self.seed, frame_fingerprint(table[cols].astype(str))], 16
        )

    def draft(self, image_id: str, spec: PerspectiveSpec) -> Draft:
        row = self._rows.get(image_id)
        if row is None:
            raise DataError(
                f"{self.path}: no attributes for image {image_id!r}; rebuild the manifest and attribute table "
                "together with `differ manifest synthcc`"
            )
        rng = random.Random(f"{self.seed}|{spec.prompt_id}|{image_id}|{spec.name}")
        return render(row, spec.name, rng, self.noise, self.vocab)

    def caption(self, images: Any, spec: PerspectiveSpec, image_ids: list[str]) -> list[str]:
        return [self.draft(i, spec).text for i in image_ids]

    def check_images(self, image_ids: list[str]) -> None:
        """DataError naming the first images the attribute table does not cover."""
        lacking = [i for i in image_ids if i not in self._rows]
        if lacking:
            raise DataError(
                f"{self.path}: no attributes for {len(lacking)} image(s), e.g. {lacking[:3]}; rebuild with "
                "`differ manifest synthcc`"
            )
