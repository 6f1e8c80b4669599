"""Is a stage's output still on disk for these task parameters? (A cache hit is offered only then.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from captions.table import read_current_json
from differ_common.workspace import RunLayout, Workspace


def manifest_ok(p: dict[str, Any]) -> bool:
    if not Workspace.at(p["workdir"]).manifest(p["dataset"]).exists():
        return False
    from data_manifests.registry import dataset_traits

    if dataset_traits(p["dataset"]).generated:  # the generated images are part of this stage's output
        from data_manifests.synthcc.generator import FOLDER, STAMP

        return (Path(p["root"]) / FOLDER / STAMP).exists()
    return True


def caption_ok(p: dict[str, Any]) -> bool:
    """The perspective's current captions are those of this prompt and this captioner (noise included)."""
    entry = read_current_json(p["workdir"], p["dataset"]).get(p["perspective"], {})
    if entry.get("prompt_id") != p["prompt_id"] or not entry.get("fingerprint"):
        return False
    from captions.backends import captioner_name

    return entry.get("captioner") == captioner_name(p["captioner"], noise=p["noise"])


def summarize_ok(p: dict[str, Any]) -> bool:
    return Workspace.at(p["workdir"]).summaries(p["dataset"]).exists()


def encode_ok(p: dict[str, Any]) -> bool:
    return (Workspace.at(p["workdir"]).features_dir(p["dataset"], p["encoder"]) / "meta.json").exists()


def train_ok(p: dict[str, Any]) -> bool:
    return any(Workspace.at(p["workdir"]).run(p["run_name"]).checkpoints.glob("last.*"))


def evaluate_ok(p: dict[str, Any]) -> bool:
    return RunLayout(Path(p["run_dir"])).metrics.exists()


def pretrain_ok(p: dict[str, Any]) -> bool:
    """The pre-training's folder is complete (``differ_core.clip_pretrain.train.PretrainOutput``)."""
    from differ_core.clip_pretrain.config import load_pretrain_config
    from differ_core.clip_pretrain.train import output_for

    try:
        return output_for(load_pretrain_config(p["config"]), p["workdir"]).complete()
    except Exception:  # noqa: BLE001 - an unreadable config: the task reports it
        return False


# stage -> its output check (called with the task's parameters)
OUTPUT_CHECKS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "pretrain": pretrain_ok,
    "manifest": manifest_ok,
    "caption": caption_ok,
    "summarize": summarize_ok,
    "encode": encode_ok,
    "train": train_ok,
    "evaluate": evaluate_ok,
}
