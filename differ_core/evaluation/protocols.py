"""Per-dataset CC-ReID evaluation protocols (docs/design.md §8) and their evaluation from features + a manifest.

Each dataset's protocols are its ``DatasetInfo.protocols`` (set where its adapter registers in
``data_manifests``); the table shows the built-in ones.

========================  ==============================================================================
dataset                   protocols (query split -> gallery split, mode)
========================  ==============================================================================
ltcc, synthcc             general, clothes_changing, same_clothes (optional: skipped when no query is valid)
prcc                      same_clothes (query_same -> gallery, B->A), clothes_changing (query_diff -> gallery,
                          C->A); multi-shot (whole gallery); ``single_shot=True`` adds ``*_single_shot``: 10
                          seeded trials of a gallery with one random image per identity, metrics mean ± std
celeb-light               general with ``ignore_camera`` (every same-identity gallery image is a match)
ccvid                     general, clothes_changing, same_clothes (optional) at tracklet level: the features
                          of a tracklet's frames are averaged
anything else (custom)    general, clothes_changing and same_clothes (the last two optional); tracklet
                          level when the manifest has track ids
========================  ==============================================================================

Features are L2-normalised and compared with the Euclidean distance (cosine-equivalent ranking); optional
k-reciprocal re-ranking (:mod:`differ_core.evaluation.rerank`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from differ_common.errors import DataError
from differ_core.evaluation.metrics import (
    EvaluationInputError,
    FeatureDistance,
    RankingResult,
    evaluate_ranking,
)

SINGLE_SHOT_TRIALS = 10
SPREAD_METRICS = ("rank1", "rank5", "rank10", "mAP")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: which query split is ranked against which gallery split, and how."""

    name: str
    query_split: str
    gallery_split: str = "gallery"
    mode: str = "general"
    ignore_camera: bool = False
    tracklet: bool = False
    single_shot_trials: int = 0  # 0 = multi-shot (the whole gallery)
    required: bool = True  # an optional protocol with no valid query is skipped, a required one is an error


def dataset_protocols(
    dataset: str, *, single_shot: bool = False, trials: int = SINGLE_SHOT_TRIALS, tracklet: bool | None = None
) -> list[Protocol]:
    """The protocols of ``dataset`` (its ``DatasetInfo.protocols``, module table); ``tracklet`` overrides the
    dataset's ``DatasetInfo.tracklet``. ``single_shot`` adds the protocols' single-shot variants."""
    from data_manifests.registry import dataset_traits

    info = dataset_traits(dataset)
    base = [
        Protocol(s.name, s.query_split, mode=s.mode, ignore_camera=s.ignore_camera, required=s.required)
        for s in info.protocols
    ]
    out = list(base)
    if single_shot:
        out += [
            Protocol(
                f"{p.name}_single_shot",
                p.query_split,
                mode=p.mode,
                ignore_camera=p.ignore_camera,
                single_shot_trials=trials,
                required=s.single_shot == "required",
            )
            for p, s in zip(base, info.protocols)
            if s.single_shot != "none"
        ]
    use_tracks = info.tracklet if tracklet is None else bool(tracklet)
    if use_tracks:
        out = [Protocol(**{**p.__dict__, "tracklet": True}) for p in out]
    return out


def protocols_from_manifest(manifest: Any, *, single_shot: bool = False, trials: int = SINGLE_SHOT_TRIALS):
    """The protocols of the manifest's dataset, restricted to the splits it has (tracklets if it has tracks)."""
    if "dataset" not in manifest.columns or manifest.empty:
        raise DataError("manifest: no rows or no 'dataset' column; rebuild it with `differ manifest`")
    dataset = str(manifest["dataset"].iloc[0])
    has_tracks = "track_id" in manifest.columns and manifest["track_id"].notna().any()
    splits = set(manifest["split"].astype(str))
    protos = dataset_protocols(dataset, single_shot=single_shot, trials=trials, tracklet=bool(has_tracks))
    protos = [p for p in protos if p.query_split in splits and p.gallery_split in splits]
    if not protos:
        raise DataError(
            f"manifest of {dataset!r}: no query/gallery splits for its protocols (has splits {sorted(splits)}); "
            "rebuild it with `differ manifest`"
        )
    return protos


# ----------------------------------------------------------------------------------------------- items
@dataclass
class EvalSet:
    """The items of one side (query or gallery): images, or tracklets with averaged features."""

    feats: np.ndarray  # [N, F] float32
    pids: np.ndarray
    camids: np.ndarray
    clothes: np.ndarray
    ids: list[str]  # image_id, or track_id for tracklets
    paths: list[str]  # an image of each item (the first frame of a tracklet)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> EvalSet:
        return EvalSet(
            self.feats[idx], self.pids[idx], self.camids[idx], self.clothes[idx],
            [self.ids[i] for i in idx], [self.paths[i] for i in idx],
        )  # fmt: skip


TRACK_BLOCK = 16384  # frames summed at a time by the tracklet means


def _finite_or_raise(block: np.ndarray, ids: Any, offset: int, split: str) -> None:
    if not np.isfinite(block).all():
        bad = np.flatnonzero(~np.isfinite(block).all(1))[:3] + offset
        raise DataError(
            f"features: non-finite values for {split} images {[str(ids[i]) for i in bad]}; check the model and "
            "the images"
        )


def tracklet_means(
    features: Any, rows: np.ndarray, codes: np.ndarray, n: int, ids: Any = None, split: str = ""
) -> np.ndarray:
    """``float32 [n, F]``: the mean of ``features[rows]`` per tracklet code (``codes``, row-aligned with ``rows``).

    Summed in float64, ``TRACK_BLOCK`` rows at a time with a sparse (tracklet × row) indicator product, so any
    float dtype and memory-mapped features work and no copy of all the frames is made; non-finite features
    raise DataError naming the images (``ids``, row-aligned with ``rows``)."""
    from scipy import sparse

    sums = np.zeros((n, features.shape[1]), np.float64)
    for s in range(0, len(rows), TRACK_BLOCK):
        block = np.asarray(features[rows[s : s + TRACK_BLOCK]], dtype=np.float64)
        _finite_or_raise(block, ids if ids is not None else rows, s, split)
        c = codes[s : s + TRACK_BLOCK]
        indicator = sparse.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(n, len(c)))
        sums += indicator @ block
    counts = np.bincount(codes, minlength=n)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def build_set(manifest: Any, features: Any, split: str, tracklet: bool = False) -> EvalSet:
    """The rows of ``split`` (``features`` ``[len(manifest), F]``, row-aligned with ``manifest``: an array of any
    float dtype or a memory map); ``tracklet`` averages the frames of each track_id (:func:`tracklet_means`:
    vectorised, in blocks), one item per tracklet with the labels and the first frame's path."""
    import pandas as pd

    feats = features if isinstance(features, np.ndarray) else np.asarray(features)
    if feats.ndim != 2 or feats.shape[0] != len(manifest) or feats.dtype.kind != "f":
        raise DataError(
            f"features: expected [{len(manifest)}, F] float rows aligned with the manifest, got "
            f"{feats.shape} {feats.dtype}"
        )
    mask = (manifest["split"].astype(str) == split).to_numpy()
    idx = np.flatnonzero(mask)
    rows = manifest.iloc[idx].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"manifest: split {split!r} has no rows")
    ids = rows["image_id"].astype(str).to_numpy()
    if not tracklet:
        f = np.asarray(feats[idx], dtype=np.float32)
        _finite_or_raise(f, ids, 0, split)
        return EvalSet(
            f, rows["pid"].to_numpy(np.int64), rows["camid"].to_numpy(np.int64),
            rows["clothes_id"].to_numpy(np.int64), ids.tolist(), rows["path"].astype(str).tolist(),
        )  # fmt: skip
    if rows["track_id"].isna().any():
        bad = rows.loc[rows["track_id"].isna(), "image_id"].head(3).tolist()
        raise DataError(
            f"manifest: tracklet evaluation needs track_id on every {split} row (missing for {bad})"
        )
    codes, uniq = pd.factorize(rows["track_id"].astype(str), sort=True)
    n = len(uniq)
    meta = rows.assign(_t=codes)
    for col in ("pid", "camid", "clothes_id"):
        if (meta.groupby("_t")[col].nunique() > 1).any():
            raise DataError(
                f"manifest: a {split} tracklet has frames with different {col}; fix the list file"
            )
    first = meta.sort_values(["_t", "frame"], kind="stable").groupby("_t", sort=True).head(1)
    return EvalSet(
        tracklet_means(feats, idx, codes.astype(np.int64), n, ids, split), first["pid"].to_numpy(np.int64),
        first["camid"].to_numpy(np.int64), first["clothes_id"].to_numpy(np.int64), [str(t) for t in uniq],
        first["path"].astype(str).tolist(),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class RerankOptions:
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


class _MatrixRows:
    """A full distance matrix seen as a :class:`~differ_core.evaluation.DistanceSource`."""

    def __init__(self, m: np.ndarray) -> None:
        self.m = m
        self.shape = m.shape

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.m[start:stop]


def distance_source(q: EvalSet, g: EvalSet, rerank: RerankOptions | None = None, device: str | None = None):
    """Distances of ``q`` to ``g``: chunked Euclidean of normalised features (computed on ``device``, default
    CPU), or the re-ranked matrix."""
    if rerank is None:
        return FeatureDistance(q.feats, g.feats, normalize=True, device=device)
    from differ_core.evaluation.rerank import rerank_features

    return _MatrixRows(rerank_features(q.feats, g.feats, rerank.k1, rerank.k2, rerank.lambda_value))


@dataclass
class ProtocolResult:
    """The metrics of one protocol, plus what the pictures need (the items and their distances)."""

    protocol: Protocol
    result: RankingResult
    query: EvalSet
    gallery: EvalSet
    distances: Any = field(repr=False, default=None)  # DistanceSource over query x gallery (multi-shot)
    trials: int = 0
    std: dict[str, float] = field(default_factory=dict)  # single-shot: std over the draws of each metric

    def as_dict(self) -> dict[str, float | int]:
        """The metrics; single-shot adds ``<metric>_std`` over its draws and ``trials``."""
        out: dict[str, float | int] = self.result.as_dict()
        if self.trials:
            out.update({f"{k}_std": v for k, v in self.std.items()}, trials=int(self.trials))
        return out


def _single_shot_gallery(g: EvalSet, rng: np.random.Generator) -> np.ndarray:
    """One random gallery item per identity (indices sorted)."""
    order = rng.permutation(len(g))
    _, first = np.unique(g.pids[order], return_index=True)
    return np.sort(order[first])


def evaluate_protocol(
    manifest: Any,
    features: np.ndarray,
    protocol: Protocol,
    *,
    rerank: RerankOptions | None = None,
    seed: int = 0,
    max_rank: int = 50,
    sets: dict[tuple[str, bool], EvalSet] | None = None,
    device: str | None = None,
) -> ProtocolResult:
    """Metrics of one protocol; single-shot protocols average ``single_shot_trials`` seeded trials."""
    cache = sets if sets is not None else {}

    def get(split: str) -> EvalSet:
        key = (split, protocol.tracklet)
        if key not in cache:
            cache[key] = build_set(manifest, features, split, protocol.tracklet)
        return cache[key]

    q, g = get(protocol.query_split), get(protocol.gallery_split)
    kw = dict(mode=protocol.mode, ignore_camera=protocol.ignore_camera, max_rank=max_rank)
    if protocol.single_shot_trials <= 0:
        dist = distance_source(q, g, rerank, device)
        res = evaluate_ranking(dist, q.pids, g.pids, q.camids, g.camids, q.clothes, g.clothes, **kw)
        return ProtocolResult(protocol, res, q, g, dist)
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(protocol.single_shot_trials):
        gs = g.subset(_single_shot_gallery(g, rng))
        dist = distance_source(q, gs, rerank, device)
        runs.append(evaluate_ranking(dist, q.pids, gs.pids, q.camids, gs.camids, q.clothes, gs.clothes, **kw))
    mean = RankingResult(
        cmc=np.mean([r.cmc for r in runs], axis=0),
        mAP=float(np.mean([r.mAP for r in runs])),
        num_valid_query=int(round(float(np.mean([r.num_valid_query for r in runs])))),
        num_query=len(q),
        mode=protocol.mode,
        ignore_camera=protocol.ignore_camera,
        ap=np.nanmean(np.stack([r.ap for r in runs]), axis=0) if len(q) else np.zeros(0),
        first_hit=runs[-1].first_hit,
    )
    per_draw = {k: [float(r.as_dict()[k]) for r in runs] for k in SPREAD_METRICS}
    std = {k: float(np.std(v)) for k, v in per_draw.items()}  # population std over the draws
    return ProtocolResult(protocol, mean, q, g, None, trials=protocol.single_shot_trials, std=std)


def evaluate_protocols(
    manifest: Any,
    features: np.ndarray,
    protocols: list[Protocol] | None = None,
    *,
    rerank: RerankOptions | None = None,
    seed: int = 0,
    max_rank: int = 50,
    device: str | None = None,
) -> tuple[dict[str, ProtocolResult], dict[str, str]]:
    """``({name: result}, {skipped optional protocol: reason})`` for ``features`` row-aligned with ``manifest``.

    A required protocol without a valid query raises :class:`~differ_core.evaluation.EvaluationInputError`.
    """
    import warnings

    protocols = protocols if protocols is not None else protocols_from_manifest(manifest)
    results: dict[str, ProtocolResult] = {}
    skipped: dict[str, str] = {}
    sets: dict[tuple[str, bool], EvalSet] = {}
    for p in protocols:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over all-skipped queries
                results[p.name] = evaluate_protocol(
                    manifest,
                    features,
                    p,
                    rerank=rerank,
                    seed=seed,
                    max_rank=max_rank,
                    sets=sets,
                    device=device,
                )
        except EvaluationInputError as exc:
            if p.required or "no query has a good gallery match" not in str(exc):
                raise EvaluationInputError(f"protocol {p.name!r}: {exc}") from None
            skipped[p.name] = str(exc)
    return results, skipped
