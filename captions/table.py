"""The caption tables: part schema, reading the current rows, and per-perspective status.

``W/captions/<ds>/perspective=<p>/part-*.parquet`` hold every row ever generated (append-only). The current
rows of a perspective are those whose ``prompt_id``, ``captioner`` and ``model_fingerprint`` match
``_current.json`` (written by the caption writer) and whose ``image_sha`` is the manifest's (the image's bytes:
a row of other pixels under the same name is stale; rows written before the column existed, or of a manifest
without it, are taken as they are); error rows never count, and the newest row wins when an image has several.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from differ_common.errors import DataError
from differ_common.perspectives import PERSPECTIVES
from differ_common.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# docs/design.md §5 caption columns, plus ``flag`` ("" | "empty" | "echo" | "error"), ``error`` (the reason),
# and where the row came from: ``worker`` (host:pid) and ``device``
COLUMNS: tuple[str, ...] = (
    "image_id",
    "perspective",
    "prompt_id",
    "prompt",
    "caption",
    "captioner",
    "model_fingerprint",
    "created_at",
    "seconds",
    "flag",
    "error",
    "worker",
    "device",
    "image_sha",
)
NEW_COLUMNS = ("worker", "device", "image_sha")  # absent from parts written before they existed: read as ""
KEY_COLUMNS = ("prompt_id", "captioner", "model_fingerprint")


def part_schema() -> pa.Schema:
    """Arrow schema of a caption part; ``perspective`` is dictionary-encoded like the hive partition key."""
    import pyarrow as pa

    return pa.schema(
        [
            ("image_id", pa.string()),
            ("perspective", pa.dictionary(pa.int32(), pa.string())),
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("caption", pa.string()),
            ("captioner", pa.string()),
            ("model_fingerprint", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("seconds", pa.float64()),
            ("flag", pa.string()),
            ("error", pa.string()),
            ("worker", pa.string()),  # host:pid of the process that generated the row
            ("device", pa.string()),  # cpu, cuda:3 ... (physical GPU ids)
            ("image_sha", pa.string()),  # the manifest's image_sha of the captioned image ("" = unknown)
        ]
    )


def part_files(folder: str | os.PathLike) -> list[Path]:
    """Finished parts of one perspective folder, oldest name first (temp files excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet") if not p.name.startswith("."))


def _read_table(files: list[Path], cols: list[str]) -> pa.Table | None:
    import pyarrow.dataset as pads

    if not files:
        return None
    return pads.dataset([str(f) for f in files], format="parquet", schema=part_schema()).to_table(
        columns=cols
    )


def read_parts(folder: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Every row of a perspective folder (``perspective`` as a plain string column)."""
    import pandas as pd

    files = part_files(folder)
    cols = list(columns or COLUMNS)
    try:
        table = _read_table(files, cols)
    except Exception:  # noqa: BLE001 - a damaged part: move it aside (its rows are recaptioned), read the rest
        from differ_common.quarantine import quarantine_damaged

        folder = Path(folder)
        rerun = (
            f"differ caption --dataset {folder.parent.name} --perspectives {folder.name.split('=', 1)[-1]}"
        )
        files = quarantine_damaged(files, folder.parent, rerun)
        table = _read_table(files, cols)
    if table is None:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in cols})
    df = table.to_pandas()
    for c in NEW_COLUMNS:
        if c in df.columns:
            df[c] = df[c].fillna("")
    if "perspective" in df.columns:
        df["perspective"] = df["perspective"].astype("str")
    return df


def read_current_json(
    workdir: str | os.PathLike | None, dataset: str, set_aside: bool = False
) -> dict[str, Any]:
    """``_current.json`` (``{}`` when absent). A damaged one is a DataError naming the fix, or with ``set_aside``
    (the caption writer, which records its perspectives again) moved to ``_quarantine/`` with one line."""
    path = Workspace.at(workdir).captions_current(dataset)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return data
    except ValueError as exc:
        why = str(exc).splitlines()[0] if str(exc) else "not JSON"
        if set_aside:
            from differ_common.quarantine import quarantine

            quarantine(path, path.parent, why, f"differ caption --dataset {dataset}")
            return {}
        raise DataError(
            f"{path}: damaged ({why}); `differ caption --dataset {dataset} --perspectives <those you use>` sets it "
            "aside and records them again from the caption parts, which are kept (nothing is captioned twice)"
        ) from None


def image_shas(manifest: pd.DataFrame) -> dict[str, str]:
    """``{image_id: image_sha}`` of a manifest's rows that record one (empty for a manifest without the column)."""
    if "image_sha" not in manifest.columns:
        return {}
    known = manifest["image_sha"].notna()
    return dict(zip(manifest.loc[known, "image_id"], manifest.loc[known, "image_sha"], strict=True))


def current_rows(rows: pd.DataFrame, key: dict[str, Any], shas: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows matching ``key`` (prompt_id, captioner[, model_fingerprint]), no error rows, newest per image; with
    ``shas`` (:func:`image_shas`) a row recorded for other bytes of its image is not current."""
    mask = rows["flag"].ne("error")
    for k in KEY_COLUMNS:
        if key.get(k) is not None:
            mask &= rows[k].eq(key[k])
    if shas and "image_sha" in rows.columns:
        expected = rows["image_id"].map(shas).fillna("")
        mask &= rows["image_sha"].eq("") | expected.eq("") | rows["image_sha"].eq(expected)
    sub = rows[mask]
    if "created_at" in sub.columns:
        sub = sub.sort_values("created_at", kind="stable")
    return sub.drop_duplicates("image_id", keep="last")


def read_current_captions(
    workdir: str | os.PathLike | None,
    dataset: str,
    perspectives: list[str] | None = None,
    split: str | list[str] | None = None,
) -> pd.DataFrame:
    """One row per (image_id, perspective): the current captions, in perspective then manifest order.

    ``perspectives`` None = every perspective the caption writer has recorded; ``split`` filters by the
    manifest's split (a name or a list). Images no longer in the manifest are left out.
    """
    import pandas as pd

    from data_manifests.schema import load_manifest

    ws = Workspace.at(workdir)
    current = read_current_json(ws.root, dataset)
    if not current:
        raise DataError(
            f"{ws.captions_current(dataset)}: no captions recorded; run `differ caption --dataset {dataset}` first"
        )
    wanted = list(perspectives) if perspectives is not None else [p for p in PERSPECTIVES if p in current]
    lacking = [p for p in wanted if p not in current]
    if lacking:
        raise DataError(
            f"{ws.captions_current(dataset)}: no current captions for {lacking}; run "
            f"`differ caption --dataset {dataset} --perspectives {','.join(lacking)}` first"
        )
    manifest = load_manifest(ws.root, dataset)
    if split is not None:
        splits = [split] if isinstance(split, str) else list(split)
        manifest = manifest[manifest["split"].isin(splits)]
    order = pd.Index(manifest["image_id"].astype(object))
    frames = []
    for p in wanted:
        cur = current_rows(read_parts(ws.perspective_dir(dataset, p)), current[p], image_shas(manifest))
        pos = order.get_indexer(cur["image_id"].astype(object))  # -1: no longer in the manifest
        cur = cur[pos >= 0].copy()
        cur["_order"] = pos[pos >= 0]
        frames.append(cur.sort_values("_order").drop(columns="_order"))
    out = pd.concat(frames, ignore_index=True) if frames else read_parts(ws.captions_dir(dataset) / "none")
    return out.reset_index(drop=True)


def current_fingerprint(rows: pd.DataFrame) -> str:
    """Order-independent hash of a perspective's current (image_id, caption) pairs."""
    from differ_common.fingerprint import frame_fingerprint

    if rows.empty:
        return "empty"
    return frame_fingerprint(rows[["image_id", "caption"]].astype(str).reset_index(drop=True))


def caption_status(
    workdir: str | os.PathLike | None,
    dataset: str,
    prompts: str | os.PathLike | None = None,
    split: str = "train",
    targets: str = "auto",
    every_k: int = 8,
) -> pd.DataFrame:
    """Per perspective: rows current / stale (other prompt, model or image bytes) / missing among ``split``'s caption
    targets (``captions.targets``), flagged and error rows, the recorded prompt_id and whether the prompts file
    (``prompts``, default packaged) changed it."""
    import pandas as pd

    from captions.prompts import load_prompts
    from captions.targets import caption_target_rows
    from data_manifests.schema import load_manifest

    ws = Workspace.at(workdir)
    manifest = load_manifest(ws.root, dataset)
    rows_of_split = manifest.loc[manifest["split"] == split]
    target = set(caption_target_rows(rows_of_split, targets, every_k, dataset)["image_id"])
    shas = image_shas(manifest)
    current = read_current_json(ws.root, dataset)
    specs = load_prompts(prompts)
    records = []
    for p in PERSPECTIVES:
        cols = ["image_id", *KEY_COLUMNS, "created_at", "flag", "image_sha"]
        rows = read_parts(ws.perspective_dir(dataset, p), cols)
        rows = rows[rows["image_id"].isin(target)]
        entry = current.get(p)
        cur = current_rows(rows, entry, shas) if entry else rows.iloc[0:0]
        have = set(cur["image_id"])
        others = rows[~rows["image_id"].isin(have) & rows["flag"].ne("error")]
        records.append(
            {
                "perspective": p,
                "current": len(have),
                "stale": int(others["image_id"].nunique()),
                "missing": len(target - have),
                "flagged": int(cur["flag"].isin(["empty", "echo"]).sum()),
                "errors": int(rows.loc[rows["flag"].eq("error"), "image_id"].nunique()),
                "prompt_id": entry["prompt_id"] if entry else None,
                "prompt_changed": bool(entry) and entry["prompt_id"] != specs[p].prompt_id,
                "captioner": entry["captioner"] if entry else None,
            }
        )
    return pd.DataFrame.from_records(records)
