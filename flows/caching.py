"""Task cache policies and the on-disk check that a cached stage's output still exists.

A stage task's cache key is Prefect's ``INPUTS - <ignored parameters> + TASK_SOURCE``: the hash of the
parameters it reads (fingerprints of its upstream files and models, model package versions included) and of
the task's own source, so a result is found under the same key in every run and an edited task body
recomputes. Whether the output is still on disk is checked before the task is called (``output_present``):
when it is gone, the caller refreshes the cache, so a deleted output (or a partial workspace) is recomputed
instead of returning a stale cached result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy, Inputs


def stage_cache_policy(ignore: tuple[str, ...] = ()) -> CachePolicy:
    """``INPUTS - ignore + TASK_SOURCE``; ``ignore`` names parameters that do not change the output
    (a batch size, the path of a prompts file whose content is already in the key as a prompt id)."""
    return Inputs(exclude=list(ignore)) + TASK_SOURCE


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
