"""LTCC: ``LTCC_ReID/{train,query,test}/<pid>_<outfit>_c<cam>_<frame>.png`` (test = gallery).

Labels come from the file's basename only: ``(\\d+)_(\\d+)_c(\\d+)`` -> pid, outfit, camera (1-based -> 0-based);
clothes key ``<pid>_<outfit>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_manifests._common import build_flat
from data_manifests.registry import CC_PROTOCOLS, register_dataset

NAME = "ltcc"
FOLDER = "LTCC_ReID"
SPLIT_FOLDERS = {"train": "train", "query": "query", "test": "gallery"}
PATTERN = re.compile(r"(\d+)_(\d+)_c(\d+)")
EXPECTED = "<pid>_<outfit>_c<camera>_*.png (e.g. 001_1_c11_015857.png)"


def _labels(m: re.Match[str], image_id: str) -> dict:
    pid, outfit, cam = (int(g) for g in m.groups())
    return {"raw_pid": pid, "camid": cam - 1, "clothes_key": f"{pid}_{outfit}"}


@register_dataset(
    "ltcc", "LTCC_ReID/{train,query,test}/<pid>_<outfit>_c<cam>_*.png", protocols=CC_PROTOCOLS, published=True
)
def build(root: Path, on_bad_image: str = "error") -> pd.DataFrame:
    """The LTCC manifest; ``root`` is the folder holding ``LTCC_ReID/`` (or ``LTCC_ReID`` itself)."""
    return build_flat(root, NAME, FOLDER, SPLIT_FOLDERS, PATTERN, EXPECTED, _labels, on_bad_image)
