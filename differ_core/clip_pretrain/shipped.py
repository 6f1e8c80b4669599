"""Pre-trained starts shipped as package data (``differ_core/starts/<name>/``), used instead of training them.

A shipped start is the fp16 export of one pre-training: the open_clip config JSON, ``open_clip_model.safetensors``
(both towers; the image tower's timm trunk is read from its ``visual.trunk.*`` keys) and ``start.json``, the record of
how it was made (config, fingerprint, command, seeds, package versions, CPU, the sha256 of each file, the zero-shot
check). ``pretrain:<name>`` resolves to it when the config of that name still has the recorded settings; the files
are checked against their sha256 first. ``differ pretrain <name>`` trains it again in the workspace and says
whether the result is bit-identical to the shipped files (``--export DIR`` writes them).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from differ_common.errors import DataError
from differ_common.fingerprint import sha256_file
from differ_core.clip_pretrain.config import PACKAGES, PretrainConfig
from differ_core.clip_pretrain.train import RECORD as TRAIN_RECORD
from differ_core.clip_pretrain.train import WEIGHTS, PretrainOutput

STARTS = Path(__file__).resolve().parents[1] / "starts"
RECORD = "start.json"


@dataclass(frozen=True)
class ShippedStart(PretrainOutput):
    """The files of a shipped start: a ``PretrainOutput`` whose trunk is read from the open_clip file."""

    record: dict[str, Any] = field(default_factory=dict)

    @property
    def trunk(self) -> Path:
        """The backbone's ``model.pretrained``: the open_clip file (its ``visual.trunk.*`` keys are the trunk)."""
        return self.weights

    def complete(self) -> bool:
        return self.config_json.is_file() and self.weights.is_file()

    def zero_shot(self) -> dict[str, Any]:
        return self.record["zero_shot"]


def shipped_folder(config_name: str, starts: Path | None = None) -> Path:
    return (starts or STARTS) / Path(str(config_name)).stem


def find_shipped(config_name: str, cfg: PretrainConfig, starts: Path | None = None) -> ShippedStart | None:
    """The shipped start of ``config_name`` when one exists and was made with ``cfg``'s settings, else None.

    Files that do not match their recorded sha256 are refused (DataError naming the file and the fix)."""
    folder = shipped_folder(config_name, starts)
    record_path = folder / RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{record_path}: not valid JSON ({exc}); reinstall differ") from None
    if record.get("config") != cfg.model_dump(mode="json"):
        return None  # the config was changed since: train it
    for name, meta in record["files"].items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != meta["sha256"]:
            raise DataError(
                f"{path}: missing or not the shipped file (sha256 differs from {record_path}); reinstall differ, "
                f"or retrain it with `differ pretrain {config_name}`"
            )
    return ShippedStart(folder, record["model_name"], record)


def resolve_start(config_name: str, workdir: str | Path | None, log: Callable[[str], None] = print) -> Any:
    """The files of the pre-training ``config_name``: the shipped start when there is one for its settings,
    else the workspace's pre-training (trained first if missing)."""
    from differ_core.clip_pretrain.config import load_pretrain_config
    from differ_core.clip_pretrain.train import run_pretrain

    cfg = load_pretrain_config(config_name)
    shipped = find_shipped(config_name, cfg)
    if shipped is not None:
        log(f"pre-training {config_name}: the shipped start {shipped.folder}")
        return shipped
    return run_pretrain(cfg, workdir, log=log)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fp16_state(weights: Path) -> dict[str, Any]:
    """A pre-training's weights with floating tensors in float16 (the shipped precision)."""
    from safetensors.torch import load_file

    sd = load_file(str(weights), device="cpu")
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def export_start(out: Any, cfg: PretrainConfig, config_name: str, dest: Path, command: str) -> Path:
    """Write the shipped form of the finished pre-training ``out`` (a ``PretrainOutput``) to ``dest``, atomically."""
    from safetensors.torch import save_file

    from differ_common.fingerprint import package_versions

    dest = Path(dest).expanduser().absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; package data is world-readable
    try:
        save_file(fp16_state(out.weights), str(tmp / WEIGHTS))
        shutil.copyfile(out.config_json, tmp / out.config_json.name)
        trained = json.loads((out.folder / TRAIN_RECORD).read_text())
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        record = {
            "name": config_name,
            "model_name": out.name,
            "fingerprint": cfg.fingerprint(),
            "config": cfg.model_dump(mode="json"),
            "files": files,
            "precision": "float16 (trained in float32)",
            "command": command,
            "seeds": {"generator": cfg.people.seed, "torch": cfg.people.seed},
            "threads": cfg.train.threads,
            "packages": package_versions(*PACKAGES),
            "python": sys.version.split()[0],
            "cpu": cpu_name(),
            "train_seconds": trained.get("seconds"),
            "zero_shot": out.zero_shot(),
            "created": _dt.date.today().isoformat(),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for p in tmp.iterdir():
            os.chmod(p, 0o644)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def compare_with_shipped(out: Any, shipped_dir: Path) -> str:
    """One line: whether the fp16 export of ``out`` equals the shipped weights bit for bit, else how far it is."""
    import torch
    from safetensors.torch import load_file

    shipped = load_file(str(shipped_dir / WEIGHTS), device="cpu")
    mine = fp16_state(out.weights)
    if set(shipped) != set(mine):
        return f"differs from {shipped_dir / WEIGHTS}: other tensor names"
    if all(torch.equal(mine[k], shipped[k]) for k in mine):
        return f"bit-identical to the shipped start ({shipped_dir / WEIGHTS})"
    diff = max(float((mine[k].float() - shipped[k].float()).abs().max()) for k in mine if mine[k].numel())
    return f"differs from the shipped start ({shipped_dir / WEIGHTS}): max abs difference {diff:.3g}"
