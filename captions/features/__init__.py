"""The text-feature stage: text encoders, the feature tables they fill, the reader training gathers from, import /
export in the official release format, and plots.

Modules: ``encoders`` (``ENCODERS``, ``load_encoder``), ``clip_checkpoints`` (CLIP files as downloaded),
``tables`` (``encode_dataset``, ``feature_status``), ``reader`` (``open_text_features``, ``load_text_features``),
``interop`` (the release's ``train.npz`` + summary JSON) and ``plot`` (a 2-D map of one perspective).
"""
