"""Small workspaces for the caption tests: a manifest (written with the manifest schema) and a SynthCC-style
attribute table in the contract's columns, with real (tiny) image files."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import yaml

from captions.attributes_captioner import REQUIRED_COLUMNS
from captions.prompts import DEFAULT_PROMPTS
from data_manifests.schema import finalize_manifest, write_manifest
from differ_common.workspace import Workspace

VALUES = {
    "gender": ["male", "female"],
    "age": ["young", "middle_aged", "senior"],
    "height": ["short", "average", "tall"],
    "build": ["slim", "average", "heavy"],
    "skin_tone": ["light", "medium", "dark"],
    "head_shape": ["round", "oval", "square"],
    "hair_colour": ["black", "brown", "blond", "red"],
    "hairstyle": ["short", "long", "ponytail", "bald"],
    "top_colour": ["red", "blue", "green", "white", "black"],
    "top_pattern": ["plain", "striped", "checked"],
    "sleeves": ["short", "long"],
    "bottom_colour": ["blue", "black", "grey", "beige"],
    "bottom_type": ["trousers", "shorts", "skirt"],
    "shoes_colour": ["white", "black", "brown"],
    "bag": ["none", "backpack", "handbag"],
    "direction": ["left", "right", "towards the camera", "away"],
    "stride": ["short", "long"],
    "arm_swing": ["small", "large"],
    "prop": ["none", "phone", "umbrella", "cup"],
    "background": ["brick wall", "corridor", "street"],
    "lighting": ["bright", "dim"],
    "blur": ["no", "slight"],
    "scale": ["small", "large"],
}


def make_workspace(
    work: Path,
    n_ids: int = 4,
    per_id: int = 3,
    dataset: str = "synthcc",
    seed: int = 0,
    attributes: bool = True,
) -> Path:
    """A workspace with ``n_ids`` train identities × ``per_id`` images (+ one query and one gallery image per
    identity), 16×32 PNG files, the manifest, and (optionally) the attribute table. Returns the workspace."""
    from PIL import Image

    rng = random.Random(seed)
    ws = Workspace.at(work)
    root = work / "data"
    rows, attrs = [], []
    for pid in range(n_ids):
        fixed = {
            c: rng.choice(VALUES[c]) for c in ("gender", "age", "height", "build", "skin_tone", "head_shape")
        }
        for split, n in (("train", per_id), ("query", 1), ("gallery", 1)):
            for k in range(n):
                outfit = k % 2
                image_id = f"{split}/{pid + 1:04d}_c{k % 3 + 1}_o{outfit}_{k:03d}.png"
                path = root / image_id
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 32), (40 * pid % 256, 30 * k % 256, 90)).save(path)
                rows.append(
                    {
                        "image_id": image_id,
                        "path": str(path),
                        "dataset": dataset,
                        "split": split,
                        "raw_pid": pid + 1,
                        "camid": k % 3,
                        "clothes_key": f"{pid + 1}_{outfit}",
                    }
                )
                attr = {c: rng.choice(VALUES[c]) for c in VALUES}
                attr.update(fixed)
                attr.update({"image_id": image_id, "pid": pid + 1, "outfit": outfit, "camid": k % 3})
                attrs.append(attr)
    write_manifest(finalize_manifest(rows), ws.manifest(dataset))
    if attributes:
        table = pd.DataFrame(attrs)
        assert set(REQUIRED_COLUMNS) <= set(table.columns)
        table.to_parquet(ws.attributes(dataset), index=False)
    return ws.root


def short_prompts(tmp_path: Path, max_new_tokens: int = 4) -> Path:
    """The shipped prompts with short answers (a random-weight model never stops early), written to ``tmp_path``."""
    spec = yaml.safe_load(DEFAULT_PROMPTS.read_text())
    for item in spec["perspectives"]:
        item["max_new_tokens"] = max_new_tokens
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
