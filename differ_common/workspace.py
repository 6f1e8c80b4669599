"""The workspace folder layout of docs/design.md §5; every stage gets its paths from here."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKDIR = "./differ-work"
CHECKPOINTS = "checkpoints"


def resolve_workdir(workdir: str | os.PathLike | None = None) -> Path:
    """``workdir`` if given, else ``$DIFFER_WORKDIR``, else ``./differ-work`` (absolute)."""
    w = workdir or os.environ.get("DIFFER_WORKDIR") or DEFAULT_WORKDIR
    return Path(w).expanduser().resolve()


SLUG_MAX = 100  # file names stay far below the 255-byte limit of most file systems, with a prefix or suffix


def slug(text: str) -> str:
    """A file-system-safe name for a spec such as ``open_clip:EVA02-B-16@/ckpt/x.pt``; a long one (local paths)
    keeps its first and last 40 characters around a hash of the whole."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    if len(s) > SLUG_MAX:
        import hashlib

        s = f"{s[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}-{s[-40:]}"
    return s or "default"


def safe_name(kind: str, name: str) -> str:
    """``name`` if it names one entry inside its folder; a ConfigError otherwise (a path separator, ``.``, ``..``,
    empty), so a run, dataset or perspective name can never lead a write outside ``W/runs``, ``W/captions``, ..."""
    from differ_common.errors import ConfigError

    text = str(name)
    if text.strip() in ("", ".", "..") or any(c in text for c in "/\\\0"):
        raise ConfigError(
            f"{kind} name {text!r} is not a plain name (it contains a path separator, or is empty, '.' or '..') "
            f"and would leave its workspace folder; use a name such as {slug(text.replace('..', '')) or 'name'!r}"
        )
    return text


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, workdir: str | os.PathLike | None = None) -> Workspace:
        return cls(resolve_workdir(workdir))

    # manifests
    def manifest(self, dataset: str) -> Path:
        return self.root / "manifests" / f"{safe_name('dataset', dataset)}.parquet"

    def attributes(self, dataset: str) -> Path:
        """Ground-truth attribute table (SynthCC) beside the manifest."""
        return self.root / "manifests" / f"{safe_name('dataset', dataset)}.attributes.parquet"

    # captions
    def captions_dir(self, dataset: str) -> Path:
        return self.root / "captions" / safe_name("dataset", dataset)

    def perspective_dir(self, dataset: str, perspective: str) -> Path:
        return self.captions_dir(dataset) / f"perspective={safe_name('perspective', perspective)}"

    # The leading "_" keeps these files out of ``pd.read_parquet(captions_dir)`` (pyarrow skips "_"/"." names);
    # a plain ``summaries.parquet`` / ``current.json`` there breaks or pollutes the hive-partitioned read.
    def summaries(self, dataset: str) -> Path:
        return self.captions_dir(dataset) / "_summaries.parquet"

    def captions_current(self, dataset: str) -> Path:
        return self.captions_dir(dataset) / "_current.json"

    # features
    def features_dir(self, dataset: str, encoder: str) -> Path:
        return self.root / "features" / safe_name("dataset", dataset) / slug(encoder)

    def feature_perspective_dir(self, dataset: str, encoder: str, perspective: str) -> Path:
        return self.features_dir(dataset, encoder) / f"perspective={safe_name('perspective', perspective)}"

    # caches: decoded images and memory-mapped text features, written once, shared by every rank and run
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def image_cache_dir(self) -> Path:
        """``<name>-<H>x<W>-<key>.npy`` (uint8 ``[N, 3, H, W]``) + ``.json`` header per decoded image list."""
        return self.cache_dir() / "images"

    def feature_cache_dir(self, dataset: str, encoder: str) -> Path:
        """``<perspective>-<dtype>-<key>.npy`` (``[n, D]``) + ``.json`` header per feature perspective."""
        return self.cache_dir() / "features" / safe_name("dataset", dataset) / slug(encoder)

    def cache_lock(self, name: str) -> Path:
        """The lock held while one process writes cache file ``name``."""
        return self.locks() / "cache" / f"{name}.lock"

    # runs
    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / safe_name("run", run)

    def run(self, run: str) -> RunLayout:
        """The file layout of run ``run``."""
        return RunLayout(self.run_dir(run))

    def locks(self) -> Path:
        return self.root / ".locks"


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder, ``W/runs/<run>/`` (or any folder an evaluation writes into)."""

    root: Path

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> RunLayout | None:
        """The run that holds ``<run>/checkpoints/<file>``; None for a checkpoint outside a run folder."""
        ckpt = Path(checkpoint)
        return cls(ckpt.parent.parent) if ckpt.parent.name == CHECKPOINTS else None

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        """Resume state: model, optimizer, scheduler, sampler position, scaler, step."""
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        """The epoch with the best validation score (inference weights only)."""
        return self.checkpoints / "best.pt"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.csv"

    @property
    def val_log(self) -> Path:
        return self.root / "val_log.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def metrics_table(self) -> Path:
        return self.root / "metrics.parquet"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def trackers(self) -> Path:
        """Where experiment trackers (TensorBoard, ...) write."""
        return self.root / "tensorboard"

    @property
    def debug(self) -> Path:
        return self.root / "debug"
