"""CCVID: ``CCVID/{train,query,gallery}.txt`` with lines ``<tracklet_path> <pid> <clothes_label>``.

The frames of a tracklet are the image files in ``CCVID/<tracklet_path>/`` (e.g. ``session1/001_01/``).
One manifest row per frame: ``track_id`` = tracklet path, ``frame`` = 0-based index of the file among the
tracklet's sorted file names (kept when unreadable frames are skipped, so indices never shift).

Labels, parsed from the list files and the tracklet path only (never from the root):

- session = first part of the tracklet path (``session1``, ``session2``, ``session3``);
- camera = the number after the ``_`` in the tracklet folder name ``<pid>_<cam>`` (CCVID numbers them from 01);
  camid = cam - 1, plus 12 for ``session3``. This is CAL's rule (Simple-CCReID ``data/datasets/ccvid.py`` takes
  ``tracklet_path.split('_')[1]`` and adds 12 for session3, so that the third session's cameras never share an id
  with the first two), shifted to 0-based; we read the folder name rather than splitting the whole path;
- clothes key = ``<pid>_<clothes_label>`` (the label is unique only within an identity).
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
    locate,
    rel,
    require_file,
    require_root,
)
from data_manifests.registry import CC_PROTOCOLS, register_dataset
from differ_common.errors import DataError

NAME = "ccvid"
FOLDER = "CCVID"
LIST_FILES = {"train": "train.txt", "query": "query.txt", "gallery": "gallery.txt"}
SESSION3_OFFSET = 12
TRACKLET_PATTERN = re.compile(r"(\d+)_(\d+)$")
LINE_EXPECTED = "'<tracklet_path> <pid> <clothes_label>' (e.g. 'session1/001_01 001 u1_l1_s1_c1_b1')"


def camera_id(tracklet: str) -> int | None:
    """0-based camera of a tracklet path such as ``session3/012_04`` (-> 3 + 12 = 15); None if unparsable."""
    parts = tracklet.strip("/").split("/")
    m = TRACKLET_PATTERN.search(parts[-1])
    if m is None or int(m.group(2)) < 1:
        return None
    cam = int(m.group(2)) - 1
    return cam + SESSION3_OFFSET if parts[0] == "session3" else cam


def _parse_list(path: Path) -> list[tuple[int, str, int, str]]:
    """``(line number, tracklet path, pid, clothes label)`` for each non-empty line of a list file."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or not fields[1].isdigit():
            raise DataError(f"{path}:{n}: {line.strip()!r} is not {LINE_EXPECTED}; fix or remove the line")
        tracklet = fields[0].strip("/")
        if camera_id(tracklet) is None:
            raise DataError(
                f"{path}:{n}: tracklet {tracklet!r} is not named <session>/<pid>_<camera> with cameras from 01 "
                "(e.g. session1/001_01); fix the line"
            )
        out.append((n, tracklet, int(fields[1]), fields[2]))
    return out


@register_dataset(
    "ccvid",
    "CCVID/{train,query,gallery}.txt + CCVID/<session>/<pid>_<cam>/<frames>",
    protocols=CC_PROTOCOLS,
    tracklet=True,
    published=True,
)
def build(root: Path, on_bad_image: str = "error") -> pd.DataFrame:
    """The CCVID manifest (one row per frame); ``root`` holds ``CCVID/`` (or ``CCVID/CCVID/``, or is it)."""
    check_mode(on_bad_image)
    root = require_root(root, NAME, "CCVID/train.txt")
    base = locate(root, [FOLDER, f"{FOLDER}/{FOLDER}", ""], LIST_FILES.values())  # DIFFER nests CCVID/CCVID
    rows: list[dict] = []
    where: dict[str, str] = {}
    for split, name in LIST_FILES.items():
        list_path = require_file(base / name, f"CCVID {split} list")
        where[split] = str(list_path)
        missing: list[str] = []
        empty: list[str] = []
        for _n, tracklet, pid, label in _parse_list(list_path):
            folder = base / tracklet
            if not folder.is_dir():
                missing.append(tracklet)
                continue
            frames = list_images(folder)
            if not frames:
                empty.append(tracklet)
            camid = camera_id(tracklet)
            for i, f in enumerate(frames):
                rows.append(
                    {
                        "image_id": rel(f, base),
                        "path": str(f),
                        "dataset": NAME,
                        "split": split,
                        "raw_pid": pid,
                        "camid": camid,
                        "clothes_key": f"{pid}_{label}",
                        "track_id": tracklet,
                        "frame": i,
                    }
                )
        if missing:
            raise DataError(
                f"{list_path}: {len(missing)} tracklet folder(s) not found under {base}: {examples(missing)}; "
                "restore them or remove their lines"
            )
        if empty:
            raise DataError(
                f"{list_path}: {len(empty)} tracklet folder(s) hold no image: {examples(empty)}; "
                "restore their frames or remove their lines"
            )
    attrs: dict = {}
    bad = check_images([Path(r["path"]) for r in rows], on_bad_image)
    rows = drop_bad(rows, bad, attrs)
    raw = pd.DataFrame(rows, columns=["split", "raw_pid"])
    check_splits(raw, where)
    check_query_in_gallery(raw, lambda q: where[q])
    return finish(rows, attrs, str(base))
