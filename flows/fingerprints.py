"""Input fingerprints of each stage: cheap to compute, and changed exactly when the stage must rerun."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from differ_common.fingerprint import sha256_file, sha256_json


def dataset_root_signature(root: str | Path | None) -> str:
    """Names, sizes and mtimes of the root's first two levels (split folders and their entries' count)."""
    if root is None:
        return "none"
    root = Path(root)
    if not root.exists():
        return f"missing:{root}"
    sig: list[Any] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        st = entry.stat()
        item: list[Any] = [entry.name, st.st_size, st.st_mtime_ns]
        if entry.is_dir():
            sub = sorted(os.scandir(entry.path), key=lambda e: e.name)
            item.append([(e.name, e.stat().st_mtime_ns) for e in sub if e.is_dir()] or len(sub))
        sig.append(item)
    return sha256_json(sig, 16)


def file_fingerprint(path: str | Path) -> str:
    return sha256_file(path, 16) if Path(path).exists() else "missing"


def model_dir_fingerprint(spec: str) -> str:
    """A spec like ``hf:/models/llava`` → hash of its config files and weight file sizes (no loading)."""
    _, _, loc = spec.partition(":")
    path = Path(loc.split("@")[-1]) if loc else None
    if not path or not path.exists():
        return sha256_json(spec, 16)
    if path.is_file():
        st = path.stat()
        return sha256_json([spec, st.st_size, st.st_mtime_ns], 16)
    items: list[Any] = [spec]
    for p in sorted(path.iterdir()):
        if p.suffix == ".json":
            items.append([p.name, p.read_text(errors="replace")])
        elif p.is_file():
            items.append([p.name, p.stat().st_size])
    return sha256_json(items, 16)


def read_json(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def features_fingerprint(
    encoder: str, encoder_fp: str, caption_fps: dict[str, str], summary_fp: str | None
) -> str:
    """Features are a function of the encoder and the captions they encode: hash those inputs."""
    return sha256_json([encoder, encoder_fp, dict(sorted(caption_fps.items())), summary_fp], 16)


def on_disk(workdir: str, dataset: str, perspectives: list[str], encoder: str) -> dict[str, Any]:
    """Upstream fingerprints read back from the workspace (for running one stage alone)."""
    from differ_common.workspace import Workspace

    ws = Workspace.at(workdir)
    current = read_json(ws.captions_current(dataset))
    caption_fps = {p: current[p]["fingerprint"] for p in perspectives if p in current}
    summary = ws.summaries(dataset)
    summary_fp = file_fingerprint(summary) if summary.exists() else None
    enc_fp = model_dir_fingerprint(encoder)
    return {
        "manifest_fp": file_fingerprint(ws.manifest(dataset)),
        "caption_fps": caption_fps,
        "summary_fp": summary_fp,
        "encoder_fp": enc_fp,
        "features_fp": features_fingerprint(encoder, enc_fp, caption_fps, summary_fp),
    }
