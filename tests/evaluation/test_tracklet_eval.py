"""Tracklet-level evaluation on a tree in the real CCVID layout: one query item per query tracklet, its feature the
mean of its frames' features (any float dtype, memory-mapped, summed in blocks), and the CCVID protocols on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_manifests.registry import build_manifest
from differ_core.evaluation import protocols as protocols_mod
from differ_core.evaluation.protocols import build_set, evaluate_protocols, protocols_from_manifest
from tests.manifests.manifest_trees import ccvid_video_lists, make_ccvid


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("ccvid-eval")
    make_ccvid(root, ccvid_video_lists(train_ids=2, test_ids=4, tracklets=2, seed=5))
    return build_manifest("ccvid", root)


def _oracle(manifest: pd.DataFrame, feats: np.ndarray, split: str) -> pd.DataFrame:
    """Per tracklet of ``split``: the plain mean of its frames (float64), its labels and first frame."""
    rows = manifest[manifest["split"] == split]
    f = pd.DataFrame(feats[rows.index.to_numpy()].astype(np.float64), index=rows["track_id"].to_numpy())
    means = f.groupby(level=0).mean()
    first = rows.sort_values("frame").groupby("track_id").head(1).set_index("track_id")
    return means.join(first[["pid", "camid", "clothes_id", "path"]])


@pytest.mark.parametrize("split", ["query", "gallery"])
def test_one_item_per_tracklet_with_the_mean_of_its_frames(manifest, split):
    feats = np.random.default_rng(0).normal(size=(len(manifest), 6)).astype(np.float32)
    s = build_set(manifest, feats, split, tracklet=True)
    tracks = manifest.loc[manifest["split"] == split, "track_id"]
    assert len(s) == tracks.nunique() == {"query": 4, "gallery": 8}[split]
    assert (
        manifest.loc[manifest["split"] == split].groupby("track_id").size() >= 5
    ).all()  # real multi-frame
    want = _oracle(manifest, feats, split).loc[s.ids]
    np.testing.assert_allclose(s.feats, want[list(range(6))].to_numpy(), rtol=1e-6, atol=1e-6)
    assert s.pids.tolist() == want["pid"].tolist() and s.camids.tolist() == want["camid"].tolist()
    assert s.clothes.tolist() == want["clothes_id"].tolist() and s.paths == want["path"].tolist()


def test_row_order_does_not_matter(manifest):
    feats = np.random.default_rng(3).normal(size=(len(manifest), 4)).astype(np.float32)
    order = np.random.default_rng(4).permutation(len(manifest))
    shuffled = manifest.iloc[order].reset_index(drop=True)
    a = build_set(manifest, feats, "gallery", tracklet=True)
    b = build_set(shuffled, feats[order], "gallery", tracklet=True)
    pos = {t: i for i, t in enumerate(b.ids)}
    idx = [pos[t] for t in a.ids]
    np.testing.assert_allclose(b.feats[idx], a.feats, rtol=1e-6, atol=1e-6)
    assert b.pids[idx].tolist() == a.pids.tolist() and [b.paths[i] for i in idx] == a.paths


def test_memory_mapped_float16_features_in_small_blocks_give_the_same_means(manifest, tmp_path, monkeypatch):
    feats = np.random.default_rng(1).normal(size=(len(manifest), 6)).astype(np.float16)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=feats.shape)
    mm[:] = feats
    mm.flush()
    ro = np.load(tmp_path / "f.npy", mmap_mode="r")
    monkeypatch.setattr(protocols_mod, "TRACK_BLOCK", 7)  # tracklets straddle block boundaries
    s = build_set(manifest, ro, "gallery", tracklet=True)
    want = _oracle(manifest, feats, "gallery").loc[s.ids]
    np.testing.assert_allclose(s.feats, want[list(range(6))].to_numpy(), rtol=1e-6, atol=1e-6)


def test_ccvid_protocols_rank_tracklets(manifest):
    protos = protocols_from_manifest(manifest)
    assert {p.name for p in protos} >= {"general", "clothes_changing"} and all(p.tracklet for p in protos)
    rng = np.random.default_rng(2)
    centre = {pid: rng.normal(size=16) for pid in manifest["pid"].unique()}
    feats = np.stack([centre[p] for p in manifest["pid"]]) + 0.3 * rng.normal(size=(len(manifest), 16))
    results, _ = evaluate_protocols(manifest, feats.astype(np.float32), protos)
    general = results["general"].result
    assert general.num_query == 4 and general.as_dict()["rank1"] == 1.0
    assert results["clothes_changing"].result.num_valid_query == 4  # each query has an other-clothes tracklet


def test_non_finite_frames_are_named(manifest):
    feats = np.zeros((len(manifest), 3), np.float32)
    bad = int(np.flatnonzero((manifest["split"] == "query").to_numpy())[3])
    feats[bad, 1] = np.nan
    with pytest.raises(Exception, match="non-finite.*" + manifest["image_id"].iloc[bad].split("/")[-1]):
        build_set(manifest, feats, "query", tracklet=True)
