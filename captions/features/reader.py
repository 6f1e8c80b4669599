"""Training-side reader of the text features of a manifest, aligned to its rows: ``[N, 1 + K, D]``.

:func:`open_text_features` (training): per perspective one array ``[n, D]`` of the committed shards, written
once as a shared memory-mapped file (``W/cache/features/<ds>/<slug(encoder)>/``, float32 or float16;
:mod:`differ_common.shared_array`) and a row → position index; a batch gathers its rows of each perspective
(:class:`TextFeatures`), so no process holds a dense ``[N, 1 + K, D]`` copy. :func:`load_text_features`: the
same values as one dense tensor (interop, small sets, tests).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from differ_common.errors import ConfigError, DataError
from differ_common.perspectives import SUMMARY_PERSPECTIVE
from differ_common.workspace import Workspace, slug

_SHOW = 5  # how many missing keys an error names
CACHE_FORMAT = 1
DTYPES = ("float32", "float16")


def committed_shards(
    workdir: str | Path | None, dataset: str, encoder: str, perspective: str
) -> tuple[list[Path], int]:
    """The committed shard files of one perspective (``meta.json`` order) and the feature dimension; DataError
    naming the command that makes them when there are none."""
    from captions.features.tables import META, read_meta

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
    pdir = ws.feature_perspective_dir(dataset, encoder, perspective)
    paths = [pdir / name for name in info["shards"]]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: listed in {folder / META} but missing; run `differ encode` again")
    return paths, int(meta["dim"])


def read_shards(paths: list[Path], columns: list[str], workdir: str | Path | None, dataset: str,
                encoder: str) -> list[Any]:  # fmt: skip
    """The ``columns`` of each committed shard (pyarrow tables); a damaged shard is quarantined and a DataError
    names the command that recomputes its rows."""
    import pyarrow.parquet as pq

    from differ_common.quarantine import parquet_problem, quarantine

    try:
        return [pq.read_table(p, columns=columns) for p in paths]
    except Exception:  # noqa: BLE001 - find the damaged shard(s); their rows are encoded again by `differ encode`
        pass
    rerun = f"differ encode --dataset {dataset} --encoder {encoder}"
    root = Workspace.at(workdir).features_dir(dataset, encoder)
    bad = [(p, why) for p in paths if (why := parquet_problem(p, columns)) is not None]
    for p, why in bad:
        quarantine(p, root, why, rerun)
    raise DataError(
        f"{root}: {len(bad)} damaged feature shard(s) (e.g. {bad[0][0].name if bad else '?'}) moved to "
        f"{root / '_quarantine'}; run `{rerun}` to recompute their rows"
    )


def read_perspective(
    workdir: str | Path | None, dataset: str, encoder: str, perspective: str
) -> tuple[Any, np.ndarray]:
    """The committed features of one perspective: (image_id array, float32 ``[n, D]``), newest row per image."""
    import pandas as pd

    from captions.features.tables import embeddings_of

    paths, dim = committed_shards(workdir, dataset, encoder, perspective)
    ids: list[Any] = []
    vecs: list[np.ndarray] = []
    for t in read_shards(paths, ["image_id", "embedding"], workdir, dataset, encoder):
        ids.append(t.column("image_id").to_numpy(zero_copy_only=False))
        vecs.append(embeddings_of(t, dim))
    all_ids = np.concatenate(ids) if ids else np.array([], dtype=object)
    all_vecs = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    keep = ~pd.Index(all_ids).duplicated(keep="last")
    return all_ids[keep], all_vecs[keep]


def _slot_keys(
    manifest: Any, slot: int, bio_source: str, caption_ids: np.ndarray | None = None
) -> tuple[bool, np.ndarray]:
    """(is the summary slot, the key of each manifest row for that slot: str(pid), else the image whose captions
    the row uses: ``caption_ids`` or its own image_id)."""
    summary = slot == 0 and bio_source == "summary"
    if summary:
        return summary, manifest["pid"].astype("int64").astype(str).to_numpy()
    if caption_ids is not None:
        keys = np.asarray(caption_ids).astype(str)
        if keys.shape != (len(manifest),):
            raise DataError(f"caption_ids: one image id per manifest row ({len(manifest)}), got {keys.shape}")
        return summary, keys
    return summary, manifest["image_id"].astype(str).to_numpy()


def _check_args(manifest: Any, perspectives: list[str], bio_source: str) -> None:
    if bio_source not in ("image", "summary"):
        raise ConfigError(f"bio_source must be 'image' or 'summary', not {bio_source!r}")
    if not perspectives:
        raise ConfigError("load_text_features needs at least one perspective (the biometric one first)")
    if "image_id" not in manifest.columns or (bio_source == "summary" and "pid" not in manifest.columns):
        raise DataError("the manifest passed to load_text_features lacks image_id (or pid) columns")


def _positions(
    ids: Any, keys: np.ndarray, summary: bool, dataset: str, encoder: str, perspective: str, stored: str
) -> np.ndarray:
    """Position of each key among the stored ``ids``; DataError naming the first keys without a feature."""
    import pandas as pd

    idx = pd.Index(ids).get_indexer(keys)
    lacking = idx < 0
    if lacking.any():
        uniq = list(dict.fromkeys(keys[lacking].tolist()))
        what = "identities (pid)" if summary else "images"
        fix = (
            f"`differ summarize --dataset {dataset}`"
            if summary
            else f"`differ caption --dataset {dataset} --perspectives {perspective}`"
        )
        raise DataError(
            f"{len(uniq)} of {len(set(keys.tolist()))} {what} lack a '{stored}' text feature ({encoder}), "
            f"e.g. {', '.join(uniq[:_SHOW])}; run {fix} then `differ encode --dataset {dataset} --encoder {encoder}`"
        )
    return idx.astype(np.int64)


def load_text_features(
    workdir: str | Path | None,
    dataset: str,
    encoder: str,
    manifest: Any,
    perspectives: list[str],
    bio_source: str = "image",
    caption_ids: np.ndarray | None = None,
) -> Any:
    """Aligned text features ``torch.FloatTensor [len(manifest), len(perspectives), D]`` in manifest row order.

    ``perspectives[0]`` is the biometric slot: with ``bio_source="summary"`` it holds the identity-summary
    feature of each row's ``pid`` instead of the image's own caption feature. ``caption_ids``: the image whose
    captions each row uses (``captions.targets.caption_keys``; default its own). Raises DataError naming the
    first images (or pids) that lack a feature and the command that fills them.
    """
    import torch

    _check_args(manifest, perspectives, bio_source)
    out: np.ndarray | None = None
    for slot, p in enumerate(perspectives):
        summary, keys = _slot_keys(manifest, slot, bio_source, caption_ids)
        stored = SUMMARY_PERSPECTIVE if summary else p
        ids, vecs = read_perspective(workdir, dataset, encoder, stored)
        idx = _positions(ids, keys, summary, dataset, encoder, p, stored)
        if out is None:
            out = np.empty((len(keys), len(perspectives), vecs.shape[1]), dtype=np.float32)
        elif vecs.shape[1] != out.shape[2]:
            raise DataError(
                f"'{stored}' features are {vecs.shape[1]}-d, others {out.shape[2]}-d; rerun `differ encode`"
            )
        out[:, slot] = vecs[idx]
    return torch.from_numpy(out)


class TextFeatures:
    """Text features of N rows × S perspective slots × D, gathered per batch: ``feats[idx]`` is a float32
    ``torch.Tensor [B, S, D]``. Slot ``s`` reads row ``positions[s][i]`` of ``arrays[s]`` (``[n_s, D]``: a
    read-only memory map or an in-memory array, float32 or float16)."""

    def __init__(self, arrays: list[np.ndarray], positions: list[np.ndarray]) -> None:
        if not arrays or len(arrays) != len(positions):
            raise ValueError("TextFeatures needs one position index per array")
        n, dims = len(positions[0]), {int(a.shape[1]) for a in arrays}
        if len(dims) != 1 or any(len(p) != n for p in positions):
            raise ValueError("TextFeatures: arrays of one dimension and position indexes of one length")
        self.arrays, self.positions = list(arrays), [np.asarray(p, dtype=np.int64) for p in positions]

    @classmethod
    def from_dense(cls, feats: Any, dtype: str = "float32") -> TextFeatures:
        """From a dense ``[N, S, D]`` array or tensor (stored as ``dtype``)."""
        a = np.asarray(feats.numpy() if hasattr(feats, "numpy") else feats).astype(dtype)
        rows = np.arange(a.shape[0], dtype=np.int64)
        return cls([np.ascontiguousarray(a[:, s]) for s in range(a.shape[1])], [rows] * a.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.positions[0]), len(self.arrays), int(self.arrays[0].shape[1]))

    @property
    def dtype(self) -> Any:
        """The dtype of a gathered batch (``torch.float32``)."""
        import torch

        return torch.float32

    @property
    def storage_dtype(self) -> str:
        return str(self.arrays[0].dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> Any:
        import torch

        if isinstance(idx, slice):
            rows = np.arange(len(self), dtype=np.int64)[idx]
        else:
            rows = np.asarray(idx.detach().cpu().numpy() if hasattr(idx, "detach") else idx, dtype=np.int64)
        out = np.stack([a[p[rows]] for a, p in zip(self.arrays, self.positions, strict=True)], axis=1)
        return torch.from_numpy(out.astype(np.float32, copy=False))

    def chunks(self, rows: int = 4096) -> Iterator[Any]:
        """The dense float32 tensor in consecutive row blocks."""
        for s in range(0, len(self), rows):
            yield self[slice(s, s + rows)]

    def dense(self) -> Any:
        """The whole ``[N, S, D]`` float32 tensor (small sets and tests only)."""
        import torch

        return torch.cat(list(self.chunks())) if len(self) else torch.zeros(self.shape)


def feature_cache_key(shards: list[Path], perspective: str, dim: int, dtype: str) -> str:
    """sha256 hex of the committed shards (name, bytes, mtime) of a perspective, its dimension and the dtype."""
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{perspective}\0{dim}\0{dtype}\n".encode())
    for p in shards:
        st = os.stat(p)
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def open_perspective(
    workdir: str | Path | None,
    dataset: str,
    encoder: str,
    perspective: str,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, list[str]]:
    """``(read-only memory map [n, D] of dtype, the n ids)`` of one perspective's committed features, newest row
    per id, in the order :func:`read_perspective` gives; written once per shard set (two passes over the shards,
    one shard in memory at a time)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from captions.features.tables import embeddings_of
    from differ_common.shared_array import open_shared_array

    if dtype not in DTYPES:
        raise ConfigError(f"text.feature_dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    shards, dim = committed_shards(workdir, dataset, encoder, perspective)
    ws = Workspace.at(workdir)
    key = feature_cache_key(shards, perspective, dim, dtype)
    path = ws.feature_cache_dir(dataset, encoder) / f"{perspective}-{dtype}-{key[:16]}.npy"
    shard_ids = [t.column("image_id").to_numpy(zero_copy_only=False)
                 for t in read_shards(shards, ["image_id"], workdir, dataset, encoder)]  # fmt: skip
    all_ids = np.concatenate(shard_ids) if shard_ids else np.array([], dtype=object)
    keep = ~pd.Index(all_ids).duplicated(keep="last")
    ids = [str(i) for i in all_ids[keep]]

    def blocks() -> Iterator[np.ndarray]:
        log(f"writing the '{perspective}' text-feature cache {path} ({len(ids)} x {dim} {dtype}), once")
        start = 0
        for p, sid in zip(shards, shard_ids, strict=True):
            mask = keep[start : start + len(sid)]
            start += len(sid)
            if mask.any():
                yield embeddings_of(pq.read_table(p, columns=["embedding"]), dim)[mask].astype(dtype)

    mm, _ = open_shared_array(
        path, key, (len(ids), dim), dtype, blocks, ws.cache_lock(f"features-{slug(dataset)}-{path.stem}"),
        log=log, what="text-feature cache",
    )  # fmt: skip
    return mm, ids


def open_text_features(
    workdir: str | Path | None,
    dataset: str,
    encoder: str,
    manifest: Any,
    perspectives: list[str],
    bio_source: str = "image",
    dtype: str = "float32",
    log: Callable[[str], None] = print,
    caption_ids: np.ndarray | None = None,
) -> TextFeatures:
    """The text features :func:`load_text_features` gives (the same values for float32), as a
    :class:`TextFeatures` over the shared per-perspective caches: only ``perspectives`` are read. Rows that share
    a caption (``caption_ids``) share its feature row: one position index per slot, no copy."""
    _check_args(manifest, perspectives, bio_source)
    arrays, positions = [], []
    for slot, p in enumerate(perspectives):
        summary, keys = _slot_keys(manifest, slot, bio_source, caption_ids)
        stored = SUMMARY_PERSPECTIVE if summary else p
        mm, ids = open_perspective(workdir, dataset, encoder, stored, dtype, log)
        if arrays and mm.shape[1] != arrays[0].shape[1]:
            raise DataError(
                f"'{stored}' features are {mm.shape[1]}-d, others {arrays[0].shape[1]}-d; rerun `differ encode`"
            )
        positions.append(_positions(ids, keys, summary, dataset, encoder, p, stored))
        arrays.append(mm)
    return TextFeatures(arrays, positions)
