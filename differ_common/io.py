"""Atomic file writes and a cross-process lock, used by every stage that writes to the workspace."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    A crash leaves at most a ``.tmp-*`` file, never a half-written ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet_atomic(df, target: str | os.PathLike) -> Path:  # df: pandas.DataFrame
    """Write a DataFrame to Parquet atomically (no index)."""
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(target)


def write_table_atomic(table, target: str | os.PathLike) -> Path:  # table: pyarrow.Table
    import pyarrow.parquet as pq

    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return Path(target)


def clean_stale_temps(folder: str | os.PathLike) -> int:
    """Remove ``.tmp-*`` leftovers of a killed writer; returns how many were removed."""
    n = 0
    folder = Path(folder)
    if not folder.exists():
        return 0
    for p in folder.rglob(".tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


@contextlib.contextmanager
def stage_lock(lock_file: str | os.PathLike, timeout: float = -1, what: str = "this stage") -> Iterator[None]:
    """Hold an exclusive inter-process lock; ``timeout`` < 0 waits, otherwise raises TransientError after it."""
    from filelock import FileLock, Timeout

    from differ_common.errors import TransientError

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise TransientError(
            f"{lock_file}: another process is running {what}; wait for it to finish or remove the lock "
            "file if that process is dead"
        ) from exc
    try:
        yield
    finally:
        lock.release()


class HeldLock:
    """An exclusive inter-process lock taken by :func:`hold_lock`; :meth:`release` frees it (once)."""

    def __init__(self, lock: Any, holder_file: Path) -> None:
        self._lock, self._holder_file = lock, holder_file

    def release(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._holder_file.unlink()
        self._lock.release()
        self._lock = None


def lock_holder(lock_file: str | os.PathLike) -> str:
    """Who holds ``lock_file`` as ``host:pid since <UTC time>`` (from its ``.holder`` file), or ``unknown``."""
    try:
        info = json.loads(Path(f"{lock_file}.holder").read_text())
        return f"{info['host']}:{info['pid']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def hold_lock(lock_file: str | os.PathLike, what: str, fix: str) -> HeldLock:
    """Take ``lock_file`` now, or raise TransientError naming its holder: ``<what> is held by host:pid since T;
    <fix>``. The lock dies with its process (``fcntl``), so a killed holder never blocks the next one."""
    import datetime
    import socket

    from filelock import FileLock, Timeout

    from differ_common.errors import TransientError

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TransientError(f"{what} is held by {lock_holder(lock_file)} ({lock_file}); {fix}") from None
    holder = Path(f"{lock_file}.holder")
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    write_json_atomic(holder, {"host": socket.gethostname(), "pid": os.getpid(), "since": since})
    return HeldLock(lock, holder)


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` of this host running (a zombie, killed but not yet reaped, is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
