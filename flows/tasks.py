"""Prefect tasks: one per stage, each a thin call into its package, returning paths and fingerprints.

Every task takes only strings, numbers and small dicts (the fingerprints of what it reads), so its cache
key is exactly its inputs. A stage's own ``DifferError`` becomes a Failed state with that one-line
message (no traceback wall); transient errors (a held lock, a busy or out-of-memory GPU) are retried.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Failed

from differ_common.errors import DifferError
from differ_common.fingerprint import sha256_file
from differ_common.workspace import Workspace
from flows.caching import make_cache_key_fn
from flows.fingerprints import features_fingerprint

TRANSIENT_MARKERS = (
    "out of memory",
    "cuda error: device busy",
    "resource busy",
    "another process is running",
)


def is_transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, TimeoutError) or any(m in text for m in TRANSIENT_MARKERS)


def _retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


class StageFailed(Exception):
    """Raised (as a Failed state) when a stage rejects its input."""


def stage_task(stage: str, ignore: tuple[str, ...] = (), **task_kwargs: Any):
    """Decorator: a cached, retried Prefect task whose DifferError becomes a clean Failed state."""

    def wrap(fn: Callable[..., dict[str, Any]]):
        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any):
            try:
                return fn(*args, **kwargs)
            except DifferError as exc:
                if is_transient(exc):
                    raise
                msg = f"{stage}: {exc}"
                get_run_logger().error(msg)
                return Failed(message=msg, data=StageFailed(msg))

        return task(
            name=f"differ-{stage}",
            cache_key_fn=make_cache_key_fn(stage, ignore),
            persist_result=True,
            result_serializer="json",
            retries=2,
            retry_delay_seconds=[5, 30],
            retry_condition_fn=_retry_condition,
            **task_kwargs,
        )(body)

    return wrap


# ---------------------------------------------------------------- manifest
@stage_task("manifest")
def manifest_task(workdir: str, dataset: str, root: str | None, options: dict, root_signature: str) -> dict:
    """Build and write ``W/manifests/<dataset>.parquet`` (SynthCC: generate the images first)."""
    from flows.stage_calls import build_and_write_manifest

    path = build_and_write_manifest(workdir, dataset, root, options)
    return {"path": str(path), "fingerprint": sha256_file(path, 16)}


# ---------------------------------------------------------------- captions
@stage_task(
    "caption",
    ignore=("prompts", "batch_size", "trust_remote_code", "device"),
    task_run_name="caption-{perspective}",
)
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
    batch_size: int,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> dict:
    """Caption the missing rows of one perspective; returns its current-rows fingerprint."""
    from captions import caption_dataset

    logger = get_run_logger()
    progress = _progress(perspective)
    report = caption_dataset(
        workdir,
        dataset,
        perspectives=[perspective],
        captioner=captioner,
        prompts=prompts,
        split=split,
        batch_size=batch_size,
        noise=noise,
        trust_remote_code=trust_remote_code,
        device=device,
        progress=progress,
    )
    generated = int(report.generated.get(perspective, 0))
    logger.info("caption %s: %d rows generated", perspective, generated)
    current = json.loads(Workspace.at(workdir).captions_current(dataset).read_text())[perspective]
    return {
        "perspective": perspective,
        "fingerprint": current["fingerprint"],
        "n_rows": int(current.get("n_rows", 0)),
        "generated": generated,
    }


def _progress(perspective: str):
    """A Prefect progress artifact for this perspective, or None when there is no API to write it to."""
    try:
        from flows.artifacts import CaptionProgress

        return CaptionProgress(perspective)
    except Exception:  # noqa: BLE001 - no API to write artifacts to is fine
        return None


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

    report = encode_dataset(workdir, dataset, encoder=encoder)
    encoded = {k: int(v) for k, v in report.encoded.items()}
    get_run_logger().info("encode: %s", encoded)
    return {
        "dir": str(Workspace.at(workdir).features_dir(dataset, encoder)),
        "fingerprint": features_fingerprint(encoder, encoder_fp, caption_fps, summary_fp),
        "encoded": encoded,
    }


# ---------------------------------------------------------------- training
@stage_task("train")
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


def path_exists(p: str | None) -> bool:
    return bool(p) and Path(p).exists()
