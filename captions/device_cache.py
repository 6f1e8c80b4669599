"""One model per (process, device): the device locks and captioner objects that caption tasks in one process share.

Threads of one process that caption on the same device take turns (``device_lock``, re-entrant), so a model never
runs two ``generate`` calls at once and a batch size learnt from an out-of-memory error holds for its device;
threads on different devices run side by side. Every process (a Dask worker, say) holds its own models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captions.backends import Captioner

_GUARD = threading.Lock()
_LOCKS: dict[str, threading.RLock] = {}
_CAPTIONERS: dict[tuple[str, Hashable], Captioner] = {}


def device_lock(device: str) -> threading.RLock:
    """The lock of ``device`` (``cpu``, ``cuda:1``) in this process; the same object for every caller."""
    with _GUARD:
        return _LOCKS.setdefault(device, threading.RLock())


def in_process_device(label: str) -> str | None:
    """The torch device of a device label in this process: ``auto`` → None (auto-detect), ``cuda:0+1`` →
    ``cuda:0`` (the other GPUs of a multi-GPU label belong to the engine's tensor parallelism)."""
    if label == "auto":
        return None
    if label.startswith("cuda:"):
        return "cuda:" + label.removeprefix("cuda:").split("+")[0]
    return label


def cached_captioner(device: str, key: Hashable, build: Callable[[], Captioner]) -> Captioner:
    """The captioner built by ``build`` for ``key`` on ``device``, built once per process; another key on the
    same device replaces it (one model per device). Call it under ``device_lock(device)``."""
    with _GUARD:
        cap = _CAPTIONERS.get((device, key))
    if cap is not None:
        return cap
    cap = build()
    with _GUARD:
        for k in [k for k in _CAPTIONERS if k[0] == device]:
            del _CAPTIONERS[k]
        _CAPTIONERS[(device, key)] = cap
    return cap
