"""Caption chunks as independent jobs, for a task runner that spreads them (the Prefect flow's chunk tasks).

``plan_job`` plans once, exactly as ``caption_dataset`` does (``writer.prepare_job``), and returns plain JSON: a
job header and the chunks (images × their pending perspectives, with the images' paths). ``caption_chunk`` runs
one chunk in any process that sees the workspace, on one device, holding that device's lock (one model per
process and device, ``captions.device_cache``); it claims each pending perspective of the chunk first, and a
perspective already done, or held by a live other claimant (a ``differ caption`` process, another run), is
skipped and named in its result, so that the caller can wait for it and try again. ``finish_perspectives``
compacts each perspective's parts and records its current rows in ``_current.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from captions.chunks import DEFAULT_LEASE_S
from differ_common.errors import ConfigError
from differ_common.workspace import Workspace


def plan_job(
    workdir: str | os.PathLike | None,
    dataset: str,
    perspectives: list[str] | str | None,
    captioner: str = "attributes",
    prompts: str | os.PathLike | None = None,
    split: str | list[str] | None = "train",
    noise: float = 0.0,
    seed: int = 0,
    trust_remote_code: bool = False,
    engine_args: dict[str, Any] | None = None,
    chunk_size: int | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    targets: str = "auto",
    every_k: int = 8,
) -> dict[str, Any]:
    """``{"job": header, "chunks": [{"block", "image_ids", "paths", "missing": {p: ids}}], "reused": {p: n}}``;
    the header carries what every chunk needs (workspace, captioner spec, current keys, plan time); ``targets``,
    ``every_k``: the frames of a video manifest that are captioned (``captions.targets``)."""
    from captions.writer import prepare_job
    from data_manifests.schema import load_manifest

    ws = Workspace.at(workdir)
    job, _, claims = prepare_job(
        ws, dataset, perspectives, captioner, prompts, split, noise, seed, trust_remote_code, None,
        engine_args, chunk_size, lease_s, targets=targets, every_k=every_k,
    )  # fmt: skip
    manifest = load_manifest(ws.root, dataset)
    paths = dict(zip(manifest["image_id"], manifest["path"], strict=True))
    header = {
        "workdir": str(ws.root),
        "dataset": dataset,
        "wanted": job.wanted,
        "keys": job.keys,
        "groups": job.groups,
        "since": claims.since,
        "lease_s": claims.lease_s,
        "captioner": captioner,
        "prompts": str(prompts) if prompts else None,
        "noise": noise,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
        "engine_args": dict(engine_args or {}),
    }
    chunks = [
        {
            "block": c.block,
            "image_ids": c.image_ids,
            "paths": [paths[i] for i in c.image_ids],
            "shas": [job.shas.get(i, "") for i in c.image_ids],  # what each image is (its rows record it)
            "missing": c.missing,
        }
        for c in job.chunks
    ]
    return {"job": header, "chunks": chunks, "reused": job.report.reused}


def caption_chunk(
    job: dict[str, Any],
    chunk: dict[str, Any],
    device: str = "auto",
    batch_size: int = 8,
    threads: int | None = None,
) -> dict[str, Any]:
    """Caption one planned chunk on ``device`` (a label: ``auto``, ``cpu``, ``cuda:1``); ``threads``: torch
    threads of this process when it captions on the CPU. Returns ``{"block", "worker", "device", "generated",
    "seconds", "flagged", "errors", "skipped": {perspective: "done" | "held by host:pid"}}``."""
    from captions.backends import make_captioner
    from captions.chunks import Chunk, Claims, worker_id
    from captions.device_cache import cached_captioner, device_lock, in_process_device
    from captions.prompts import load_prompts
    from captions.writer import CaptionReport, Job, _caption_chunk
    from differ_common.device import pick_device

    ws = Workspace.at(job["workdir"])
    target = in_process_device(device)

    def build():
        return make_captioner(
            job["captioner"], workdir=ws.root, dataset=job["dataset"], noise=job["noise"], seed=job["seed"],
            trust_remote_code=job["trust_remote_code"], device=target, engine_args=job["engine_args"],
        )  # fmt: skip

    options = (job["captioner"], str(ws.root), job["dataset"], job["noise"], job["seed"])
    options += (job["trust_remote_code"], json.dumps(job["engine_args"], sort_keys=True))
    cap = cached_captioner(device, options, build)
    label = pick_device(target) if cap.needs_images else "cpu"
    wanted = job["wanted"]
    specs = load_prompts(job["prompts"])
    keys = {
        p: {"prompt_id": specs[p].prompt_id, "captioner": cap.name, "model_fingerprint": cap.fingerprint}
        for p in wanted
    }
    if keys != job["keys"]:
        raise ConfigError(
            f"{job['workdir']}: the prompts or the model folder changed since the plan was made; rerun"
        )
    report = CaptionReport(
        job["dataset"], cap.name, cap.fingerprint, {}, dict.fromkeys(wanted, 0), {}, {},
        dict.fromkeys(wanted, 0.0), dict.fromkeys(wanted, 0),
    )  # fmt: skip
    shas = dict(zip(chunk["image_ids"], chunk.get("shas") or [""] * len(chunk["image_ids"]), strict=True))
    todo = Job(job["dataset"], wanted, {p: specs[p] for p in wanted}, keys, job["groups"], [], report, shas)
    block = Chunk(chunk["block"], chunk["image_ids"], chunk["missing"])
    paths = dict(zip(chunk["image_ids"], chunk["paths"], strict=True))
    claims = Claims(ws.locks() / "caption-claims" / job["dataset"], job["lease_s"], job["since"])
    skipped: dict[str, str] = {}
    with device_lock(label):  # this device's model runs one chunk at a time in this process
        mine = []
        for p in block.missing:
            group = job["groups"][p]
            state = claims.acquire(group, block.block)
            if state == "mine":
                mine.append(p)
            else:
                skipped[p] = (
                    "done" if state == "done" else f"held by {claims.holder(group, block.block) or '?'}"
                )
        if mine:
            if threads and label == "cpu":
                import torch

                torch.set_num_threads(threads)
            if callable(getattr(cap, "load", None)):
                cap.load()
            try:
                _caption_chunk(ws, todo, cap, claims, block, mine, paths, batch_size, label, None)
            finally:
                for p in mine:
                    claims.release(job["groups"][p], block.block)  # no-op for the finished ones
            for p in mine:  # our lease expired and another claimant took the block over: theirs to finish
                if not claims.is_done(job["groups"][p], block.block):
                    skipped[p] = f"held by {claims.holder(job['groups'][p], block.block) or '?'}"
    return {
        "block": block.block,
        "worker": worker_id(),
        "device": label,
        "generated": report.generated,
        "seconds": report.seconds,
        "flagged": report.flagged,
        "errors": [list(e) for e in report.errors],
        "skipped": skipped,
    }


def finish_perspectives(
    workdir: str | os.PathLike | None,
    dataset: str,
    perspectives: list[str] | str | None,
    captioner: str = "attributes",
    prompts: str | os.PathLike | None = None,
    noise: float = 0.0,
    seed: int = 0,
    trust_remote_code: bool = False,
    compact_threshold: int = 256,
    lock_timeout: float = -1,
) -> dict[str, dict[str, Any]]:
    """Compact each perspective's parts, record its current key and rows in ``_current.json``; returns
    ``{perspective: {"fingerprint", "n_rows"}}`` (what ``caption_dataset`` records, computed the same way)."""
    from captions.backends import make_captioner
    from captions.prompts import load_prompts
    from captions.writer import _compact_unless_busy, _resolve_perspectives, _update_current

    ws = Workspace.at(workdir)
    wanted = _resolve_perspectives(perspectives)
    specs = load_prompts(prompts)
    cap = make_captioner(
        captioner,
        workdir=ws.root,
        dataset=dataset,
        noise=noise,
        seed=seed,
        trust_remote_code=trust_remote_code,
    )
    for p in wanted:
        _compact_unless_busy(ws, dataset, p, compact_threshold)
    fps, totals = _update_current(ws, dataset, wanted, specs, cap, lock_timeout)
    return {p: {"fingerprint": fps[p], "n_rows": totals[p]} for p in wanted}
