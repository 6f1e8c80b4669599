"""Caption worker processes: one VLM per device, chunks claimed from one shared plan.

``run_workers`` writes the plan (``W/.locks/caption-plans/<id>.json``), starts one ``python -m
captions.workers`` process per device label (a GPU worker sees only its own device through
``CUDA_VISIBLE_DEVICES``; CPU workers split the cores), lets them start captioning together once every model is
loaded, and merges their reports. A worker that fails or is killed is one line in the report; the chunks it held
are taken over by the other workers (its process is gone) or redone by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from differ_common.errors import ConfigError

if TYPE_CHECKING:
    from captions.chunks import Claims
    from captions.writer import Job
    from differ_common.workspace import Workspace

MODEL_BACKENDS = ("hf", "vllm")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _label(item: str) -> str:
    item = str(item).strip().lower()
    if item == "cpu":
        return "cpu"
    ids = item.removeprefix("cuda:").removeprefix("cuda")
    if not ids or not all(x.isdigit() for x in ids.split("+")):
        raise ConfigError(f"--devices item {item!r}: expected a GPU id (0), ids joined by + (0+1) or cpu")
    return "cuda:" + ids


def resolve_devices(
    captioner: str, workers: int | None, devices: list[str] | str | None, device: str | None
) -> list[str]:
    """One device label per worker: ``cpu``, ``cuda:3`` or ``cuda:0+1`` (a worker holding two GPUs).

    ``devices`` (``"0,1"`` or a list) are spread round-robin over ``workers`` (default: one per device).
    Without ``devices``: ``workers`` CPU workers when given, else one worker per visible GPU for a model
    captioner (``device`` unset), else one worker in this process (``device`` or auto-detected).
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    items = [d for d in devices.split(",") if d.strip()] if isinstance(devices, str) else list(devices or [])
    if items:
        labels = [_label(d) for d in items]
        n = workers or len(labels)
        return [labels[k % len(labels)] for k in range(n)]
    if workers and workers > 1:
        return ["cpu"] * workers
    if workers is None and not device and captioner.partition(":")[0] in MODEL_BACKENDS:
        import torch

        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpu > 1:
            return [f"cuda:{k}" for k in range(n_gpu)]
    return [device or "auto"]


def _visible(label: str) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a worker: its GPU ids mapped through the parent's own visible list."""
    if label == "cpu":
        return ""
    parent = [x for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    ids = label.removeprefix("cuda:").split("+")
    return ",".join(parent[int(i)] if parent and int(i) < len(parent) else i for i in ids)


def run_workers(ws: Workspace, job: Job, claims: Claims, labels: list[str], options: dict[str, Any]) -> None:
    """Caption ``job`` with one process per label; merges their counts and failure lines into ``job.report``."""
    import uuid

    from differ_common.io import write_json_atomic

    folder = ws.locks() / "caption-plans"
    plan_id = uuid.uuid4().hex[:12]
    plan = folder / f"{plan_id}.json"
    write_json_atomic(
        plan,
        {
            "workdir": str(ws.root),
            "dataset": job.dataset,
            "wanted": job.wanted,
            "groups": job.groups,
            "keys": job.keys,
            "since": claims.since,
            "lease_s": claims.lease_s,
            "chunks": [
                {"block": c.block, "image_ids": c.image_ids, "missing": c.missing} for c in job.chunks
            ],
            **options,
        },
    )
    threads = options.get("threads") or max(1, _cpu_count() // max(sum(x == "cpu" for x in labels), 1))
    procs = []
    for k, label in enumerate(labels):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": _visible(label)}
        if label == "cpu":
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "captions.workers", str(plan), str(k), label, str(threads)]
        procs.append(subprocess.Popen(cmd, env=env))
    go = folder / f"{plan_id}.go"
    try:
        while not go.exists():  # start together once every model is loaded (or its worker has ended)
            ready = [
                (folder / f"{plan_id}.ready-{k}").exists() or p.poll() is not None
                for k, p in enumerate(procs)
            ]
            if all(ready):
                go.write_text(str(time.time()))
            else:
                time.sleep(0.05)
        t_go = float(go.read_text())
        while any(p.poll() is None for p in procs):  # poll() reaps a killed worker at once
            time.sleep(0.05)
    except BaseException:
        for p in procs:
            p.kill()
        raise
    report = job.report
    t_end = t_go
    for k, (label, p) in enumerate(zip(labels, procs, strict=True)):
        out = folder / f"{plan_id}.worker-{k}.json"
        res = json.loads(out.read_text()) if out.exists() else {}
        who = res.get("worker") or f"{socket.gethostname()}:{p.pid}"
        report.workers.append(f"{who}@{label}")
        if res.get("error"):
            report.worker_errors.append(res["error"])
        elif p.returncode != 0:
            how = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit status {p.returncode}"
            report.worker_errors.append(f"caption worker {who} on {label} ended ({how}) mid-chunk")
        for name in ("generated", "seconds", "flagged"):
            for q, v in res.get(name, {}).items():
                getattr(report, name)[q] += v
        report.errors += [
            tuple(e) for e in res.get("errors", []) if e[0] not in {x[0] for x in report.errors}
        ]
        t_end = max(t_end, float(res.get("t_end", t_go)))
    report.wall_seconds = t_end - t_go
    for f in folder.glob(f"{plan_id}*"):
        f.unlink(missing_ok=True)


def _worker(plan_file: str, index: int, label: str, threads: int) -> int:
    from captions.backends import make_captioner
    from captions.chunks import Chunk, Claims, worker_id
    from captions.prompts import load_prompts
    from captions.writer import CaptionReport, Job, run_chunks
    from data_manifests.schema import load_manifest
    from differ_common.workspace import Workspace

    plan_path = Path(plan_file)
    plan = json.loads(plan_path.read_text())
    stem = plan_path.with_suffix("")
    result: dict[str, Any] = {"worker": worker_id()}

    def save() -> None:
        from differ_common.io import write_json_atomic

        write_json_atomic(Path(f"{stem}.worker-{index}.json"), result)

    wanted = plan["wanted"]
    report = CaptionReport(
        plan["dataset"], "", "", {}, dict.fromkeys(wanted, 0), {}, {}, dict.fromkeys(wanted, 0.0),
        dict.fromkeys(wanted, 0),
    )  # fmt: skip
    try:
        device = None if label == "auto" else ("cpu" if label == "cpu" else "cuda:0")
        if label == "cpu":
            import torch

            torch.set_num_threads(threads)
        ws = Workspace.at(plan["workdir"])
        cap = make_captioner(
            plan["captioner"], workdir=ws.root, dataset=plan["dataset"], noise=plan["noise"], seed=plan["seed"],
            trust_remote_code=plan["trust_remote_code"], device=device, engine_args=plan["engine_args"],
        )  # fmt: skip
        specs = load_prompts(plan["prompts"])
        keys = {p: {"prompt_id": specs[p].prompt_id, "captioner": cap.name, "model_fingerprint": cap.fingerprint}
                for p in wanted}  # fmt: skip
        if keys != plan["keys"]:
            raise ConfigError("the prompts or the model folder changed since the plan was made; rerun")
        if callable(getattr(cap, "load", None)):
            cap.load()
    except Exception as exc:  # noqa: BLE001 - one line for the coordinator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result["error"] = f"caption worker {worker_id()} on {label}: cannot load {plan['captioner']}: {first}"
        print(result["error"], file=sys.stderr, flush=True)
        save()
        return 3
    manifest = load_manifest(ws.root, plan["dataset"])
    paths = dict(zip(manifest["image_id"], manifest["path"], strict=True))
    Path(f"{stem}.ready-{index}").write_text(worker_id())
    go = Path(f"{stem}.go")
    while not go.exists():
        time.sleep(0.02)
    chunks = [Chunk(c["block"], c["image_ids"], c["missing"]) for c in plan["chunks"]]
    from captions.table import image_shas

    shas = image_shas(manifest)  # the plan's manifest: what each image is (its rows record it)
    job = Job(
        plan["dataset"], wanted, {p: specs[p] for p in wanted}, keys, plan["groups"], chunks, report, shas
    )
    claims = Claims(ws.locks() / "caption-claims" / plan["dataset"], plan["lease_s"], plan["since"])
    status = 0
    try:
        run_chunks(ws, job, cap, claims, paths, plan["batch_size"], label)
    except Exception as exc:  # noqa: BLE001 - one line for the coordinator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result["error"] = f"caption worker {worker_id()} on {label} failed: {type(exc).__name__}: {first}"
        print(result["error"], file=sys.stderr, flush=True)
        status = 4
    result.update(
        t_end=time.time(),
        generated=report.generated,
        seconds=report.seconds,
        flagged=report.flagged,
        errors=report.errors,
    )
    save()
    return status


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
