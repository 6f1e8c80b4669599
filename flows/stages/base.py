"""What every stage task shares: the task decorator (cache key, retries, clean failures), where results are kept,
the output check before a cache hit is offered, and the GPU tags.

A stage task's cache key is Prefect's ``INPUTS - <ignored parameters>`` plus ``StageCode(<its modules>)``: the hash of
the parameters it reads (fingerprints of its upstream files and models, model package versions included) and of the
project source it runs (``flows.stages.code``), so a result is found under the same key in every run and an edit to
that source recomputes it. Whether the output is still on disk is checked before the task is called
(``output_present``): when it is gone, the caller refreshes the cache, so a deleted output (or a partial workspace)
is recomputed instead of returning a stale cached result.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import CachePolicy, Inputs
from prefect.states import Failed

from differ_common.errors import DifferError, StageFailed, TransientError
from differ_common.fingerprint import sha256_file
from flows.config import PipelineConfig
from flows.stages.code import StageCode

# carried by task runs that load a model onto a GPU; `differ serve` limits how many run at once
GPU_TAG = "gpu"


class StageStop(Exception):
    """A stage failed with its own clear message; the flow ends Failed with that message."""


def result_of(stage: str, state: Any) -> dict[str, Any]:
    """The task's result, or StageStop carrying the stage's one-line message (no traceback wall)."""
    if state.is_failed() or state.is_crashed() or state.is_cancelled():
        raise StageStop(state.message or f"{stage} failed")
    return state.result()


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a ``TransientError`` (held lock, busy device), a ``TimeoutError``, or a batch's
    ``torch.OutOfMemoryError``; every other error (a ``DifferError`` included) is permanent."""
    if isinstance(exc, TransientError | TimeoutError):
        return True
    torch = sys.modules.get("torch")  # an out-of-memory error exists only once torch is imported
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


def _retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry exactly the transient failures."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


def stage_cache_policy(code: tuple[str, ...], ignore: tuple[str, ...] = ()) -> CachePolicy:
    """``INPUTS - ignore + StageCode(code)``; ``ignore`` names parameters that do not change the output (a batch
    size, the path of a prompts file whose content is already in the key as a prompt id); ``code``: the modules
    the task runs (``flows.stages.code``)."""
    return Inputs(exclude=list(ignore)) + StageCode(entries=tuple(code))


def stage_task(stage: str, code: tuple[str, ...], ignore: tuple[str, ...] = (), **task_kwargs: Any):
    """Decorator: a cached, retried Prefect task whose permanent DifferError becomes a clean Failed state.
    ``code``: the entry modules it runs (its own module is added); ``task_kwargs`` add to or replace the
    defaults, e.g. ``cache_policy=NO_CACHE``."""

    def wrap(fn: Callable[..., dict[str, Any]]):
        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any):
            try:
                return fn(*args, **kwargs)
            except TransientError:
                raise  # an exception, so that Prefect's retry condition sees it
            except DifferError as exc:
                msg = f"{stage}: {exc}"
                get_run_logger().error(msg)
                return Failed(message=msg, data=StageFailed(msg))

        options: dict[str, Any] = {
            "name": f"differ-{stage}",
            "cache_policy": stage_cache_policy((fn.__module__, *code), ignore),
            "persist_result": True,
            "result_serializer": "json",
            "retries": 2,
            "retry_delay_seconds": [5, 30],
            "retry_condition_fn": _retry_condition,
        }
        return task(**{**options, **task_kwargs})(body)

    return wrap


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


def file_fingerprint(path: str | Path) -> str:
    return sha256_file(path, 16) if Path(path).exists() else "missing"


def uses_gpu(cfg: PipelineConfig, stage: str) -> bool:
    """Will ``stage`` load a model onto a CUDA device? Captioning and summarizing only with a model backend
    (not ``attributes`` / ``extractive``); encode, train and evaluate always load one. The device is
    ``cfg.device`` for captioning, else what auto-detection picks (a visible CUDA GPU)."""
    if stage in ("manifest",):
        return False
    if stage == "caption" and cfg.captioner == "attributes":
        return False
    if stage == "summarize" and cfg.summarizer == "extractive":
        return False
    if stage == "caption" and cfg.device:
        return cfg.device.startswith("cuda")
    import torch

    return bool(torch.cuda.is_available())


def gpu_tags(device_ids: list[str]) -> set[str]:
    """``gpu`` plus one ``gpu:<id>`` per GPU a task occupies (tag concurrency limits: docs/gpu_recipe.md §5)."""
    return {GPU_TAG, *(f"{GPU_TAG}:{i}" for i in device_ids)}


def stage_tags(cfg: PipelineConfig, stage: str) -> set[str]:
    """The tags of a stage's task: ``gpu_tags`` of the GPUs it loads a model onto (``uses_gpu``): the first
    GPU (auto-detection picks ``cuda``), training with ``processes`` N the first N. The caption stage's own
    tasks (plan, finish) load no model; its chunk tasks carry their device's tags (``caption.chunk_tags``)."""
    if stage == "caption" or not uses_gpu(cfg, stage):
        return set()
    n = cfg.processes if stage == "train" else 1
    return gpu_tags([str(k) for k in range(n)])
