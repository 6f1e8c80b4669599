"""The decoded-image cache: one ``uint8 [N, 3, H, W]`` file per image list and size, shared by ranks and runs.

``W/cache/images/<name>-<H>x<W>-<key>.npy`` + ``.json`` (docs/design.md §5). The key is a sha256 over the
resize policy (:data:`differ_core.decode.RESIZE_POLICY`), the size and every image's path, byte size and
modification time, in order: a changed, added or re-ordered image gives a new file. The header also lists the
``image_ids`` in row order. The file is written once by one process (under ``W/.locks/cache/``) while the others
wait, and memory-mapped read-only by every training rank, validation, evaluation and feature extraction
(:func:`differ_common.shared_array.open_shared_array`); a batch is a gather of its rows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from differ_common.errors import DataError
from differ_common.workspace import Workspace, slug
from differ_core.decode import RESIZE_POLICY, decode_blocks

KEY_FORMAT = 1
FREE_DISK_MARGIN = 512 << 20  # bytes left free on the cache's disk after writing it
BLOCK_BYTES = 2 << 20  # decoded bytes the writer holds at a time


def image_key(paths: list[str], size: tuple[int, int]) -> str:
    """sha256 hex of the resize policy, ``size`` and each file's (path, bytes, mtime), in order."""
    h = hashlib.sha256(f"{KEY_FORMAT}\0{RESIZE_POLICY}\0{int(size[0])}x{int(size[1])}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise DataError(
                f"{p}: cannot read the image ({exc.strerror}); restore it or rebuild the manifest"
            ) from None
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_bytes(n: int, size: tuple[int, int]) -> int:
    """Bytes of ``n`` decoded images at ``size`` (the data part of the cache file)."""
    return int(n) * 3 * int(size[0]) * int(size[1])


def cache_file(workdir: str | os.PathLike | None, name: str, size: tuple[int, int], key: str) -> Path:
    """Where the cache of one image list lives."""
    return Workspace.at(workdir).image_cache_dir() / f"{slug(name)}-{size[0]}x{size[1]}-{key[:16]}.npy"


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (its nearest existing parent)."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def open_image_cache(
    workdir: str | os.PathLike | None,
    name: str,
    paths: list[str],
    image_ids: list[str],
    size: tuple[int, int],
    threads: int = 4,
    log: Callable[[str], None] = print,
    key: str | None = None,
) -> np.ndarray:
    """The read-only ``uint8 [N, 3, H, W]`` memory map of ``paths`` decoded at ``size`` (built if needed)."""
    from differ_common.shared_array import open_shared_array

    size = (int(size[0]), int(size[1]))
    key = key or image_key(paths, size)
    path = cache_file(workdir, name, size, key)

    def blocks():
        log(f"writing the image cache {path} ({len(paths)} images at {size[0]}x{size[1]}, "
            f"{cache_bytes(len(paths), size) / 2**20:.0f} MiB), once for every process and run")  # fmt: skip
        return decode_blocks(paths, size, threads, block=max(1, BLOCK_BYTES // cache_bytes(1, size)))

    mm, _ = open_shared_array(
        path, key, (len(paths), 3, size[0], size[1]), "uint8", blocks,
        Workspace.at(workdir).cache_lock(path.stem), meta={"image_ids": list(image_ids)}, log=log,
        what="image cache",
    )  # fmt: skip
    return mm
