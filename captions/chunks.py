"""Chunk planning and claims for the caption writer.

A chunk is a fixed block of the target images (``chunk_size`` consecutive images in manifest order) × the
perspectives still missing for them. Work is claimed per (block, perspective) with files under
``W/.locks/caption-claims/<dataset>/<perspective>-<key hash>/``: ``<block>.claim`` is created with ``O_EXCL``
(one winner, also across machines sharing the filesystem) and holds the owner (host:pid), a token and a lease
renewed while the owner works; ``<block>.done`` is written after that perspective's part is on disk. A claim
whose lease expired, or whose owner is a dead process on this host, is broken (renamed away, one winner) and
taken over. A done marker only counts when it is newer than the plan (times in the shared filesystem's clock):
an older one stands for rows the plan has already read, or for error rows that a rerun must retry.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from differ_common.fingerprint import sha256_json
from differ_common.io import pid_alive

DEFAULT_CHUNK_SIZE = 256  # the most images in one chunk
MIN_CHUNKS = 64  # an unset chunk size gives at least this many chunks (down to 8 images each)


def auto_chunk_size(n_images: int) -> int:
    """The chunk size used when none is given: a function of the target size only, so that every planner of the
    same split agrees on the blocks; small datasets get small chunks, so that several workers share them."""
    return max(8, min(DEFAULT_CHUNK_SIZE, -(-n_images // MIN_CHUNKS)))


DEFAULT_LEASE_S = 900.0


def worker_id() -> str:
    """``host:pid`` of this process: the ``worker`` column and the owner of its claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Chunk:
    """One block of images and, per perspective, the image ids of the block still missing a current row."""

    block: str  # "<index>-<hash of the block's image ids>"
    image_ids: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)


def key_group(perspective: str, key: dict[str, Any]) -> str:
    """The claim folder name of a perspective under one (prompt_id, captioner, model_fingerprint) key."""
    return f"{perspective}-{sha256_json([key.get(k) for k in sorted(key)], 12)}"


def plan_chunks(ids: list[str], missing: dict[str, set[str]], chunk_size: int) -> list[Chunk]:
    """Blocks of ``chunk_size`` consecutive ``ids`` with at least one missing (image, perspective)."""
    chunks = []
    for k, start in enumerate(range(0, len(ids), chunk_size)):
        block = ids[start : start + chunk_size]
        todo = {p: [i for i in block if i in m] for p, m in missing.items()}
        todo = {p: v for p, v in todo.items() if v}
        if todo:
            chunks.append(Chunk(f"{k:07d}-{sha256_json(block, 10)}", block, todo))
    return chunks


class Claims:
    """Claim files of one dataset; ``since`` is the plan time (done markers older than it are ignored)."""

    def __init__(self, root: Path, lease_s: float = DEFAULT_LEASE_S, since: float | None = None) -> None:
        self.root = Path(root)
        self.lease_s = float(lease_s)
        self.owner = worker_id()
        self.token = uuid.uuid4().hex
        self.since = self._fs_now() if since is None else since
        self.host = socket.gethostname()

    def _fs_now(self) -> float:
        """Now, in the clock of the filesystem holding the claims (the clock that stamps done markers)."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.root / f".now-{self.token}"
        stamp.write_text("")
        try:
            return stamp.stat().st_mtime
        finally:
            stamp.unlink(missing_ok=True)

    def _paths(self, group: str, block: str) -> tuple[Path, Path]:
        folder = self.root / group
        return folder / f"{block}.claim", folder / f"{block}.done"

    def is_done(self, group: str, block: str) -> bool:
        done = self._paths(group, block)[1]
        try:
            return done.stat().st_mtime > self.since
        except FileNotFoundError:
            return False

    def _stale(self, claim: Path) -> bool:
        try:
            st = claim.stat()
            info = json.loads(claim.read_text() or "{}")
        except FileNotFoundError:
            return True
        except ValueError:
            info = {}
        if time.time() - st.st_mtime > float(info.get("lease_s", self.lease_s)):
            return True
        host, _, pid = str(info.get("owner", "")).rpartition(":")
        if host == self.host and pid.isdigit() and int(pid) != os.getpid():
            return not pid_alive(int(pid))
        if not info and time.time() - st.st_mtime > 5:  # created, never written (killed in between)
            return True
        return False

    def acquire(self, group: str, block: str) -> str:
        """``"mine"`` (claimed now), ``"done"`` (another finished it after the plan) or ``"held"``."""
        claim, _ = self._paths(group, block)
        if self.is_done(group, block):
            return "done"
        claim.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale(claim):
                    return "held"
                try:  # break it: one rename wins, the losers find the file gone and retry the create
                    os.replace(claim, claim.with_name(f".{claim.name}.broken-{uuid.uuid4().hex[:8]}"))
                except FileNotFoundError:
                    pass
                else:
                    for f in claim.parent.glob(f".{claim.name}.broken-*"):
                        f.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"owner": self.owner, "token": self.token, "lease_s": self.lease_s}, fh)
            if self.is_done(group, block):  # finished between our check and our create
                claim.unlink(missing_ok=True)
                return "done"
            return "mine"
        return "held"

    def sweep_stale(self) -> int:
        """Remove every stale claim (a dead owner's on this host, or an expired lease) under the root, as
        :meth:`acquire` would break it: a killed worker leaves nothing behind once its rows are written.
        Returns how many were removed."""
        n = 0
        for claim in self.root.glob("*/*.claim") if self.root.is_dir() else []:
            if self._stale(claim):
                try:
                    os.replace(claim, claim.with_name(f".{claim.name}.broken-{uuid.uuid4().hex[:8]}"))
                except FileNotFoundError:
                    continue
                for f in claim.parent.glob(f".{claim.name}.broken-*"):
                    f.unlink(missing_ok=True)
                n += 1
        return n

    def holder(self, group: str, block: str) -> str:
        """The owner (host:pid) named in a block's claim file, or "" when there is none."""
        try:
            return str(json.loads(self._paths(group, block)[0].read_text()).get("owner", ""))
        except (FileNotFoundError, ValueError):
            return ""

    def owns(self, group: str, block: str) -> bool:
        """Is the claim still ours (not broken and taken over after our lease expired)?"""
        try:
            return json.loads(self._paths(group, block)[0].read_text()).get("token") == self.token
        except (FileNotFoundError, ValueError):
            return False

    def renew(self, group: str, block: str) -> None:
        """Extend the lease of a claim we hold."""
        try:
            os.utime(self._paths(group, block)[0])
        except FileNotFoundError:
            pass

    def finish(self, group: str, block: str) -> None:
        """Mark done (the part is written), then drop the claim: in that order, so no one redoes it."""
        claim, done = self._paths(group, block)
        done.write_text(self.owner)
        if self.owns(group, block):
            claim.unlink(missing_ok=True)

    def release(self, group: str, block: str) -> None:
        """Drop a claim without finishing (an error): the block is free for the next worker."""
        if self.owns(group, block):
            self._paths(group, block)[0].unlink(missing_ok=True)
