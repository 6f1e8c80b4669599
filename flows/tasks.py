"""Prefect tasks: one per stage (the caption stage: a plan, one task per chunk, one finishing task per
perspective), each a thin call into its package, returning paths and fingerprints.

Every task takes only strings, numbers and small dicts (the fingerprints of what it reads; a caption chunk's
image ids), so its cache key is exactly its inputs plus its own source (``flows.caching.stage_cache_policy``). A stage's own
``DifferError`` becomes a Failed state with that one-line message (no traceback wall); transient errors are
retried, chosen by type (``is_transient``), never by message text.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from differ_common.errors import DifferError, StageFailed, TransientError
from differ_common.fingerprint import sha256_file
from differ_common.workspace import Workspace
from flows.caching import stage_cache_policy
from flows.run_logging import ProgressLog
from flows.stage_fingerprints import features_fingerprint

# carried by task runs that load a model onto a GPU; `differ serve` limits how many run at once
GPU_TAG = "gpu"


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


def stage_task(stage: str, ignore: tuple[str, ...] = (), **task_kwargs: Any):
    """Decorator: a cached, retried Prefect task whose permanent DifferError becomes a clean Failed state
    (``task_kwargs`` add to or replace the defaults, e.g. ``cache_policy=NO_CACHE``)."""

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
            "cache_policy": stage_cache_policy(ignore),
            "persist_result": True,
            "result_serializer": "json",
            "retries": 2,
            "retry_delay_seconds": [5, 30],
            "retry_condition_fn": _retry_condition,
        }
        return task(**{**options, **task_kwargs})(body)

    return wrap


# ---------------------------------------------------------------- manifest
@stage_task("manifest")
def manifest_task(workdir: str, dataset: str, root: str | None, options: dict, root_signature: str) -> dict:
    """Build and write ``W/manifests/<dataset>.parquet`` (SynthCC: generate the images first)."""
    from flows.stage_calls import build_and_write_manifest

    path = build_and_write_manifest(workdir, dataset, root, options)
    return {"path": str(path), "fingerprint": sha256_file(path, 16)}


# ---------------------------------------------------------------- captions
# The caption stage is three kinds of task (flows/caption_stage.py): one plan, one task per chunk of images ×
# pending perspectives (mapped over the task runner; never cached: the chunk claims decide what is left), and one
# finishing task per perspective, cached by that perspective's inputs (so downstream caching stays per perspective).
@stage_task("caption", cache_policy=NO_CACHE, persist_result=False, task_run_name="caption-plan")
def caption_plan_task(
    workdir: str,
    dataset: str,
    perspectives: list[str],
    captioner: str,
    prompts: str | None,
    split: str,
    noise: float,
    trust_remote_code: bool = False,
    chunk_size: int | None = None,
    vllm_args: dict | None = None,
    targets: str = "auto",
    every_k: int = 8,
) -> dict:
    """Plan the chunks of every perspective's missing rows of the caption targets
    (``captions.chunk_jobs.plan_job``)."""
    from captions.chunk_jobs import plan_job

    return plan_job(
        workdir, dataset, perspectives, captioner=captioner, prompts=prompts, split=split, noise=noise,
        trust_remote_code=trust_remote_code, engine_args=vllm_args or None, chunk_size=chunk_size,
        targets=targets, every_k=every_k,
    )  # fmt: skip


@stage_task(
    "caption", cache_policy=NO_CACHE, persist_result=False, task_run_name="caption-chunk-{chunk[block]}"
)
def caption_chunk_task(
    job: dict, chunk: dict, device: str, batch_size: int, threads: int | None = None
) -> dict:
    """Caption one chunk on one device (``captions.chunk_jobs.caption_chunk``); says which of its perspectives
    it skipped because they were done or held by another claimant."""
    from captions.chunk_jobs import caption_chunk

    out = caption_chunk(job, chunk, device=device, batch_size=batch_size, threads=threads)
    for p, why in out["skipped"].items():
        get_run_logger().info("chunk %s/%s skipped: %s", out["block"], p, why)
    return out


@stage_task("caption", ignore=("prompts", "trust_remote_code"), task_run_name="caption-{perspective}")
def caption_task(
    workdir: str,
    dataset: str,
    perspective: str,
    manifest_fp: str,
    captioner: str,
    captioner_fp: str,
    prompt_id: str,
    prompts: str | None,
    split: str,
    noise: float,
    trust_remote_code: bool = False,
    targets: str = "auto",
    every_k: int = 8,
) -> dict:
    """Finish one perspective once its chunks are written: compact its parts, record its current rows in
    ``_current.json``; returns its current-rows fingerprint. ``targets``/``every_k`` (the caption targets) are
    part of the cache key only."""
    from captions.chunk_jobs import finish_perspectives

    out = finish_perspectives(
        workdir, dataset, [perspective], captioner=captioner, prompts=prompts, noise=noise,
        trust_remote_code=trust_remote_code,
    )[perspective]  # fmt: skip
    return {"perspective": perspective, "fingerprint": out["fingerprint"], "n_rows": int(out["n_rows"])}


@stage_task("summarize")
def summarize_task(
    workdir: str, dataset: str, biometric_fp: str, summarizer: str, summarizer_fp: str
) -> dict:
    """Per-identity biometric summaries from the current biometric captions."""
    from captions import summarize_dataset

    path = summarize_dataset(workdir, dataset, summarizer=summarizer)
    return {"path": str(path), "fingerprint": sha256_file(path, 16)}


# ---------------------------------------------------------------- features
@stage_task("encode")
def encode_task(
    workdir: str, dataset: str, encoder: str, encoder_fp: str, caption_fps: dict, summary_fp: str | None
) -> dict:
    """Text features for every current caption (and summary); only new or changed strings are encoded."""
    from captions import encode_dataset

    logger = get_run_logger()
    report = encode_dataset(workdir, dataset, encoder=encoder, progress=ProgressLog("encode", logger.info))
    encoded = {k: int(v) for k, v in report.encoded.items()}
    logger.info("encode: %s", encoded)
    return {
        "dir": str(Workspace.at(workdir).features_dir(dataset, encoder)),
        "fingerprint": features_fingerprint(encoder, encoder_fp, caption_fps, summary_fp),
        "encoded": encoded,
    }


# ---------------------------------------------------------------- training
@stage_task("train", log_prints=True)  # in-process training prints its epoch lines
def train_task(
    workdir: str,
    run_name: str,
    train_config: dict,
    features_fp: str,
    manifest_fp: str,
    launch: dict,
) -> dict:
    """Train one run; in-process for one process, else ``accelerate launch`` streaming its log."""
    from flows.stage_calls import run_training

    logger = get_run_logger()
    run_dir, ckpt = run_training(workdir, run_name, train_config, launch, log=logger.info)
    return {"run_dir": str(run_dir), "checkpoint": str(ckpt), "checkpoint_fp": sha256_file(ckpt, 16)}


# ---------------------------------------------------------------- evaluation
@stage_task("evaluate")
def evaluate_task(run_dir: str, checkpoint_fp: str, manifest_fp: str, options: dict) -> dict:
    """Metrics under the dataset's protocols, plus pictures; returns the metrics file."""
    from flows.stage_calls import run_evaluation

    out = run_evaluation(run_dir, options)
    return {"run_dir": run_dir, **{k: str(v) for k, v in out.items()}}
