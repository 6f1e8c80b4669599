"""The SynthCC manifest: generate (or reuse) the images, then parse them exactly like LTCC."""

from __future__ import annotations

import os
import re
from typing import Any

import pandas as pd

from data_manifests._common import build_flat
from data_manifests.registry import CC_PROTOCOLS, SYNTH_OPTIONS, register_dataset
from data_manifests.synthcc.config import resolve_config
from data_manifests.synthcc.generator import FOLDER, generate
from differ_common.errors import ConfigError

NAME = "synthcc"
SPLIT_FOLDERS = {"train": "train", "query": "query", "test": "gallery"}
PATTERN = re.compile(r"(\d+)_(\d+)_c(\d+)")
EXPECTED = "<pid>_<outfit>_c<camera>_<idx>.png (e.g. 001_1_c3_0002.png)"


def _labels(m: re.Match[str], image_id: str) -> dict:
    pid, outfit, cam = (int(g) for g in m.groups())
    return {"raw_pid": pid, "camid": cam - 1, "clothes_key": f"{pid}_{outfit}"}


@register_dataset(
    "synthcc",
    "generated: SynthCC/{train,query,test}/<pid>_<outfit>_c<cam>_<idx>.png",
    options=SYNTH_OPTIONS,
    generated=True,
    protocols=CC_PROTOCOLS,
)
def build(
    root: str | os.PathLike | None,
    on_bad_image: str = "error",
    seed: int = 0,
    size: str | None = None,
    num_ids: int | None = None,
    workers: int | None = None,
    regenerate: bool = False,
    **knobs: Any,
) -> pd.DataFrame:
    """Generate SynthCC under ``root`` (reused when current) and return its manifest. A folder made with other
    knobs or another seed is refused, naming both settings, unless ``regenerate``.

    ``df.attrs["synthcc"]`` holds ``folder``, ``generated`` (bool), ``seconds`` and ``attributes`` (the path of
    the generated folder's attribute table).
    """
    if root is None or str(root) == "":
        raise ConfigError("synthcc: no --root given; pass the folder to generate SynthCC in (e.g. W/data)")
    try:
        seed = int(seed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"synthcc: seed={seed!r} is not an integer; pass --seed N") from exc
    cfg = resolve_config(size, num_ids=num_ids, **knobs)
    result = generate(root, cfg, seed, workers=workers, replace_other_settings=bool(regenerate))
    df = build_flat(result.folder, NAME, FOLDER, SPLIT_FOLDERS, PATTERN, EXPECTED, _labels, on_bad_image)
    df.attrs["synthcc"] = {
        "folder": str(result.folder),
        "generated": result.generated,
        "seconds": round(result.seconds, 3),
        "num_images": result.num_images,
        "attributes": str(result.folder / "attributes.parquet"),
        "seed": seed,
        "config": cfg.model_dump(mode="json"),
    }
    return df
