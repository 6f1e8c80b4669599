"""Dataset adapters (LTCC, PRCC, Celeb-reID-light, CCVID, custom CSV) and the SynthCC generator.

Public names are imported lazily so ``import data_manifests`` stays cheap.
"""

from __future__ import annotations

from differ_common.lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _EXPORTS)
