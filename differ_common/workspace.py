"""The workspace folder layout of DESIGN.md §4; every stage gets its paths from here."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKDIR = "./differ-work"


def resolve_workdir(workdir: str | os.PathLike | None = None) -> Path:
    """``workdir`` if given, else ``$DIFFER_WORKDIR``, else ``./differ-work`` (absolute)."""
    w = workdir or os.environ.get("DIFFER_WORKDIR") or DEFAULT_WORKDIR
    return Path(w).expanduser().resolve()


def slug(text: str) -> str:
    """A file-system-safe name for a spec such as ``open_clip:EVA02-B-16@/ckpt/x.pt``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    return s or "default"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, workdir: str | os.PathLike | None = None) -> Workspace:
        return cls(resolve_workdir(workdir))

    # manifests
    def manifest(self, dataset: str) -> Path:
        return self.root / "manifests" / f"{dataset}.parquet"

    def attributes(self, dataset: str) -> Path:
        """Ground-truth attribute table (SynthCC) beside the manifest."""
        return self.root / "manifests" / f"{dataset}.attributes.parquet"

    # captions
    def captions_dir(self, dataset: str) -> Path:
        return self.root / "captions" / dataset

    def perspective_dir(self, dataset: str, perspective: str) -> Path:
        return self.captions_dir(dataset) / f"perspective={perspective}"

    # The leading "_" keeps these files out of ``pd.read_parquet(captions_dir)`` (pyarrow skips "_"/"." names);
    # a plain ``summaries.parquet`` / ``current.json`` there breaks or pollutes the hive-partitioned read.
    def summaries(self, dataset: str) -> Path:
        return self.captions_dir(dataset) / "_summaries.parquet"

    def captions_current(self, dataset: str) -> Path:
        return self.captions_dir(dataset) / "_current.json"

    # features
    def features_dir(self, dataset: str, encoder: str) -> Path:
        return self.root / "features" / dataset / slug(encoder)

    def feature_perspective_dir(self, dataset: str, encoder: str, perspective: str) -> Path:
        return self.features_dir(dataset, encoder) / f"perspective={perspective}"

    # runs
    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / run

    def locks(self) -> Path:
        return self.root / ".locks"
