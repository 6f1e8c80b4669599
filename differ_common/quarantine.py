"""Damaged table files (a truncated caption part or feature shard) are moved aside, never read or deleted: to
``<root>/_quarantine/<path below root>`` (the leading ``_`` keeps it out of hive-partitioned reads), with one line
on stderr; the stage that owns them recomputes their rows on its next run."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def parquet_problem(path: str | os.PathLike, columns: list[str] | None = None) -> str | None:
    """Why the Parquet file at ``path`` cannot be read in full (its ``columns``), or None when it can."""
    import pyarrow.parquet as pq

    try:
        pq.read_table(path, columns=columns)
    except FileNotFoundError:
        return None  # removed meanwhile by its owner (compaction): not damaged
    except Exception as exc:  # noqa: BLE001 - every pyarrow/OS error means the same: unreadable
        return (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}"
        )
    return None


def quarantine(path: str | os.PathLike, root: str | os.PathLike, why: str, rerun: str) -> Path | None:
    """Move ``path`` to ``root/_quarantine/<its path below root>`` and say so in one line naming ``rerun`` (the
    command that recomputes its rows); None when another process moved it first."""
    path, root = Path(path), Path(root)
    dest = root / "_quarantine" / path.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    print(f"differ: {path} is damaged ({why}); moved to {dest}, its rows are recomputed by `{rerun}`",
          file=sys.stderr, flush=True)  # fmt: skip
    return dest


def quarantine_damaged(
    files: list[Path], root: str | os.PathLike, rerun: str, columns: list[str] | None = None
) -> list[Path]:
    """The readable ones of ``files``; each damaged one is quarantined (:func:`quarantine`)."""
    good = []
    for f in files:
        why = parquet_problem(f, columns)
        if why is None:
            good.append(f)
        else:
            quarantine(f, root, why, rerun)
    return [f for f in good if f.exists()]
