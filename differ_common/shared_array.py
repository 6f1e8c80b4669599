"""An array file written once and memory-mapped read-only by every process that needs it (docs/design.md §5, §10).

A shared array is two files: ``<name>.npy`` (a plain NumPy ``.npy``, C order) and ``<name>.json`` (its header:
``format``, ``key``, ``shape``, ``dtype``, ``file_bytes``, ``writer`` {host, pid}, ``written_at`` and the caller's
``meta``). :func:`open_shared_array` opens it when the header matches what the caller expects; otherwise one
process builds it under a file lock while the others wait, then every process maps the same file with
``np.load(mmap_mode="r")``. The ``.npy`` is written to a ``.tmp-*`` name in row blocks (the writer never holds
the array) and renamed; the header is written last, so a file without a current header (a killed writer, a
truncated copy) is rebuilt, with one line saying why. The partial ``.tmp-*`` file of a killed writer is removed by
the next open of any array of that folder (its target's lock is free), with one line. Readers that mapped an old file keep reading it: the
rename gives the new file a new inode.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1


def header_path(path: str | os.PathLike) -> Path:
    """The JSON header beside a shared ``.npy`` file."""
    return Path(path).with_suffix(".json")


def read_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """The header of ``path`` (the ``.npy``), or None when it is missing or unreadable."""
    try:
        head = json.loads(header_path(path).read_text())
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) else None


def _npy_offset(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(fh)
        if fortran:
            raise ValueError("Fortran order")
        return tuple(shape), np.dtype(dtype), fh.tell()


def problem(
    path: str | os.PathLike, key: str, shape: tuple[int, ...], dtype: str, meta: dict[str, Any] | None = None
) -> str | None:
    """Why ``path`` is not the array described (``"missing"`` when there is no header), or None when it is."""
    path = Path(path)
    head = read_header(path)
    if head is None:
        return "unreadable header" if header_path(path).exists() else "missing"
    want = {"format": FORMAT, "key": key, "shape": [int(s) for s in shape], "dtype": str(np.dtype(dtype))}
    for k, v in want.items():
        if head.get(k) != v:
            return f"header {k} is {head.get(k)!r}, expected {v!r}"
    for k, v in (meta or {}).items():
        if head.get("meta", {}).get(k) != v:
            return f"header meta {k!r} differs from the expected one"
    if not path.is_file():
        return "data file missing"
    size = path.stat().st_size
    if size != head.get("file_bytes"):
        return f"{size} bytes on disk, the header says {head.get('file_bytes')} (truncated or partial)"
    try:
        got_shape, got_dtype, offset = _npy_offset(path)
    except (OSError, ValueError) as exc:
        return f"unreadable .npy header ({exc})"
    if list(got_shape) != want["shape"] or str(got_dtype) != want["dtype"]:
        return f".npy holds {got_dtype}{list(got_shape)}, expected {want['dtype']}{want['shape']}"
    if offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != size:
        return "data size does not match the shape"
    return None


def _write(path: Path, shape: tuple[int, ...], dtype: np.dtype, blocks: Iterable[np.ndarray]) -> int:
    """Write the ``.npy`` from row blocks through a temporary name; returns its size in bytes."""
    from differ_common.io import atomic_path

    rows = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(fh, header)
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.shape[1:] != shape[1:] or rows + len(block) > shape[0]:
                raise ValueError(f"block of shape {block.shape} does not fit an array {shape} at row {rows}")
            fh.write(block.data)
            rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"{rows} rows written for an array of {shape[0]} rows")
        fh.flush()
        os.fsync(fh.fileno())
        size = fh.tell()
    return size


def sweep_dead_temps(path: Path, lock_file: str | os.PathLike, log: Callable[[str], None] = print) -> int:
    """Remove the ``.tmp-*`` files that killed writers left in ``path``'s folder: a temporary file of target
    ``<stem>.npy`` is a leftover when that target's lock (``lock_file`` with ``path``'s stem replaced) is free.
    Returns how many were removed."""
    from filelock import FileLock, Timeout

    lock_file = Path(lock_file)
    if not lock_file.stem.endswith(path.stem):
        return 0
    prefix = lock_file.stem[: len(lock_file.stem) - len(path.stem)]
    removed, freed = 0, 0
    for tmp in path.parent.glob(".tmp-*.npy.*"):
        target_stem = tmp.name[len(".tmp-") :].split(".npy.", 1)[0]
        probe = FileLock(str(lock_file.with_name(f"{prefix}{target_stem}.lock")))
        try:
            probe.acquire(timeout=0)
        except Timeout:
            continue  # its writer is alive
        try:
            with contextlib.suppress(FileNotFoundError):
                size = tmp.stat().st_size
                tmp.unlink()
                removed, freed = removed + 1, freed + size
        finally:
            probe.release()
    if removed:
        log(
            f"removed {removed} partial file(s) ({freed / 2**20:.0f} MiB) left by a killed writer in {path.parent}"
        )
    return removed


def open_shared_array(
    path: str | os.PathLike,
    key: str,
    shape: tuple[int, ...],
    dtype: str,
    blocks: Callable[[], Iterable[np.ndarray]],
    lock_file: str | os.PathLike,
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    what: str = "cache",
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(read-only memory map, header)`` of the array at ``path``, building it first when needed.

    ``blocks()`` yields the rows in order as arrays ``[n, *shape[1:]]``; it is called only by the one process
    that builds the file (under ``lock_file``). ``meta`` is stored in the header and must match on later opens.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if path.parent.is_dir():
        sweep_dead_temps(path, lock_file, log)
    why = problem(path, key, shape, dtype, meta)
    if why is not None:
        lock = FileLock(str(lock_file))
        Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"{what} {path.name}: another process is writing it; waiting")
            lock.acquire()
        try:
            why = problem(path, key, shape, dtype, meta)
            if why is not None:
                if why != "missing":
                    log(f"{what} {path}: {why}; rebuilding it")
                with contextlib.suppress(FileNotFoundError):
                    header_path(path).unlink()  # no reader may pair the old header with the new data
                size = _write(path, shape, np.dtype(dtype), blocks())
                from differ_common.io import write_json_atomic

                write_json_atomic(header_path(path), {
                    "format": FORMAT, "key": key, "shape": list(shape), "dtype": str(np.dtype(dtype)),
                    "file_bytes": size, "writer": {"host": socket.gethostname(), "pid": os.getpid()},
                    "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "meta": meta or {},
                })  # fmt: skip
        finally:
            lock.release()
    head = read_header(path)
    assert head is not None
    return np.load(path, mmap_mode="r"), head
