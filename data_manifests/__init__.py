"""Dataset adapters (LTCC, PRCC, Celeb-reID-light, CCVID, custom CSV) and the SynthCC generator.

Public names are imported lazily so ``import data_manifests`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_manifest": "data_manifests.registry",
    "DATASETS": "data_manifests.registry",
    "write_manifest": "data_manifests.schema",
    "load_manifest": "data_manifests.schema",
    "validate_manifest": "data_manifests.schema",
    "MANIFEST_COLUMNS": "data_manifests.schema",
    "split_summary": "data_manifests.splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'data_manifests' has no attribute {name!r}")
