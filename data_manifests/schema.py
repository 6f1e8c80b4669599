"""The manifest table of docs/design.md §5: columns, label finalisation, validation, atomic write and load."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from differ_common.errors import DataError

# column -> pandas dtype (strings are pandas' ``str`` dtype; track_id and frame are null for image datasets)
MANIFEST_COLUMNS: dict[str, str] = {
    "image_id": "str",  # path relative to the dataset folder, POSIX separators: the key everywhere
    "path": "str",  # absolute path of the image file
    "dataset": "str",
    "split": "str",  # SPLITS
    "pid": "int64",  # train (and val) pids relabelled 0..N-1 by sorted raw pid; other splits: raw pid
    "raw_pid": "int64",  # identity as written in the dataset
    "camid": "int64",  # 0-based
    "clothes_id": "int64",  # integer code of clothes_key over the whole dataset (sorted keys)
    "clothes_key": "str",  # outfit key as parsed (e.g. LTCC ``12_3``)
    "track_id": "str",  # video: tracklet path (e.g. CCVID ``session1/001_01``); null for images
    "frame": "Int64",  # video: 0-based frame index inside the tracklet (sorted file names); null for images
    "image_sha": "str",  # sha256[:16] of the image file's bytes (data_manifests.content); null: not recorded
}
# columns a manifest written before they existed lacks: read as null
OPTIONAL_COLUMNS: tuple[str, ...] = ("image_sha",)

SPLITS: tuple[str, ...] = ("train", "val", "query", "gallery", "query_same", "query_diff")
QUERY_SPLITS: tuple[str, ...] = ("query", "query_same", "query_diff")
_INT_COLUMNS = ("pid", "raw_pid", "camid", "clothes_id")
_STR_COLUMNS = ("image_id", "path", "dataset", "split", "clothes_key")
_SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}


def _not_run_hint(dataset: str | None) -> str:
    ds = dataset or "DATASET"
    return f"run `differ manifest {ds} --root R` first"


def finalize_manifest(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Turn parsed rows into a manifest with the §4 columns and dtypes.

    Each row needs ``image_id, path, dataset, split, raw_pid, camid, clothes_key`` (``track_id`` and
    ``frame`` for video). ``pid``: train pids relabelled 0..N-1 by sorted raw pid; ``val`` rows use the same
    mapping when all their identities are train identities (raw pid otherwise); query/gallery rows keep the
    raw pid (as CAL and DIFFER do). ``clothes_id``: kept when every row provides one (custom CSV), otherwise
    the rank of ``clothes_key`` among the dataset's sorted distinct keys. Rows are ordered by split, then
    ``image_id``.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        raise DataError("manifest has no rows: the dataset folder holds no images in the expected layout")
    for col in ("track_id", "frame"):
        if col not in df.columns:
            df[col] = None
    df["raw_pid"] = df["raw_pid"].astype("int64")
    train_pids = sorted(set(df.loc[df["split"] == "train", "raw_pid"].tolist()))
    relabel = {raw: i for i, raw in enumerate(train_pids)}
    val_mask = df["split"] == "val"
    val_in_train = bool(val_mask.any()) and set(df.loc[val_mask, "raw_pid"]).issubset(relabel)
    relabel_mask = (df["split"] == "train") | (val_mask & val_in_train)
    df["pid"] = df["raw_pid"]
    df.loc[relabel_mask, "pid"] = df.loc[relabel_mask, "raw_pid"].map(relabel)
    df["clothes_key"] = df["clothes_key"].astype(str)
    if "clothes_id" not in df.columns or df["clothes_id"].isna().any():
        keys = sorted(df["clothes_key"].unique().tolist())
        codes = {k: i for i, k in enumerate(keys)}
        df["clothes_id"] = df["clothes_key"].map(codes)
    df["_rank"] = df["split"].map(_SPLIT_RANK).fillna(len(SPLITS))
    df["_frame"] = pd.to_numeric(df["frame"], errors="coerce").fillna(-1)
    df = df.sort_values(["_rank", "image_id", "_frame"], kind="stable").reset_index(drop=True)
    return coerce_manifest(df)


def coerce_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Exactly the §4 columns, in order, with their dtypes (no checks beyond the casts)."""
    out = pd.DataFrame(index=df.index)
    for col, dtype in MANIFEST_COLUMNS.items():
        s = df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index)
        if dtype == "str":
            s = pd.Series([None if _isnull(v) else str(v) for v in s], index=df.index, dtype="str")
        elif dtype == "Int64":
            s = pd.array(pd.to_numeric(s, errors="raise"), dtype="Int64")
        else:
            s = s.astype(dtype)
        out[col] = s
    return out.reset_index(drop=True)


def _isnull(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA


def _fail(source: str, what: str) -> DataError:
    return DataError(f"{source}: {what}")


def validate_manifest(df: pd.DataFrame, source: str | os.PathLike = "manifest") -> pd.DataFrame:
    """Check ``df`` against the §4 contract; raise DataError naming ``source`` at the first problem.

    Checks: columns and dtypes, no nulls outside track_id/frame, unique image_id, known split names,
    non-negative ids, train pids 0..N-1, one clothes_id per clothes_key, track_id and frame set together.
    """
    source = str(source)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise _fail(source, f"missing manifest column(s) {missing}; rebuild it with `differ manifest`")
    if df.empty:
        raise _fail(source, "manifest has no rows; rebuild it with `differ manifest`")
    for col in _INT_COLUMNS:
        if not pd.api.types.is_integer_dtype(df[col]) or df[col].isna().any():
            raise _fail(source, f"column {col!r} must be integers without nulls (dtype {df[col].dtype})")
        if (df[col] < 0).any():
            bad = df.loc[df[col] < 0, "image_id"].head(3).tolist()
            raise _fail(source, f"column {col!r} has negative values (e.g. rows {bad}); ids must be >= 0")
    for col in _STR_COLUMNS:
        if df[col].isna().any() or not df[col].map(lambda v: isinstance(v, str)).all():
            raise _fail(source, f"column {col!r} must be non-null strings")
    dup = df["image_id"][df["image_id"].duplicated()]
    if len(dup):
        raise _fail(
            source, f"{len(dup)} duplicated image_id(s), e.g. {dup.head(3).tolist()}; each image once"
        )
    bad_splits = sorted(set(df["split"]) - set(SPLITS))
    if bad_splits:
        raise _fail(source, f"unknown split name(s) {bad_splits}; expected one of {list(SPLITS)}")
    train = df.loc[df["split"] == "train", "pid"]
    if len(train) and sorted(train.unique().tolist()) != list(range(train.nunique())):
        raise _fail(source, "train pids must be relabelled 0..N-1; rebuild it with `differ manifest`")
    per_key = df.groupby("clothes_key")["clothes_id"].nunique()
    per_id = df.groupby("clothes_id")["clothes_key"].nunique()
    if (per_key > 1).any() or (per_id > 1).any():
        raise _fail(source, "clothes_id and clothes_key must map one to one")
    has_track = df["track_id"].notna()
    if not has_track.equals(df["frame"].notna()):
        raise _fail(source, "track_id and frame must be both set (video) or both null (images)")
    return df


def write_manifest(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Validate ``df`` and write it to ``out`` atomically (nothing is written if validation fails)."""
    from differ_common.io import write_parquet_atomic

    out = Path(out)
    validate_manifest(df, out)
    return write_parquet_atomic(coerce_manifest(df), out)


def load_manifest(path_or_workdir: str | os.PathLike, dataset: str | None = None) -> pd.DataFrame:
    """Read a manifest: a Parquet file, or (with ``dataset``) ``W/manifests/<dataset>.parquet`` of a workspace."""
    p = Path(path_or_workdir)
    if dataset is not None and not p.suffix == ".parquet":
        from differ_common.workspace import Workspace

        p = Workspace.at(p).manifest(dataset)
    if p.is_dir():
        raise DataError(f"{p}: is a folder; pass a manifest .parquet file, or a workspace with dataset=...")
    if not p.exists():
        ds = dataset or (p.stem if p.parent.name == "manifests" else None)
        raise DataError(f"{p}: manifest not found; {_not_run_hint(ds)}")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # corrupt or not Parquet
        raise DataError(f"{p}: cannot read the manifest ({exc}); rebuild it with `differ manifest`") from exc
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), index=df.index, dtype="str")
    return validate_manifest(df, p)
