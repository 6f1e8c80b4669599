"""The pre-training corpus: SynthCC people generated with their own seed, each image with full descriptions.

A description joins the attributes captioner's caption of every perspective (biometrics, hairstyle, clothing,
pose, interaction, environment); each image gets ``caption_variants`` of them (templates and phrasings drawn from
a generator seeded by the image's name), one drawn at each step. Everything is a function of the config.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from differ_core.clip_pretrain.config import PeopleConfig

PERSPECTIVE_ORDER = ("biometrics", "hairstyle", "clothing", "pose", "interaction", "environment")


@dataclass
class Corpus:
    """Images (uint8 ``[N, H, W, 3]``), their attribute rows, ``[N, V]`` full descriptions and ``[N, V]`` partial
    ones (only the ``partial`` perspectives); ``held_out`` marks the people kept for the zero-shot check."""

    images: np.ndarray
    attributes: pd.DataFrame
    captions: list[list[str]]
    partial: list[list[str]]
    held_out: np.ndarray


def people_folder(root: Path, people: PeopleConfig) -> Path:
    """Generate (or reuse) the people under ``root``; returns the SynthCC folder."""
    from data_manifests.synthcc.config import resolve_config
    from data_manifests.synthcc.generator import generate

    cfg = resolve_config(
        "default",
        num_train_ids=people.num_train_ids,
        num_test_ids=people.num_test_ids,
        outfits_per_id=people.outfits_per_id,
        images_per_outfit=people.images_per_outfit,
        img_height=people.img_height,
        img_width=people.img_width,
        **people.knobs,
    )
    return generate(root, cfg, people.seed).folder


def description(row: dict, rng: random.Random, perspectives: tuple[str, ...] = PERSPECTIVE_ORDER) -> str:
    """One description of an image: the caption of each perspective (default: all, the full description)."""
    from captions.attributes_captioner import render

    return " ".join(render(row, p, rng).text for p in perspectives)


def image_rng(image_id: str, variant: int) -> random.Random:
    """The generator of one caption variant (crc32: the same in every process, unlike ``hash``)."""
    return random.Random(zlib.crc32(f"{image_id}#{variant}".encode()))


def build_corpus(
    root: Path, people: PeopleConfig, variants: int, partial: tuple[str, ...] = ("biometrics", "hairstyle")
) -> Corpus:
    """Generate the people, read their images and write ``variants`` full and partial descriptions of each."""
    from PIL import Image

    from data_manifests.synthcc.generator import load_attributes

    folder = people_folder(root, people)
    attrs = load_attributes(folder).sort_values("image_id", kind="stable").reset_index(drop=True)
    rows = attrs.to_dict("records")
    images = np.stack([np.asarray(Image.open(folder / r["image_id"]).convert("RGB")) for r in rows])
    from captions.attributes_captioner import render

    captions = [[description(r, image_rng(r["image_id"], v)) for v in range(variants)] for r in rows]
    single = [
        [render(r, p, image_rng(r["image_id"], -1 - k)).text for k, p in enumerate(PERSPECTIVE_ORDER)]
        for r in rows
    ]
    held_out = ~attrs["image_id"].str.startswith("train/").to_numpy()
    return Corpus(images, attrs, captions, single, held_out)
