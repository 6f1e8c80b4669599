"""Captions and text features: prompts, VLM backends, caption writer, summaries, text encoders, feature tables.

Public names are imported lazily so ``import captions`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PERSPECTIVES": "differ_common.perspectives",
    "load_prompts": "captions.prompts",
    "PerspectiveSpec": "captions.prompts",
    "make_captioner": "captions.backends",
    "caption_dataset": "captions.writer",
    "CaptionReport": "captions.writer",
    "read_current_captions": "captions.table",
    "caption_status": "captions.table",
    "summarize_dataset": "captions.summaries",
    "encode_dataset": "captions.features",
    "EncodeReport": "captions.features",
    "feature_status": "captions.features",
    "load_text_features": "captions.feature_reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'captions' has no attribute {name!r}")
