"""The caption stage of the flows: one plan, one task per chunk mapped over the task runner, one finishing task
per perspective (docs/design.md §1, §10).

- **plan** (``caption_plan_task``): every missing (image, perspective) row of ``cfg.perspectives``, planned once in
  chunks of images × their pending perspectives, exactly as ``differ caption`` plans them.
- **chunks** (``caption_chunk_task``): submitted in chunk order to the runner (threads in the flow process, or the
  workers of a Dask cluster). Chunk k runs on device ``chunk_devices(cfg)[k % n]`` and carries ``chunk_tags``
  (``gpu`` and ``gpu:<id>`` on a GPU). A chunk whose claim is held by a live other claimant (a ``differ caption``
  process, another run) is skipped by its task; the step submits it again every ``HELD_POLL_S`` seconds until its
  holder has finished it or it was taken over (holder dead, lease expired).
- **finish** (``caption_task``, one per perspective): compacts and records the perspective's current rows, cached
  by that perspective's inputs and refreshed when its rows changed in this run; its fingerprint is what the
  downstream stages key on, so a prompt change to one perspective recomputes only what depends on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE

from flows.config import PipelineConfig
from flows.stages.base import StageStop, gpu_tags, result_of, stage_task, uses_gpu

CODE = ("captions.chunk_jobs",)

HELD_POLL_S = 2.0  # how often chunks held by other claimants are tried again


# The three kinds of task (the module docstring): the plan and the chunks are never cached (the chunk claims decide
# what is left); the finishing task is cached per perspective, so downstream caching stays per perspective.
@stage_task("caption", code=CODE, cache_policy=NO_CACHE, persist_result=False, task_run_name="caption-plan")
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
    "caption",
    code=CODE,
    cache_policy=NO_CACHE,
    persist_result=False,
    task_run_name="caption-chunk-{chunk[block]}",
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


@stage_task(
    "caption", code=CODE, ignore=("prompts", "trust_remote_code"), task_run_name="caption-{perspective}"
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


def caption_settings(cfg: PipelineConfig) -> dict[str, str]:
    """The current ``prompt_id`` of each perspective (prompt text + generation settings)."""
    from captions.prompts import load_prompts

    prompts = load_prompts(cfg.prompts)
    return {p: prompts[p].prompt_id for p in cfg.perspectives}


def captioner_spec_fingerprint(spec: str) -> str:
    """``captions.backends.captioner_fingerprint`` (captioners and summarizers): spec, backend package
    versions, the model folder's ``model_dir_fingerprint``."""
    from captions.backends import captioner_fingerprint

    return captioner_fingerprint(spec)


def caption_ok(p: dict[str, Any]) -> bool:
    """The perspective's current captions are those of this prompt and this captioner (noise included)."""
    from captions.backends import captioner_name
    from captions.table import read_current_json

    entry = read_current_json(p["workdir"], p["dataset"]).get(p["perspective"], {})
    if entry.get("prompt_id") != p["prompt_id"] or not entry.get("fingerprint"):
        return False
    return entry.get("captioner") == captioner_name(p["captioner"], noise=p["noise"])


def _uses_model(cfg: PipelineConfig) -> bool:
    from captions.workers import MODEL_BACKENDS

    return cfg.captioner.partition(":")[0] in MODEL_BACKENDS


def chunk_devices(cfg: PipelineConfig) -> list[str]:
    """The device label of each chunk slot (chunk k runs on ``labels[k % len(labels)]``): the configured
    ``caption_devices`` / ``caption_workers`` (``captions.workers.resolve_devices``); on a Dask cluster otherwise
    the device each worker process sees (``auto``: one worker per GPU, e.g. dask-cuda); with threads otherwise one
    slot per GPU visible here (``cfg.device`` when given). vLLM holds one engine per process, so with threads it
    gets the first slot only (spread vLLM over GPUs with a Dask cluster of one worker per GPU)."""
    from captions.workers import resolve_devices

    if cfg.caption_devices or cfg.caption_workers:
        labels = resolve_devices(cfg.captioner, cfg.caption_workers, cfg.caption_devices, cfg.device)
    elif cfg.task_runner == "dask" or not _uses_model(cfg):
        return [cfg.device or "auto"]
    else:
        labels = resolve_devices(cfg.captioner, None, None, cfg.device)
    if cfg.task_runner != "dask" and cfg.captioner.startswith("vllm:"):
        return labels[:1]  # one vLLM engine per process: threads share the flow process's one engine
    return labels


def chunk_tags(cfg: PipelineConfig, label: str) -> set[str]:
    """Tags of a chunk task on ``label``: ``gpu`` and ``gpu:<id>`` for each GPU of a CUDA label (``cuda`` is
    ``gpu:0``); on ``auto``, the first GPU when one is visible here, or ``gpu`` alone on a Dask cluster (the
    worker's own GPU is not known here); none for the CPU or a captioner without a model."""
    if not _uses_model(cfg) or label == "cpu":
        return set()
    if label == "cuda" or label.startswith("cuda:"):
        return gpu_tags(label.removeprefix("cuda").removeprefix(":").split("+") if ":" in label else ["0"])
    if cfg.task_runner == "dask":
        return gpu_tags([])
    return gpu_tags(["0"]) if uses_gpu(cfg, "caption") else set()


def chunk_threads(cfg: PipelineConfig) -> int | None:
    """Torch threads of a CPU chunk task: the cores split between the workers of a local Dask cluster; None
    (leave the process alone) for threads in the flow process or a cluster started elsewhere."""
    if cfg.task_runner != "dask" or cfg.dask_address:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    return max(1, cores // cfg.dask_workers)


def caption_threads(cfg: PipelineConfig) -> int:
    """Threads of the flow's thread runner: two per distinct device, so that a device whose next chunk is
    queued behind another device's never idles (tasks on one device take turns on its model)."""
    return 2 * len(set(chunk_devices(cfg)))


def caption_step(ctx: Any, runner: Any) -> None:
    """Plan, caption the chunks over ``runner``, finish each perspective; records ``caption/<p>`` per perspective
    (and ``caption/chunks`` when chunks ran)."""
    from flows.trust import check_remote_code

    cfg = ctx.cfg
    check_remote_code(cfg.trust_remote_code)  # a submitted run: only if `differ serve --trust-remote-code`
    plan = result_of(
        "caption",
        caption_plan_task(
            workdir=ctx.workdir, dataset=cfg.dataset, perspectives=list(cfg.perspectives), captioner=cfg.captioner,
            prompts=cfg.prompts, split=cfg.split, noise=cfg.caption_noise, trust_remote_code=cfg.trust_remote_code,
            chunk_size=cfg.caption_chunk_size, vllm_args=cfg.vllm_args, targets=cfg.caption_targets,
            every_k=cfg.caption_every_k, return_state=True,
        ),
    )  # fmt: skip
    chunks = plan["chunks"]
    tally = run_chunks(ctx, runner, plan["job"], chunks) if chunks else None
    if tally is not None:
        ctx.stages.append(tally.record())
        if tally.failures:
            raise StageStop(
                f"{tally.failures[0]} ({len(tally.failures)} of {tally.tasks} chunk task(s) failed; "
                "rerun to caption what they left)"
            )
    prompt_ids = caption_settings(cfg)
    captioner_fp = captioner_spec_fingerprint(cfg.captioner)
    for p in cfg.perspectives:
        st = ctx.call(
            caption_task, "caption", caption_ok, force=any(p in c["missing"] for c in chunks),
            workdir=ctx.workdir, dataset=cfg.dataset, perspective=p, manifest_fp=ctx.manifest_fp,
            captioner=cfg.captioner, captioner_fp=captioner_fp, prompt_id=prompt_ids[p], prompts=cfg.prompts,
            split=cfg.split, noise=cfg.caption_noise, trust_remote_code=cfg.trust_remote_code,
            targets=cfg.caption_targets, every_k=cfg.caption_every_k,
        )  # fmt: skip
        out = result_of(f"caption/{p}", st)
        ctx.caption_fps[p] = out["fingerprint"]
        generated = 0 if st.name == "Cached" or tally is None else tally.generated.get(p, 0)
        ctx.record(f"caption/{p}", st, f"{out['n_rows']} rows, {generated} generated", {p: generated})
    if tally is not None and tally.errors:
        from captions.writer import bad_images_error

        raise StageStop(f"caption: {bad_images_error(tally.errors)}")
    ctx.outputs["captions"] = str(Path(ctx.workdir) / "captions" / cfg.dataset)


class Tally:
    """What the chunk tasks of one caption step did."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.tasks = 0  # chunk task runs, resubmissions of held chunks included
        self.waited = 0  # chunks found held by another claimant (each time)
        self.generated: dict[str, int] = {}
        self.errors: list[tuple[str, str]] = []
        self.failures: list[str] = []
        self.workers: set[str] = set()

    def add(self, out: dict[str, Any]) -> None:
        for p, n in out["generated"].items():
            if n:
                self.generated[p] = self.generated.get(p, 0) + int(n)
        self.errors += [(str(a), str(b)) for a, b in out["errors"] if a not in {e[0] for e in self.errors}]
        self.workers.add(f"{out['worker']}@{out['device']}")

    def record(self) -> dict[str, Any]:
        details = f"{self.tasks} chunk tasks on {', '.join(sorted(self.workers)) or 'no worker'}"
        if self.waited:
            details += f"; {self.waited} held by another claimant, waited for"
        return {
            "stage": "caption/chunks",
            "status": "recomputed",
            "details": details,
            "counts": dict(self.generated),
            "tasks": self.tasks,
        }


def run_chunks(ctx: Any, runner: Any, job: dict[str, Any], chunks: list[dict[str, Any]]) -> Tally:
    """Submit one chunk task per chunk (in chunk order, device ``labels[k % n]``), then again the chunks held by
    other claimants until none is left; returns the tally."""
    from prefect.futures import as_completed

    cfg = ctx.cfg
    labels = chunk_devices(cfg)
    threads = chunk_threads(cfg)
    tasks = {label: caption_chunk_task.with_options(tags=chunk_tags(cfg, label)) for label in set(labels)}
    tally = Tally(labels)
    total = sum(len(ids) for c in chunks for ids in c["missing"].values()) or 1
    progress = _progress(f"caption {cfg.dataset}", ",".join(cfg.perspectives))
    done = 0
    pending = list(enumerate(chunks))
    while pending:
        submitted, futures = {}, []
        for k, chunk in pending:
            label = labels[k % len(labels)]
            params = {"job": job, "chunk": chunk, "device": label, "batch_size": cfg.caption_batch_size}
            future = runner.submit(tasks[label], parameters={**params, "threads": threads})
            submitted[future.task_run_id] = (k, chunk)
            futures.append(future)
        tally.tasks += len(submitted)
        held = []
        for future in as_completed(futures):
            k, chunk = submitted[future.task_run_id]
            future.wait()  # records the final state (``state`` alone may still read Running)
            state = future.state
            if state.is_failed() or state.is_crashed() or state.is_cancelled():
                tally.failures.append(state.message or f"caption: chunk {chunk['block']} ended {state.name}")
                continue
            out = state.result()
            tally.add(out)
            wait = {p: chunk["missing"][p] for p, why in out["skipped"].items() if why != "done"}
            done += sum(len(ids) for p, ids in chunk["missing"].items() if p not in wait)
            progress(done / total)
            if wait:
                held.append((k, {**chunk, "missing": wait}))
        if held:
            tally.waited += len(held)
            get_run_logger().info("caption: %d chunk(s) held by other claimants; trying again", len(held))
            time.sleep(HELD_POLL_S)
        pending = held
    return tally


def _progress(label: str, what: str) -> Callable[[float], None]:
    """Run-log lines every 10%, plus a Prefect progress artifact when there is an API to write it to."""
    from flows.run_logging import ProgressLog

    log_line = ProgressLog(label, get_run_logger().info)
    try:
        from flows.artifacts import CaptionProgress

        artifact = CaptionProgress(what)
    except Exception:  # noqa: BLE001 - no API to write artifacts to is fine
        return log_line

    def both(fraction: float) -> None:
        log_line(fraction)
        artifact(fraction)

    return both
