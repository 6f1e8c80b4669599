"""What an image is: the hash of its file's bytes, recorded in the manifest's ``image_sha`` column so that rows
derived from an image (captions) go stale when its pixels change under the same name (docs/design.md §5)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

SHA_CHARS = 16  # 64 bits: enough to tell two versions of one image apart


def file_sha(path: str | os.PathLike) -> str | None:
    """sha256[:16] of the file's bytes; None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()[:SHA_CHARS]
    except OSError:
        return None


def content_hashes(paths: Sequence[str], threads: int = 4) -> list[str | None]:
    """:func:`file_sha` of every path, in order (a few threads: the work is reading files)."""
    if len(paths) < 64:
        return [file_sha(p) for p in paths]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(file_sha, paths, chunksize=64))
