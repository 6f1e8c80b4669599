"""Custom datasets: a CSV with the header ``path,split,pid,camid,clothes_id`` (extra columns are ignored).

- ``path``: an image file; relative paths are resolved against the CSV's folder. ``image_id`` is the path
  relative to the CSV's folder (``../`` parts allowed for files outside it).
- ``split``: one of train, val, query, gallery, query_same, query_diff; train, gallery and a query split are
  required.
- ``pid``, ``camid``, ``clothes_id``: integers >= 0 (camid 0-based). ``pid`` is kept as ``raw_pid`` and train
  pids are relabelled 0..N-1; ``clothes_id`` is kept as given (``clothes_key`` is its string).

``--root`` is the CSV file itself, or a folder holding exactly one ``*.csv``.
"""

from __future__ import annotations

import csv
import os
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
)
from data_manifests.schema import SPLITS
from differ_common.errors import DataError

NAME = "custom"
COLUMNS = ("path", "split", "pid", "camid", "clothes_id")
INT_COLUMNS = ("pid", "camid", "clothes_id")


def locate_csv(root: str | os.PathLike | None) -> Path:
    """The CSV file named by ``root`` (a file, or a folder holding exactly one ``*.csv``)."""
    if root is None or str(root) == "":
        raise DataError(
            "custom: no CSV given; pass --root path/to/dataset.csv (columns path,split,pid,camid,clothes_id)"
        )
    p = Path(root).expanduser().absolute()
    if p.is_dir():
        csvs = sorted(p.glob("*.csv"))
        if len(csvs) != 1:
            found = f"{len(csvs)} .csv files" if csvs else "no .csv file"
            raise DataError(f"{p}: folder holds {found}; pass --root path/to/the.csv")
        return csvs[0]
    if not p.is_file():
        raise DataError(f"{p}: CSV not found; pass --root path/to/dataset.csv (columns {','.join(COLUMNS)})")
    return p


def _int(value: str, csv_path: Path, line: int, column: str) -> int:
    v = (value or "").strip()
    if not v.isdigit():
        raise DataError(
            f"{csv_path}:{line}: {column}={value!r} is not an integer >= 0; write a whole number in column {column!r}"
        )
    return int(v)


def build(root: str | os.PathLike | None, on_bad_image: str = "error") -> pd.DataFrame:
    """The manifest of a custom CSV dataset (see the module docstring)."""
    check_mode(on_bad_image)
    csv_path = locate_csv(root)
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"{csv_path}:1: header lacks column(s) {missing}; the first line must be "
                    f"{','.join(COLUMNS)}"
                )
            reader.fieldnames = header
            records = [(i + 2, r) for i, r in enumerate(reader)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV ({exc.reason}); save it as UTF-8 CSV") from exc
    rows: list[dict] = []
    not_found: list[str] = []
    first_missing_line = 0
    for line, r in records:
        if all(not (v or "").strip() for v in r.values() if isinstance(v, str)):
            continue  # blank line
        split = (r.get("split") or "").strip()
        if split not in SPLITS:
            raise DataError(f"{csv_path}:{line}: split={split!r} is unknown; use one of {', '.join(SPLITS)}")
        raw_path = (r.get("path") or "").strip()
        if not raw_path:
            raise DataError(
                f"{csv_path}:{line}: empty path; give the image file (relative to the CSV's folder)"
            )
        ids = {c: _int(r.get(c) or "", csv_path, line, c) for c in INT_COLUMNS}
        p = Path(raw_path).expanduser()
        p = p if p.is_absolute() else base / p
        p = Path(os.path.normpath(p))
        if not p.is_file():
            not_found.append(raw_path)
            first_missing_line = first_missing_line or line
            continue
        rows.append(
            {
                "image_id": Path(os.path.relpath(p, base)).as_posix(),
                "path": str(p),
                "dataset": NAME,
                "split": split,
                "raw_pid": ids["pid"],
                "camid": ids["camid"],
                "clothes_id": ids["clothes_id"],
                "clothes_key": str(ids["clothes_id"]),
                "_line": line,
            }
        )
    if not_found:
        raise DataError(
            f"{csv_path}:{first_missing_line}: {len(not_found)} image file(s) not found: {examples(not_found)}; "
            "paths are resolved against the CSV's folder; fix them or remove their lines"
        )
    seen: dict[str, int] = {}
    for r in rows:
        if r["image_id"] in seen:
            raise DataError(
                f"{csv_path}:{r['_line']}: {r['image_id']!r} is listed again (first on line {seen[r['image_id']]}); "
                "list each image once"
            )
        seen[r["image_id"]] = r["_line"]
    for r in rows:
        del r["_line"]
    attrs: dict = {}
    bad = check_images([Path(r["path"]) for r in rows], on_bad_image)
    rows = drop_bad(rows, bad, attrs)
    raw = pd.DataFrame(rows, columns=["split", "raw_pid"])
    present = set(raw["split"])
    where = {s: f"{csv_path} (split {s!r})" for s in SPLITS}
    required = {"train": where["train"], "gallery": where["gallery"]}
    queries = [q for q in ("query", "query_same", "query_diff") if q in present]
    required.update({q: where[q] for q in queries or ["query"]})
    check_splits(raw, required)
    check_query_in_gallery(raw, lambda q: where[q])
    return finish(rows, attrs, str(csv_path))
