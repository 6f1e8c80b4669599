"""Input fingerprints of each stage: cheap to compute, and changed exactly when the stage must rerun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from captions.table import read_current_json
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


def encoder_spec_fingerprint(spec: str) -> str:
    """``captions.features.encoders.encoder_fingerprint``: spec, model package versions, local files' configs and
    sizes.

    A spec the encoder cannot parse gets a fingerprint of its text; the encode task then reports the error.
    """
    from captions.features.encoders import encoder_fingerprint
    from differ_common.errors import ConfigError

    try:
        return encoder_fingerprint(spec)
    except ConfigError:
        return sha256_json(["unparsed", spec], 16)


def captioner_spec_fingerprint(spec: str) -> str:
    """``captions.backends.captioner_fingerprint`` (captioners and summarizers): spec, backend package
    versions, the model folder's ``model_dir_fingerprint``."""
    from captions.backends import captioner_fingerprint

    return captioner_fingerprint(spec)


def features_fingerprint(
    encoder: str, encoder_fp: str, caption_fps: dict[str, str], summary_fp: str | None
) -> str:
    """Features are a function of the encoder and the captions they encode: hash those inputs."""
    return sha256_json([encoder, encoder_fp, dict(sorted(caption_fps.items())), summary_fp], 16)


def on_disk(workdir: str, dataset: str, perspectives: list[str], encoder: str) -> dict[str, Any]:
    """Upstream fingerprints read back from the workspace (for running one stage alone)."""
    from differ_common.workspace import Workspace

    ws = Workspace.at(workdir)
    current = read_current_json(ws.root, dataset)
    caption_fps = {p: current[p]["fingerprint"] for p in perspectives if p in current}
    summary = ws.summaries(dataset)
    summary_fp = file_fingerprint(summary) if summary.exists() else None
    enc_fp = encoder_spec_fingerprint(encoder)
    return {
        "manifest_fp": file_fingerprint(ws.manifest(dataset)),
        "caption_fps": caption_fps,
        "summary_fp": summary_fp,
        "encoder_fp": enc_fp,
        "features_fp": features_fingerprint(encoder, enc_fp, caption_fps, summary_fp),
    }
