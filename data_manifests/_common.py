"""Helpers shared by the dataset adapters: locating folders, listing and parsing file names, image checks,
split checks. Every failure is a one-line DataError naming the path, what was expected and the fix."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from differ_common.errors import ConfigError, DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
BAD_IMAGE_MODES = ("error", "skip")
MAX_LISTED = 5


def check_mode(on_bad_image: str) -> str:
    if on_bad_image not in BAD_IMAGE_MODES:
        raise ConfigError(f"--on-bad-image {on_bad_image!r}: expected one of {', '.join(BAD_IMAGE_MODES)}")
    return on_bad_image


def examples(items: Sequence[object], n: int = MAX_LISTED) -> str:
    """``'a', 'b', ... (12 in all)``: the first ``n`` items and the count."""
    shown = ", ".join(str(x) for x in items[:n])
    return f"{shown}{', ...' if len(items) > n else ''} ({len(items)} in all)"


def require_root(root: str | os.PathLike | None, dataset: str, expected: str) -> Path:
    if root is None or str(root) == "":
        raise DataError(f"{dataset}: no dataset root given; pass --root, the folder that contains {expected}")
    p = Path(root).expanduser()
    if not p.exists():
        raise DataError(f"{p}: dataset root not found; pass --root, the folder that contains {expected}")
    if not p.is_dir():
        raise DataError(
            f"{p}: dataset root is not a folder; pass --root, the folder that contains {expected}"
        )
    return p.absolute()


def locate(root: Path, candidates: Iterable[str], markers: Iterable[str]) -> Path:
    """The first of ``root/<candidate>`` (``""`` = root itself) that holds any of ``markers``; if none does,
    the first candidate that exists (so the missing-split error names the most likely path)."""
    cands = [root / c if c else root for c in candidates]
    markers = list(markers)
    for c in cands:
        if any((c / m).exists() for m in markers):
            return c
    for c in cands:
        if c.is_dir():
            return c
    return root


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found; expected the dataset's published layout there")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; expected the dataset's published layout there")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files and other extensions ignored), sorted by name."""
    with os.scandir(folder) as it:
        files = [
            Path(e.path)
            for e in it
            if not e.name.startswith(".") and e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(files, key=lambda p: p.name)


def list_subdirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        dirs = [Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir()]
    return sorted(dirs, key=lambda p: p.name)


def parse_names(
    files: Sequence[Path], pattern: re.Pattern[str], folder: Path, expected: str
) -> list[re.Match[str]]:
    """Match ``pattern`` at the start of each BASENAME; raise listing the first offenders if any fail."""
    matches, bad = [], []
    for f in files:
        m = pattern.match(f.name)
        if m is None:
            bad.append(f.name)
        matches.append(m)
    if bad:
        raise DataError(
            f"{folder}: {len(bad)} file name(s) do not match {expected}: {examples(bad)}; rename or remove them"
        )
    return matches


def check_images(paths: Sequence[Path], on_bad_image: str, workers: int = 16) -> dict[Path, str]:
    """Open and verify every image with PIL (thread pool: I/O bound). Returns ``{path: reason}`` of bad ones;
    with ``on_bad_image="error"`` raises on the first (in name order) instead."""
    check_mode(on_bad_image)
    if not paths:
        return {}
    from PIL import Image

    def probe(p: Path) -> str | None:
        try:
            with Image.open(p) as im:
                im.verify()
        except Exception as exc:  # PIL raises many types for broken files
            return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:160]
        return None

    n = max(1, min(workers, len(paths)))
    if n == 1:
        reasons = [probe(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="verify-image") as pool:
            reasons = list(pool.map(probe, paths, chunksize=64))
    bad = {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}
    if bad and on_bad_image == "error":
        first = sorted(bad)[0]
        more = f" (and {len(bad) - 1} more unreadable image(s))" if len(bad) > 1 else ""
        raise DataError(
            f"{first}: unreadable or corrupt image ({bad[first]}){more}; replace or remove it, "
            "or pass --on-bad-image skip to leave such files out"
        )
    return bad


def check_splits(df: pd.DataFrame, required: dict[str, str]) -> None:
    """Every split in ``required`` (split -> where its images live, for the message) must have rows."""
    counts = df["split"].value_counts() if len(df) else pd.Series(dtype="int64")
    for split, where in required.items():
        if int(counts.get(split, 0)) == 0:
            raise DataError(
                f"{where}: split {split!r} has no images; expected at least one readable image there"
            )


def check_query_in_gallery(df: pd.DataFrame, where: Callable[[str], str], gallery: str = "gallery") -> None:
    """Every identity of a query split must also appear in the gallery (raw pid)."""
    g = set(df.loc[df["split"] == gallery, "raw_pid"].tolist())
    for q in ("query", "query_same", "query_diff"):
        qp = set(df.loc[df["split"] == q, "raw_pid"].tolist())
        absent = sorted(qp - g)
        if absent:
            raise DataError(
                f"{where(q)}: {len(absent)} {q} identit{'y' if len(absent) == 1 else 'ies'} absent from the "
                f"{gallery}: pid {examples(absent)}; every query identity needs gallery images"
            )


def rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` with POSIX separators (the manifest's image_id)."""
    return path.relative_to(base).as_posix()


def drop_bad(rows: list[dict], bad: dict[Path, str], df_attrs: dict) -> list[dict]:
    """Remove rows whose file is in ``bad`` and record them in ``df_attrs['skipped_images']``."""
    if not bad:
        return rows
    bad_paths = {str(p) for p in bad}
    kept = [r for r in rows if r["path"] not in bad_paths]
    skipped = sorted(r["image_id"] for r in rows if r["path"] in bad_paths)
    df_attrs.setdefault("skipped_images", []).extend(skipped)
    return kept


def finish(rows: list[dict], attrs: dict, source: str) -> pd.DataFrame:
    """``finalize_manifest`` + ``validate_manifest``, carrying ``attrs`` (e.g. skipped images)."""
    from data_manifests.schema import finalize_manifest, validate_manifest

    df = finalize_manifest(rows)
    validate_manifest(df, source)
    df.attrs.update(attrs)
    return df


def build_flat(
    root: str | os.PathLike | None,
    dataset: str,
    dataset_folder: str,
    split_folders: dict[str, str],
    pattern: re.Pattern[str],
    expected: str,
    labels: Callable[[re.Match[str], str], dict],
    on_bad_image: str,
) -> pd.DataFrame:
    """Datasets laid out as ``<dataset_folder>/<split folder>/*.<image>`` with labels in the file names.

    ``split_folders``: folder name -> split; ``labels(match, image_id)`` -> ``raw_pid, camid, clothes_key``.
    """
    check_mode(on_bad_image)
    root = require_root(root, dataset, f"{dataset_folder}/")
    base = locate(root, [dataset_folder, ""], split_folders)
    folders = {
        split: require_dir(base / name, f"{dataset} {name!r} split") for name, split in split_folders.items()
    }
    rows: list[dict] = []
    for split, folder in folders.items():
        files = list_images(folder)
        for f, m in zip(files, parse_names(files, pattern, folder, expected), strict=True):
            image_id = rel(f, base)
            rows.append(
                {
                    "image_id": image_id,
                    "path": str(f),
                    "dataset": dataset,
                    "split": split,
                    **labels(m, image_id),
                }
            )
    attrs: dict = {}
    bad = check_images([Path(r["path"]) for r in rows], on_bad_image)
    rows = drop_bad(rows, bad, attrs)
    raw = pd.DataFrame(rows, columns=["split", "raw_pid"])
    check_splits(raw, {split: str(folder) for split, folder in folders.items()})
    check_query_in_gallery(raw, lambda q: str(folders[q]))
    return finish(rows, attrs, str(base))
