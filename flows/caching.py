"""Task cache keys derived from the fingerprints of exactly the inputs a stage reads.

A key is only offered while the stage's output is still on disk, so deleting an output (or a partial
workspace) makes the task run again instead of returning a stale cached result.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from differ_core.fingerprint import sha256_json

CACHE_VERSION = "1"


def make_cache_key_fn(
    stage: str, output_ok: Callable[[dict[str, Any]], bool], ignore: tuple[str, ...] = ()
) -> Callable[..., str]:
    """``cache_key_fn`` for Prefect: hash of (stage, parameters) when ``output_ok(parameters)``, else a nonce.

    ``ignore`` names parameters that do not change the output (a batch size, the path of a prompts file
    whose content is already in the key as a prompt id).
    """

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        try:
            ok = output_ok(parameters)
        except Exception:  # an unreadable output is a missing output
            ok = False
        if not ok:
            return f"{stage}-miss-{uuid.uuid4().hex}"
        keyed = {k: v for k, v in parameters.items() if k not in ignore}
        return f"{stage}-{sha256_json({'v': CACHE_VERSION, 'stage': stage, 'params': keyed}, 32)}"

    key_fn.__name__ = f"{stage}_cache_key"
    return key_fn


def result_storage_for(workdir: str | Path) -> Path:
    """Where Prefect persists task results for this workspace (kept beside the data it describes)."""
    p = Path(workdir) / ".prefect-results"
    p.mkdir(parents=True, exist_ok=True)
    return p
