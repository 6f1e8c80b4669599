"""Writing SynthCC to disk in an LTCC-like layout, reusing a folder generated with the same settings.

``<root>/SynthCC/{train,query,test}/<pid>_<outfit>_c<cam>_<idx>.png`` (test = gallery; pid 3 digits from 001,
outfit from 1, camera from 1, idx = 4-digit position of the image in its outfit), plus ``attributes.parquet``
(the ground-truth table, columns ``ATTRIBUTE_COLUMNS``) and ``synthcc.json`` (the generator code's fingerprint,
config, seed, image count), written last. A folder whose stamp matches (and holds every image) is reused; otherwise the new
dataset is written to ``<root>/.tmp-SynthCC-<pid>-*`` and renamed into place, so an interrupted run never leaves a
half-written ``SynthCC``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from data_manifests.synthcc.attributes import ATTRIBUTE_COLUMNS, INT_ATTRIBUTES, ImageSpec, sample_images
from data_manifests.synthcc.config import SynthConfig
from differ_common.code_fingerprint import code_fingerprint
from differ_common.errors import DataError
from differ_common.io import pid_alive

FOLDER = "SynthCC"
STAMP = "synthcc.json"
ATTRIBUTES = "attributes.parquet"
SPLIT_FOLDERS = ("train", "query", "test")
_TMP_PREFIX = f".tmp-{FOLDER}-"
# the modules that decide the pixels and the attribute table (the knobs are in the stamp's config)
GENERATOR_MODULES = ("data_manifests.synthcc.attributes", "data_manifests.synthcc.draw", __name__)
_PARALLEL_MIN_IMAGES = 400


@dataclass(frozen=True)
class GenerateResult:
    folder: Path  # <root>/SynthCC
    generated: bool  # False when an existing folder was reused
    seconds: float
    num_images: int


def generator_code() -> str:
    """The fingerprint of the generator's source (the SynthCC package's modules): an edit that may change the
    pixels makes a folder generated before it stale."""
    return code_fingerprint(GENERATOR_MODULES, follow_imports=False)


def stamp_for(cfg: SynthConfig, seed: int) -> dict[str, Any]:
    """What identifies a generated folder: generator version, every knob and the seed."""
    return {
        "generator": "differ SynthCC",
        "generator_code": generator_code(),
        "config": cfg.model_dump(mode="json"),
        "seed": int(seed),
        "num_images": cfg.num_images,
    }


def read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(folder: Path, cfg: SynthConfig, seed: int) -> bool:
    """True when ``folder`` holds a complete dataset generated with exactly these settings."""
    if read_stamp(folder) != stamp_for(cfg, seed) or not (folder / ATTRIBUTES).is_file():
        return False
    n = 0
    for split in SPLIT_FOLDERS:
        d = folder / split
        if not d.is_dir():
            return False
        with os.scandir(d) as it:
            n += sum(1 for e in it if e.name.endswith(".png"))
    return n == cfg.num_images


def default_workers(n_images: int) -> int:
    if n_images < _PARALLEL_MIN_IMAGES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def other_settings(folder: Path, cfg: SynthConfig, seed: int) -> str | None:
    """How the dataset in ``folder`` was made differently from ``cfg``/``seed`` (``"knob A there, B asked; ..."``),
    or None when its stamp has the same knobs and seed (or there is no readable stamp: nothing of the user's)."""
    stamp = read_stamp(folder)
    if not isinstance(stamp, dict) or not isinstance(stamp.get("config"), dict):
        return None
    asked = {**cfg.model_dump(mode="json"), "seed": int(seed)}
    there = {**stamp["config"], "seed": stamp.get("seed")}
    diff = [f"{k} {there.get(k)!r} there, {asked.get(k)!r} asked" for k in sorted(set(asked) | set(there))
            if there.get(k) != asked.get(k)]  # fmt: skip
    return "; ".join(diff) or None


def generate(
    root: str | os.PathLike,
    cfg: SynthConfig,
    seed: int = 0,
    workers: int | None = None,
    replace_other_settings: bool = True,
) -> GenerateResult:
    """Generate SynthCC under ``root`` (or reuse it: same generator version, config and seed). A folder made with
    other knobs or another seed is replaced only if ``replace_other_settings``; otherwise a DataError names both
    settings and nothing is written."""
    t0 = time.perf_counter()
    root = Path(root).expanduser().absolute()
    folder = root / FOLDER
    if is_current(folder, cfg, seed):
        return GenerateResult(folder, False, time.perf_counter() - t0, cfg.num_images)
    if not replace_other_settings and (diff := other_settings(folder, cfg, seed)):
        raise DataError(
            f"{folder}: holds SynthCC made with other settings ({diff}); nothing was changed. Keep it by asking "
            "for its settings or generating elsewhere (--root), or replace it: `differ manifest synthcc "
            "--regenerate`, `differ run --refresh manifest`"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{root}: cannot create the SynthCC folder ({exc.strerror}); pass a writable --root"
        ) from exc
    _clean_dead_temps(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        specs, _cams = sample_images(cfg, seed)
        for split in SPLIT_FOLDERS:
            (tmp / split).mkdir()
        _render_all(specs, tmp, cfg, workers if workers is not None else default_workers(len(specs)))
        attributes_table(specs).to_parquet(tmp / ATTRIBUTES, index=False)
        (tmp / STAMP).write_text(
            json.dumps(stamp_for(cfg, seed), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _swap_in(tmp, folder, cfg, seed)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return GenerateResult(folder, True, time.perf_counter() - t0, cfg.num_images)


def _swap_in(tmp: Path, folder: Path, cfg: SynthConfig, seed: int) -> None:
    """Replace ``folder`` by ``tmp`` with renames (an old folder is moved aside first, then removed)."""
    old = None
    if folder.exists():
        if is_current(folder, cfg, seed):  # another process finished the same dataset meanwhile
            return
        old = folder.with_name(f"{_TMP_PREFIX}{os.getpid()}-old-{time.time_ns()}")
        os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not is_current(folder, cfg, seed):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_dead_temps(root: Path) -> None:
    """Remove ``.tmp-SynthCC-<pid>-*`` folders left by processes that no longer run (another thread of this
    process may be writing its own, so those stay)."""
    for p in root.glob(f"{_TMP_PREFIX}*"):
        pid_text = p.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and (int(pid_text) == os.getpid() or pid_alive(int(pid_text))):
            continue
        shutil.rmtree(p, ignore_errors=True)


def _render_chunk(
    specs: list[ImageSpec], folder: str, height: int, width: int, noise: float, blur: float
) -> int:
    from PIL import Image

    from data_manifests.synthcc.draw import render

    for spec in specs:
        arr = render(spec, height, width, noise, blur)
        Image.fromarray(arr, "RGB").save(os.path.join(folder, spec.image_id), format="PNG", compress_level=1)
    return len(specs)


def _render_all(specs: list[ImageSpec], folder: Path, cfg: SynthConfig, workers: int) -> None:
    args = (str(folder), cfg.img_height, cfg.img_width, cfg.noise_std, cfg.blur_scale)
    if workers <= 1:
        _render_chunk(specs, *args)
        return
    # chunks grouped by camera keep each worker's background cache warm
    ordered = sorted(specs, key=lambda s: (s.row["camid"], s.image_id))
    n_chunks = workers * 4
    chunks = [ordered[i::n_chunks] for i in range(n_chunks)]
    ctx = None
    with contextlib.suppress(ValueError):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_render_chunk, c, *args) for c in chunks if c]
        done = sum(f.result() for f in futures)
    if done != len(specs):  # pragma: no cover - defensive
        raise DataError(f"{folder}: rendered {done} of {len(specs)} SynthCC images; run the command again")


def attributes_table(specs: list[ImageSpec]) -> pd.DataFrame:
    """The ground-truth table: one row per image, exactly ``ATTRIBUTE_COLUMNS``, sorted by image_id."""
    df = pd.DataFrame([s.row for s in specs], columns=list(ATTRIBUTE_COLUMNS))
    for c in ATTRIBUTE_COLUMNS:
        df[c] = df[c].astype("int64") if c in INT_ATTRIBUTES else df[c].astype(str)
    return df.sort_values("image_id", kind="stable").reset_index(drop=True)


def load_attributes(folder: str | os.PathLike) -> pd.DataFrame:
    """The attribute table of a generated ``SynthCC`` folder."""
    p = Path(folder) / ATTRIBUTES
    if not p.is_file():
        raise DataError(
            f"{p}: SynthCC attribute table not found; regenerate with `differ manifest synthcc --root R`"
        )
    return pd.read_parquet(p)
