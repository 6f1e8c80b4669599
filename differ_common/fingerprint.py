"""Content fingerprints: what produced a stage output, used for incremental work and cache keys."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def sha256_text(text: str, n: int | None = None) -> str:
    h = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return h[:n] if n else h


def sha256_json(obj: Any, n: int | None = None) -> str:
    """Hash of a JSON-serialisable object with sorted keys (stable across runs and machines)."""
    return sha256_text(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")), n)


def sha256_file(path: str | os.PathLike, n: int | None = None, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    d = h.hexdigest()
    return d[:n] if n else d


def frame_fingerprint(df, columns: list[str] | None = None, n: int = 16) -> str:  # df: pandas.DataFrame
    """Order-independent hash of selected DataFrame columns."""
    import pandas as pd

    sub = df[columns] if columns else df
    row_hashes = pd.util.hash_pandas_object(sub, index=False).sort_values().to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:n]


def package_versions(*dists: str, missing: str | None = "missing") -> dict[str, str | None]:
    """``{distribution: installed version}``; ``missing`` for one that is not installed."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = missing
    return out
