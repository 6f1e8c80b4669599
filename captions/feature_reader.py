"""Training-side reader: the text features of a manifest as one aligned tensor ``[N, 1 + K, D]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from differ_common.errors import ConfigError, DataError
from differ_common.perspectives import SUMMARY_PERSPECTIVE
from differ_common.workspace import Workspace

_SHOW = 5  # how many missing keys an error names


def read_perspective(
    workdir: str | Path | None, dataset: str, encoder: str, perspective: str
) -> tuple[Any, np.ndarray]:
    """The committed features of one perspective: (image_id array, float32 ``[n, D]``), newest row per image."""
    import pandas as pd
    import pyarrow.parquet as pq

    from captions.features import META, embeddings_of, read_meta

    ws = Workspace.at(workdir)
    folder = ws.features_dir(dataset, encoder)
    meta = read_meta(folder)
    if not meta:
        raise DataError(
            f"{folder / META}: no text features for {dataset} with encoder {encoder}; run "
            f"`differ encode --dataset {dataset} --encoder {encoder}`"
        )
    info = meta.get("perspectives", {}).get(perspective)
    if not info or not info.get("shards"):
        hint = (
            f"`differ summarize --dataset {dataset}`"
            if perspective == SUMMARY_PERSPECTIVE
            else f"`differ caption --dataset {dataset} --perspectives {perspective}`"
        )
        raise DataError(
            f"{folder}: no '{perspective}' features for encoder {encoder}; run {hint} then "
            f"`differ encode --dataset {dataset} --encoder {encoder}`"
        )
    dim = int(meta["dim"])
    ids: list[Any] = []
    vecs: list[np.ndarray] = []
    pdir = ws.feature_perspective_dir(dataset, encoder, perspective)
    for name in info["shards"]:
        path = pdir / name
        if not path.is_file():
            raise DataError(f"{path}: listed in {folder / META} but missing; run `differ encode` again")
        t = pq.read_table(path, columns=["image_id", "embedding"])
        ids.append(t.column("image_id").to_numpy(zero_copy_only=False))
        vecs.append(embeddings_of(t, dim))
    all_ids = np.concatenate(ids) if ids else np.array([], dtype=object)
    all_vecs = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    keep = ~pd.Index(all_ids).duplicated(keep="last")
    return all_ids[keep], all_vecs[keep]


def load_text_features(
    workdir: str | Path | None,
    dataset: str,
    encoder: str,
    manifest: Any,
    perspectives: list[str],
    bio_source: str = "image",
) -> Any:
    """Aligned text features ``torch.FloatTensor [len(manifest), len(perspectives), D]`` in manifest row order.

    ``perspectives[0]`` is the biometric slot: with ``bio_source="summary"`` it holds the identity-summary
    feature of each row's ``pid`` instead of the image's own caption feature. Raises DataError naming the first
    images (or pids) that lack a feature and the command that fills them.
    """
    import pandas as pd
    import torch

    if bio_source not in ("image", "summary"):
        raise ConfigError(f"bio_source must be 'image' or 'summary', not {bio_source!r}")
    if not perspectives:
        raise ConfigError("load_text_features needs at least one perspective (the biometric one first)")
    if "image_id" not in manifest.columns or (bio_source == "summary" and "pid" not in manifest.columns):
        raise DataError("the manifest passed to load_text_features lacks image_id (or pid) columns")
    keys_img = manifest["image_id"].astype(str).to_numpy()
    out: np.ndarray | None = None
    for slot, p in enumerate(perspectives):
        summary = slot == 0 and bio_source == "summary"
        stored = SUMMARY_PERSPECTIVE if summary else p
        keys = manifest["pid"].astype("int64").astype(str).to_numpy() if summary else keys_img
        ids, vecs = read_perspective(workdir, dataset, encoder, stored)
        idx = pd.Index(ids).get_indexer(keys)
        lacking = idx < 0
        if lacking.any():
            uniq = list(dict.fromkeys(keys[lacking].tolist()))
            what = "identities (pid)" if summary else "images"
            fix = (
                f"`differ summarize --dataset {dataset}`"
                if summary
                else f"`differ caption --dataset {dataset} --perspectives {p}`"
            )
            raise DataError(
                f"{len(uniq)} of {len(set(keys.tolist()))} {what} lack a '{stored}' text feature ({encoder}), "
                f"e.g. {', '.join(uniq[:_SHOW])}; run {fix} then `differ encode --dataset {dataset} --encoder {encoder}`"
            )
        if out is None:
            out = np.empty((len(keys), len(perspectives), vecs.shape[1]), dtype=np.float32)
        elif vecs.shape[1] != out.shape[2]:
            raise DataError(
                f"'{stored}' features are {vecs.shape[1]}-d, others {out.shape[2]}-d; rerun `differ encode`"
            )
        out[:, slot] = vecs[idx]
    return torch.from_numpy(out)
