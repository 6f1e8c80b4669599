"""Is a stage's output still on disk for these task parameters? (A cache hit is offered only then.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from differ_common.workspace import Workspace


def manifest_ok(p: dict[str, Any]) -> bool:
    if not Workspace.at(p["workdir"]).manifest(p["dataset"]).exists():
        return False
    if p["dataset"] == "synthcc":  # the generated images are part of this stage's output
        from data_manifests.synthcc.generator import FOLDER, STAMP

        return (Path(p["root"]) / FOLDER / STAMP).exists()
    return True


def caption_ok(p: dict[str, Any]) -> bool:
    """The perspective's current captions are those of this prompt and this captioner (noise included)."""
    current = Workspace.at(p["workdir"]).captions_current(p["dataset"])
    entry = json.loads(current.read_text()).get(p["perspective"], {})
    if entry.get("prompt_id") != p["prompt_id"] or not entry.get("fingerprint"):
        return False
    from captions.backends import captioner_name

    return entry.get("captioner") == captioner_name(p["captioner"], noise=p["noise"])


def summarize_ok(p: dict[str, Any]) -> bool:
    return Workspace.at(p["workdir"]).summaries(p["dataset"]).exists()


def encode_ok(p: dict[str, Any]) -> bool:
    return (Workspace.at(p["workdir"]).features_dir(p["dataset"], p["encoder"]) / "meta.json").exists()


def train_ok(p: dict[str, Any]) -> bool:
    ckpts = Workspace.at(p["workdir"]).run_dir(p["run_name"]) / "checkpoints"
    return any(ckpts.glob("last.*"))


def evaluate_ok(p: dict[str, Any]) -> bool:
    return (Path(p["run_dir"]) / "metrics.json").exists()
