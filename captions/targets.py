"""Caption targets: which manifest rows are captioned, and whose caption every other frame of a tracklet shares.

A video manifest (``track_id``, ``frame``) has hundreds of near-identical frames per tracklet; captioning each one
is most of the caption stage's cost for nothing. The mode (``text.caption_targets`` / the pipeline's
``caption_targets``, the same value for every stage):

- ``frame``: every row is its own target (image datasets; the behaviour before targets existed);
- ``tracklet``: one target per tracklet, its middle frame (position ``(n - 1) // 2`` in frame order), whose
  captions every frame of the tracklet shares;
- ``every_k``: the frames at positions 0, k, 2k, ... of each tracklet; a frame shares the target at or before it;
- ``auto``: ``tracklet`` for the video datasets (``DatasetInfo.tracklet``: ``ccvid``), else ``frame``.

Rows without a ``track_id`` are always their own target. The caption writer plans only target rows
(:func:`caption_target_rows`); training gathers each row's text features at the position of its target's
features (:func:`caption_keys`: an image id per row, turned into one index array by the feature reader), so no
feature is copied per frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from differ_common.errors import ConfigError

MODES = ("auto", "frame", "tracklet", "every_k")
DEFAULT_EVERY_K = 8


def resolve_mode(mode: str | None, dataset: str) -> str:
    """``frame``, ``tracklet`` or ``every_k`` for ``mode`` (``auto``/None: ``tracklet`` for a tracklet-level
    dataset, ``DatasetInfo.tracklet``, else ``frame``)."""
    m = "auto" if mode is None else str(mode).strip().lower().replace("-", "_")
    if m not in MODES:
        raise ConfigError(f"caption targets {mode!r}: expected one of {', '.join(MODES)}")
    if m == "auto":
        from data_manifests.registry import dataset_traits

        return "tracklet" if dataset_traits(dataset).tracklet else "frame"
    return m


def target_positions(
    manifest: Any, mode: str, every_k: int = DEFAULT_EVERY_K, dataset: str = ""
) -> np.ndarray:
    """For each row of ``manifest`` (positional), the position of the row whose captions it uses."""
    m = resolve_mode(mode, dataset or _dataset_of(manifest))
    n = len(manifest)
    out = np.arange(n, dtype=np.int64)
    if m == "frame" or n == 0 or "track_id" not in manifest.columns:
        return out
    if every_k < 1:
        raise ConfigError(f"caption_every_k must be >= 1 (got {every_k})")
    import pandas as pd

    tracks = manifest["track_id"]
    has = tracks.notna().to_numpy()
    if not has.any():
        return out
    pos = np.flatnonzero(has)
    codes, _ = pd.factorize(tracks.iloc[pos].astype(str))
    frame = manifest["frame"].iloc[pos] if "frame" in manifest.columns else None
    fr = np.zeros(len(pos), np.int64) if frame is None else frame.fillna(0).to_numpy(np.int64)
    order = np.lexsort((pos, fr, codes))  # tracklet, then frame (then manifest order)
    sc = codes[order]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    sizes = np.diff(np.r_[starts, len(sc)])
    first = np.repeat(starts, sizes)  # sorted index of each frame's tracklet start
    rank = np.arange(len(sc)) - first  # frame's position within its tracklet
    if m == "tracklet":
        target_rank = np.repeat((sizes - 1) // 2, sizes)
    else:
        target_rank = (rank // every_k) * every_k
    out[pos[order]] = pos[order[first + target_rank]]
    return out


def _dataset_of(manifest: Any) -> str:
    if "dataset" in manifest.columns and len(manifest):
        return str(manifest["dataset"].iloc[0])
    return ""


def caption_target_rows(manifest: Any, mode: str, every_k: int = DEFAULT_EVERY_K, dataset: str = "") -> Any:
    """The rows of ``manifest`` that are captioned (their own target), in manifest order."""
    t = target_positions(manifest, mode, every_k, dataset)
    return manifest.iloc[np.flatnonzero(t == np.arange(len(t)))]


def caption_keys(manifest: Any, mode: str, every_k: int = DEFAULT_EVERY_K, dataset: str = "") -> np.ndarray:
    """The ``image_id`` whose captions (and text features) each row of ``manifest`` uses."""
    ids = manifest["image_id"].astype(str).to_numpy()
    return ids[target_positions(manifest, mode, every_k, dataset)]
