"""Per-split statistics of a manifest, as the reference codebases print them when a dataset loads."""

from __future__ import annotations

from typing import Any

import pandas as pd

from data_manifests.schema import SPLITS

SUMMARY_COLUMNS = ("ids", "images", "outfits", "cameras", "tracklets")


def split_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per split present (in the manifest's split order) plus ``total``.

    Columns: ``ids`` (distinct raw pids), ``images`` (rows), ``outfits`` (distinct clothes keys), ``cameras``
    (distinct camids), ``tracklets`` (distinct track_ids; 0 for image datasets). Index: the split name.
    """
    order = [s for s in SPLITS if s in set(df["split"])] + sorted(set(df["split"]) - set(SPLITS))
    rows = {split: _stats(df[df["split"] == split]) for split in order}
    rows["total"] = _stats(df)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS)).astype("int64")
    out.index.name = "split"
    return out


def _stats(part: pd.DataFrame) -> dict[str, int]:
    return {
        "ids": int(part["raw_pid"].nunique()),
        "images": len(part),
        "outfits": int(part["clothes_key"].nunique()),
        "cameras": int(part["camid"].nunique()),
        "tracklets": int(part["track_id"].dropna().nunique()),
    }


def print_split_summary(df: pd.DataFrame, title: str | None = None, console: Any = None) -> pd.DataFrame:
    """Print :func:`split_summary` as a table (rich) and return it. Video datasets also show tracklets."""
    from rich.console import Console
    from rich.table import Table

    summary = split_summary(df)
    video = bool(summary.loc["total", "tracklets"])
    cols = [c for c in SUMMARY_COLUMNS if video or c != "tracklets"]
    dataset = str(df["dataset"].iloc[0]) if len(df) else "?"
    table = Table(title=title or f"{dataset} statistics", title_justify="left")
    table.add_column("subset")
    for c in cols:
        table.add_column(f"# {c}", justify="right")
    for split, row in summary.iterrows():
        style = "bold" if split == "total" else None
        table.add_row(
            str(split),
            *(f"{int(row[c]):,}" for c in cols),
            style=style,
            end_section=split != "total" and split == summary.index[-2],
        )
    (console or Console()).print(table)
    return summary
