"""Captions and text features: prompts, VLM backends, caption writer, summaries, text encoders, feature tables.

Public names are imported lazily so ``import captions`` stays cheap.
"""

from __future__ import annotations

from differ_common.lazy import lazy_getattr

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
    "encode_dataset": "captions.features.tables",
    "EncodeReport": "captions.features.tables",
    "feature_status": "captions.features.tables",
    "load_text_features": "captions.features.reader",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
