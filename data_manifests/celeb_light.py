"""Celeb-reID-light: ``Celeb-reID-light/{train,query,gallery}/<pid>_<idx>_<n>.jpg``.

Labels from the basename only: ``(\\d+)_(\\d+)_(\\d+)`` -> pid, image index, third field. Every image is its
own outfit (clothes key = image_id); there is no camera information, so camid is 0 everywhere and the
protocol ignores cameras.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_manifests._common import build_flat
from data_manifests.registry import ProtocolSpec, register_dataset

NAME = "celeb-light"
FOLDER = "Celeb-reID-light"
SPLIT_FOLDERS = {"train": "train", "query": "query", "gallery": "gallery"}
PATTERN = re.compile(r"(\d+)_(\d+)_(\d+)")
EXPECTED = "<pid>_<index>_<n>.jpg (e.g. 12_3_0.jpg)"


def _labels(m: re.Match[str], image_id: str) -> dict:
    return {"raw_pid": int(m.group(1)), "camid": 0, "clothes_key": image_id}


@register_dataset(
    "celeb-light",
    "Celeb-reID-light/{train,query,gallery}/<pid>_<idx>_<n>.jpg",
    aliases=("celeb", "celeb-reid-light", "celebreid-light"),
    protocols=(ProtocolSpec("general", ignore_camera=True, single_shot="none"),),
    published=True,
)
def build(root: Path, on_bad_image: str = "error") -> pd.DataFrame:
    """The Celeb-reID-light manifest; ``root`` holds ``Celeb-reID-light/`` (or is that folder)."""
    return build_flat(root, NAME, FOLDER, SPLIT_FOLDERS, PATTERN, EXPECTED, _labels, on_bad_image)
