"""Training checkpoints: plain containers only, written atomically, read with ``torch.load(weights_only=True)``.

Layout (``W/runs/<run>/checkpoints/last.pt`` and ``best.pt``)::

    {"format": "differ-checkpoint/1", "model": state_dict, "config": TrainConfig json dict, "epoch": int,
     "step": int, "num_classes", "num_cameras", "text_dim", "img_size": [H, W], "mean", "std",
     "dataset", "backbone", "metrics": {...},
     # last.pt only (resume): "optimizer", "scheduler", "sampler", "rng", "scaler"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from differ_common.errors import DifferError
from differ_common.io import atomic_path

FORMAT = "differ-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temp file + rename): a kill never leaves a half-written checkpoint."""
    payload = {"format": FORMAT, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_problem(exc: BaseException) -> str:
    """What a failed ``torch.load(weights_only=True)`` means, in words (never torch's advice to turn the
    ``weights_only`` safety off)."""
    import pickle

    if isinstance(exc, EOFError):
        return "empty or truncated"
    if isinstance(exc, pickle.UnpicklingError):
        return "not a torch file, or it holds objects other than tensors and plain values, which are never loaded"
    if isinstance(exc, RuntimeError) and "zip archive" in str(exc):
        return "truncated or damaged: not a complete torch archive"
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or type(exc).__name__}"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first[:200]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``; never arbitrary pickles)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DifferError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DifferError(
            f"{path}: not a loadable checkpoint ({load_problem(exc)}); use a checkpoint written by `differ train` "
            "(a run restarts from scratch once its damaged last.pt is moved away)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise DifferError(
            f"{path}: not a differ training checkpoint (no '{FORMAT}' format tag); official DIFFER weights are "
            "converted with `python -m differ_core.convert_official`"
        )
    return ckpt


def load_model_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Strict load that turns key/shape mismatches into one clear DifferError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise DifferError(
            f"{source}: weights do not fit this model (another architecture or dataset?): "
            f"{len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. {unexpected[:3]}, "
            f"{len(shapes)} shape mismatches e.g. {shapes[:3]}"
        )
    model.load_state_dict(state, strict=True)


def check_compatible(
    ckpt: dict[str, Any], source: str, *, backbone: str, dataset: str, num_classes: int, num_cameras: int,
    text_dim: int | None, img_size: tuple[int, int],
) -> None:  # fmt: skip
    """Refuse to resume from a checkpoint of another backbone, dataset or label space, naming the difference."""
    have = {
        "backbone": ckpt.get("backbone"),
        "dataset": ckpt.get("dataset"),
        "num_classes": ckpt.get("num_classes"),
        "num_cameras": ckpt.get("num_cameras"),
        "text_dim": ckpt.get("text_dim"),
        "img_size": tuple(ckpt.get("img_size") or ()),
    }
    want = {
        "backbone": backbone,
        "dataset": dataset,
        "num_classes": num_classes,
        "num_cameras": num_cameras,
        "text_dim": text_dim,
        "img_size": tuple(img_size),
    }
    diffs = [f"{k}: checkpoint {have[k]!r} vs run {want[k]!r}" for k in want if have[k] != want[k]]
    if diffs:
        raise DifferError(
            f"{source}: checkpoint is from another architecture or dataset ({'; '.join(diffs)}); use a new "
            "run.name or run.resume=never"
        )
