"""The reproducibility record of a run: ``reproduce.json`` beside ``metrics.json`` (docs/design.md §5).

Training writes its part at start (:func:`record_training`), the pipeline flow adds the pipeline config, every
evaluation adds its part (:func:`record_evaluation`) and embeds the whole record in ``metrics.json``. The
command line reaches the record through the env var ``DIFFER_COMMAND`` (a JSON list, set by ``flows.cli``).
Input fingerprints do not depend on where the workspace lies, so a rebuilt input compares equal.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from differ_common.fingerprint import frame_fingerprint, package_versions, sha256_file, sha256_json

FORMAT = 1
RECORD = "reproduce.json"
COMMAND_ENV = "DIFFER_COMMAND"
PACKAGES = ("differ", "torch", "torchvision", "timm", "open_clip_torch", "transformers", "accelerate",
            "prefect", "numpy")  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def record_path(folder: str | os.PathLike) -> Path:
    """``<folder>/reproduce.json``."""
    return Path(folder) / RECORD


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ----------------------------------------------------------------------------------------------- environment
def command() -> list[str] | None:
    """The command line handed down by ``flows.cli`` (``$DIFFER_COMMAND``), else None."""
    raw = os.environ.get(COMMAND_ENV)
    try:
        return [str(x) for x in json.loads(raw)] if raw else None
    except ValueError:
        return [raw]


def versions() -> dict[str, str | None]:
    """Python and the key package versions (None: not installed)."""
    return {"python": platform.python_version(), **package_versions(*PACKAGES, missing=None)}


def git_state(repo: Path = REPO) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` when the package runs from a git checkout, else None."""
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def devices(device: Any = None) -> dict[str, Any]:
    """The device kind in use and the count and names of visible accelerators."""
    import torch

    kind = getattr(device, "type", None) or (str(device).split(":")[0] if device else None)
    info: dict[str, Any] = {"kind": kind or ("cuda" if torch.cuda.is_available() else "cpu"),
                            "cuda_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}  # fmt: skip
    if info["cuda_count"]:
        info["cuda_names"] = [torch.cuda.get_device_name(i) for i in range(info["cuda_count"])]
        info["cuda_version"] = torch.version.cuda
    return info


def deterministic_settings() -> dict[str, Any]:
    """torch's determinism switches and the env vars that change kernel choice."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
    }


def environment(device: Any = None) -> dict[str, Any]:
    """Versions, git state, host, devices and determinism switches of this process."""
    return {"versions": versions(), "git": git_state(), "platform": platform.platform(),
            "devices": devices(device), "deterministic": deterministic_settings()}  # fmt: skip


def seeds(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every ``*seed*`` key of a config dict, dotted."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(seeds(v, key + "."))
        elif "seed" in k.lower():
            out[key] = v
    return out


# ----------------------------------------------------------------------------------------------- inputs
def manifest_record(manifest: Any) -> dict[str, Any]:
    """The manifest's content fingerprint (every column but the absolute ``path`` and ``image_sha``), its dataset folder and,
    for SynthCC, the generator stamp (knobs and seed) it was drawn from."""
    from data_manifests.synthcc.generator import read_stamp

    cols = [c for c in manifest.columns if c not in ("path", "image_sha")]  # bytes may differ across machines
    folders = sorted({p[: len(p) - len(i)].rstrip("/") for p, i in zip(manifest["path"], manifest["image_id"])
                      if str(p).endswith(str(i))})  # fmt: skip
    folder = folders[0] if len(folders) == 1 else None
    stamp = read_stamp(Path(folder)) if folder else None
    return {
        "dataset": str(manifest["dataset"].iloc[0]) if len(manifest) else None,
        "fingerprint": frame_fingerprint(manifest, cols),
        "n_rows": int(len(manifest)),
        "folder": folder,
        "synthcc": stamp,
    }


def captions_record(workdir: Path, dataset: str, perspectives: list[str], bio_source: str) -> dict[str, Any]:
    """Per perspective the captioner, prompt and rows fingerprint of ``_current.json``; the summaries'."""
    from captions.table import read_current_json
    from differ_common.workspace import Workspace

    current = read_current_json(workdir, dataset)
    keys = ("captioner", "prompt_id", "model_fingerprint", "fingerprint", "n_rows")
    out: dict[str, Any] = {p: {k: current.get(p, {}).get(k) for k in keys} for p in perspectives}
    summaries = Workspace.at(workdir).summaries(dataset)
    if bio_source == "summary" and summaries.exists():
        import pandas as pd

        df = pd.read_parquet(summaries)
        out["summaries"] = {"fingerprint": frame_fingerprint(df, ["pid", "summary"]), "n_rows": len(df)}
    return out


def features_record(workdir: Path, dataset: str, encoder: str, texts: Any = None) -> dict[str, Any]:
    """The encoder, ``meta.json``'s fingerprints and (given) the sha256 of the training text tensor."""
    from differ_common.workspace import Workspace

    meta_path = Workspace.at(workdir).features_dir(dataset, encoder) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    out = {"encoder": encoder, "encoder_fingerprint": meta.get("encoder_fingerprint"),
           "captions_fingerprint": meta.get("captions_fingerprint"), "dim": meta.get("dim")}  # fmt: skip
    if texts is not None:
        out["tensor_sha256"] = tensor_sha256(texts)
    return out


def tensor_sha256(t: Any) -> str:
    """sha256 of a tensor's dtype, shape and bytes; for gathered text features (``chunks()``) the same value as
    for their dense tensor, read block by block."""
    import hashlib

    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    for block in t.chunks() if hasattr(t, "chunks") else [t]:
        h.update(block.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def weights_sha256(state: dict[str, Any]) -> str:
    """sha256 over a state dict's names and tensors (independent of the checkpoint file's other contents)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(tensor_sha256(state[k]).encode())
    return h.hexdigest()[:16]


def pretrained_record(path: str | None) -> dict[str, Any] | None:
    """``model.pretrained``: its path and sha256, or None (random initialisation)."""
    if not path:
        return None
    p = Path(path).expanduser()
    return {"path": str(p), "sha256": sha256_file(p, 16) if p.is_file() else "missing"}


# ----------------------------------------------------------------------------------------------- the file
def read_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The record in ``folder`` (an empty record when there is none)."""
    p = record_path(folder)
    if not p.is_file():
        return {"format": FORMAT}
    return json.loads(p.read_text())


def update_record(folder: str | os.PathLike, **parts: Any) -> dict[str, Any]:
    """Set top-level ``parts`` of the record in ``folder`` and write it atomically; returns the record."""
    from differ_common.io import write_json_atomic

    rec = {**read_record(folder), **parts, "format": FORMAT}
    write_json_atomic(record_path(folder), rec)
    return rec


def record_training(layout: Any, cfg: Any, workdir: Path, *, world: int, mixed_precision: str, device: Any,
                    data: Any) -> dict[str, Any]:  # fmt: skip
    """Write the training part of the run's record (called by the trainer's main process at start)."""
    from data_manifests.schema import load_manifest

    c = cfg.model_dump(mode="json")
    ds, text = cfg.data.dataset, cfg.text
    captions = (
        captions_record(workdir, ds, list(text.perspectives), text.bio_source) if cfg.needs_text else None
    )
    features = features_record(workdir, ds, text.encoder, data.texts) if cfg.needs_text else None
    part = {
        "written_at": now(),
        "command": command(),
        "run": layout.root.name,
        "config": c,
        "environment": environment(device),
        "world_size": int(world),
        "mixed_precision": str(mixed_precision),
        "seeds": seeds(c),
        "inputs": {
            "manifest": manifest_record(load_manifest(workdir, ds)),
            "captions": captions,
            "features": features,
            "pretrained": pretrained_record(cfg.model.pretrained),
        },
    }
    return update_record(layout.root, training=part)


def protocol_record(protocols: list[Any], seed: int) -> list[dict[str, Any]]:
    """Each protocol variant with its parameters (single-shot: its number of draws and their seed)."""
    out = []
    for p in protocols:
        d = dict(p.__dict__)
        d["variant"] = (
            f"single-shot ({p.single_shot_trials} draws, seed {seed})"
            if p.single_shot_trials
            else "multi-shot"
        )
        if p.single_shot_trials:
            d["seed"] = int(seed)
        out.append(d)
    return out


def record_evaluation(
    out_dir: str | os.PathLike | None, *, manifest: Any, protocols: list[Any], metrics: dict[str, Any],
    state: dict[str, Any], device: Any = None, training: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The record with this evaluation's part (written into ``out_dir`` when given); returns the record."""
    part = {
        "written_at": now(),
        "command": command(),
        "environment": environment(device),
        "checkpoint": {
            "path": metrics["checkpoint"],
            "selection": metrics["selection"],
            "epoch": metrics["epoch"],
            "weights_sha256": weights_sha256(state),
        },
        "manifest": manifest_record(manifest),
        "protocols": protocol_record(protocols, metrics["seed"]),
        "seed": metrics["seed"],
        "flip": metrics["flip"],
        "rerank": metrics["rerank"],
        "single_shot": metrics["single_shot"],
    }
    rec = read_record(out_dir) if out_dir is not None else {"format": FORMAT}
    if "training" not in rec and training is not None:
        rec["training"] = training
    rec["evaluation"] = part
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        rec = update_record(out_dir, **{k: v for k, v in rec.items() if k != "format"})
    return rec


def record_sha256(rec: dict[str, Any]) -> str:
    """The hash metrics tables carry to point at a record."""
    return sha256_json(rec, 16)
