"""Task cache keys derived from the fingerprints of exactly the inputs a stage reads.

The key is a hash of the stage's parameters, so a result is stored and found under the same key in every run.
Whether the output is still on disk is checked before the task is called (``output_present``): when it is
gone, the caller refreshes the cache, so a deleted output (or a partial workspace) is recomputed instead of
returning a stale cached result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from differ_common.fingerprint import sha256_json

CACHE_VERSION = "2"


def make_cache_key_fn(stage: str, ignore: tuple[str, ...] = ()) -> Callable[..., str]:
    """``cache_key_fn`` for Prefect: hash of (stage, parameters).

    ``ignore`` names parameters that do not change the output (a batch size, the path of a prompts file
    whose content is already in the key as a prompt id).
    """

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        keyed = {k: v for k, v in parameters.items() if k not in ignore}
        return f"{stage}-{sha256_json({'v': CACHE_VERSION, 'stage': stage, 'params': keyed}, 32)}"

    key_fn.__name__ = f"{stage}_cache_key"
    return key_fn


def output_present(output_ok: Callable[[dict[str, Any]], bool], parameters: dict[str, Any]) -> bool:
    """``output_ok(parameters)``; an unreadable output counts as missing."""
    try:
        return bool(output_ok(parameters))
    except Exception:  # noqa: BLE001 - a corrupt output is a missing output
        return False


def result_storage_for(workdir: str | Path) -> Path:
    """Where Prefect persists task results for this workspace (kept beside the data it describes)."""
    p = Path(workdir) / ".prefect-results"
    p.mkdir(parents=True, exist_ok=True)
    return p
