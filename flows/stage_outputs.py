"""Is a stage's output still on disk for these task parameters? (A cache hit is offered only then.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from differ_core.workspace import Workspace


def manifest_ok(p: dict[str, Any]) -> bool:
    return Workspace.at(p["workdir"]).manifest(p["dataset"]).exists()


def caption_ok(p: dict[str, Any]) -> bool:
    current = Workspace.at(p["workdir"]).captions_current(p["dataset"])
    entry = json.loads(current.read_text()).get(p["perspective"], {})
    return entry.get("prompt_id") == p["prompt_id"] and bool(entry.get("fingerprint"))


def summary_ok(p: dict[str, Any]) -> bool:
    return Workspace.at(p["workdir"]).summaries(p["dataset"]).exists()


def encode_ok(p: dict[str, Any]) -> bool:
    return (Workspace.at(p["workdir"]).features_dir(p["dataset"], p["encoder"]) / "meta.json").exists()


def train_ok(p: dict[str, Any]) -> bool:
    ckpts = Workspace.at(p["workdir"]).run_dir(p["run_name"]) / "checkpoints"
    return any(ckpts.glob("last.*"))


def evaluate_ok(p: dict[str, Any]) -> bool:
    return (Path(p["run_dir"]) / "metrics.json").exists()
