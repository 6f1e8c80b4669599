"""PRCC: ``prcc/rgb/{train,val}/<pid>/{A,B,C}_*.jpg`` and ``prcc/rgb/test/{A,B,C}/<pid>/*.jpg``.

The identity is the name of the folder directly holding the image (a part of the published layout, parsed
relative to the split folder, never from the root). Camera A/B/C -> 0/1/2. Clothes key: ``<pid>`` for A and B
(same clothes), ``<pid>C`` for C (changed clothes). Test: A -> ``gallery``, B -> ``query_same`` (same-clothes
query), C -> ``query_diff`` (clothes-changing query).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_manifests._common import (
    check_images,
    check_mode,
    check_query_in_gallery,
    check_splits,
    drop_bad,
    examples,
    finish,
    list_images,
    list_subdirs,
    locate,
    parse_names,
    rel,
    require_dir,
    require_root,
)
from data_manifests.registry import ProtocolSpec, register_dataset
from differ_common.errors import DataError

NAME = "prcc"
FOLDER = "prcc"
CAMERAS = {"A": 0, "B": 1, "C": 2}
TEST_SPLITS = {"A": "gallery", "B": "query_same", "C": "query_diff"}
TRAIN_PATTERN = re.compile(r"([ABC])_")
# B -> A (same clothes) and C -> A (changed clothes), multi-shot; their single-shot variants are part of the protocol
PROTOCOLS = (
    ProtocolSpec("same_clothes", "query_same", mode="same_clothes", single_shot="required"),
    ProtocolSpec("clothes_changing", "query_diff", mode="clothes_changing", single_shot="required"),
)
TRAIN_EXPECTED = "{A,B,C}_*.jpg (camera letter first, e.g. A_cropped_rgb001.jpg)"


def _clothes_key(pid: int, cam: str) -> str:
    return f"{pid}C" if cam == "C" else f"{pid}"


def _identity_folders(folder: Path) -> list[tuple[int, Path]]:
    dirs = list_subdirs(folder)
    bad = [d.name for d in dirs if not d.name.isdigit()]
    if bad:
        raise DataError(
            f"{folder}: {len(bad)} identity folder name(s) are not numeric pids: {examples(bad)}; "
            "expected one folder per identity named by its pid (e.g. 001)"
        )
    return [(int(d.name), d) for d in dirs]


@register_dataset(
    "prcc",
    "prcc/rgb/{train,val}/<pid>/{A,B,C}_*.jpg, prcc/rgb/test/{A,B,C}/<pid>/*.jpg",
    protocols=PROTOCOLS,
    published=True,
    summary_id_column="raw_pid",  # the release's data/datasets/prcc.py keys its summaries by str(int(folder))
)
def build(root: Path, on_bad_image: str = "error") -> pd.DataFrame:
    """The PRCC manifest; ``root`` holds ``prcc/`` (or is ``prcc``, the folder holding ``rgb/``)."""
    check_mode(on_bad_image)
    root = require_root(root, NAME, "prcc/rgb/")
    base = locate(root, [FOLDER, ""], ["rgb"])
    rgb = require_dir(base / "rgb", "PRCC 'rgb'")
    where: dict[str, str] = {}
    rows: list[dict] = []
    for split in ("train", "val"):
        folder = require_dir(rgb / split, f"PRCC {split!r} split")
        where[split] = str(folder)
        for pid, pdir in _identity_folders(folder):
            files = list_images(pdir)
            for f, m in zip(files, parse_names(files, TRAIN_PATTERN, pdir, TRAIN_EXPECTED), strict=True):
                cam = m.group(1)
                rows.append(_row(f, base, split, pid, cam))
    test = require_dir(rgb / "test", "PRCC 'test'")
    for cam, split in TEST_SPLITS.items():
        folder = require_dir(test / cam, f"PRCC test camera {cam!r}")
        where[split] = str(folder)
        for pid, pdir in _identity_folders(folder):
            rows.extend(_row(f, base, split, pid, cam) for f in list_images(pdir))
    attrs: dict = {}
    bad = check_images([Path(r["path"]) for r in rows], on_bad_image)
    rows = drop_bad(rows, bad, attrs)
    raw = pd.DataFrame(rows, columns=["split", "raw_pid"])
    check_splits(raw, where)
    check_query_in_gallery(raw, lambda q: where[q])
    return finish(rows, attrs, str(base))


def _row(f: Path, base: Path, split: str, pid: int, cam: str) -> dict:
    return {
        "image_id": rel(f, base),
        "path": str(f),
        "dataset": NAME,
        "split": split,
        "raw_pid": pid,
        "camid": CAMERAS[cam],
        "clothes_key": _clothes_key(pid, cam),
    }
