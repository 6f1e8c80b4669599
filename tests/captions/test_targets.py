"""Caption targets (captions.targets) on a tree in the real CCVID layout: the writer captions one frame per
tracklet (or every k-th), every frame resolves to its tracklet's caption, and training's text gather maps each frame
to its target's feature row through an index (no per-frame copy)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from captions import caption_dataset, caption_status, read_current_captions
from captions.features.encoders import TextEncoder
from captions.targets import caption_keys, caption_target_rows, resolve_mode, target_positions
from data_manifests.registry import make_manifest
from data_manifests.schema import load_manifest
from differ_common.errors import ConfigError
from tests.manifests.manifest_trees import ccvid_video_lists, make_ccvid

PERSPECTIVES = ["biometrics", "clothing"]


class Recorder:
    """A captioner that needs no model: it records the images it was asked for and names them in the caption."""

    name, fingerprint, needs_images, min_batch_size = "fake:recorder", "rec-1", False, 1

    def __init__(self) -> None:
        self.asked: list[str] = []

    def caption(self, images, spec, image_ids):
        self.asked += list(image_ids)
        return [f"{spec.name} of {i}" for i in image_ids]


@pytest.fixture
def ccvid_ws(tmp_path):
    root, work = tmp_path / "data", tmp_path / "work"
    make_ccvid(root, ccvid_video_lists(train_ids=3, tracklets=3, seed=2))
    make_manifest(work, "ccvid", root)
    return work


def _train(work) -> pd.DataFrame:
    m = load_manifest(work, "ccvid")
    return m[m["split"] == "train"].reset_index(drop=True)


def _middle_frames(train: pd.DataFrame) -> set[str]:
    out = set()
    for _, g in train.sort_values("frame").groupby("track_id"):
        out.add(g["image_id"].iloc[(len(g) - 1) // 2])
    return out


def test_the_writer_captions_one_frame_per_tracklet_and_every_frame_resolves_to_it(ccvid_ws):
    train, rec = _train(ccvid_ws), Recorder()
    report = caption_dataset(ccvid_ws, "ccvid", PERSPECTIVES, backend=rec, batch_size=4, show_progress=False)
    n_tracks = train["track_id"].nunique()
    assert set(rec.asked) == _middle_frames(train) and len(rec.asked) == len(PERSPECTIVES) * n_tracks
    assert report.total == dict.fromkeys(PERSPECTIVES, n_tracks)
    status = caption_status(ccvid_ws, "ccvid").set_index("perspective")
    assert status.loc["clothing", "current"] == n_tracks and status.loc["clothing", "missing"] == 0

    caps = read_current_captions(ccvid_ws, "ccvid", ["clothing"]).set_index("image_id")["caption"]
    keys = caption_keys(train, "auto", dataset="ccvid")
    track_of = dict(zip(train["image_id"], train["track_id"], strict=True))
    for key, track in zip(keys, train["track_id"], strict=True):
        assert key in caps.index and track_of[key] == track  # its own tracklet's caption
        assert caps[key] == f"clothing of {key}"
    again = Recorder()  # nothing is missing: a rerun captions nothing
    caption_dataset(ccvid_ws, "ccvid", PERSPECTIVES, backend=again, show_progress=False)
    assert again.asked == []


def test_every_k_captions_positions_0_k_2k_and_frames_share_the_one_before(ccvid_ws):
    train, rec = _train(ccvid_ws), Recorder()
    caption_dataset(
        ccvid_ws, "ccvid", ["clothing"], backend=rec, targets="every_k", every_k=4, show_progress=False
    )
    pos = train.groupby("track_id")["frame"].rank(method="first").astype(int).to_numpy() - 1
    assert set(rec.asked) == set(train["image_id"][pos % 4 == 0])
    t = target_positions(train, "every_k", 4)
    assert (train["track_id"].to_numpy()[t] == train["track_id"].to_numpy()).all()
    assert (pos[t] == (pos // 4) * 4).all()


def test_frame_mode_and_image_datasets_caption_every_row(ccvid_ws):
    train = _train(ccvid_ws)
    assert len(caption_target_rows(train, "frame")) == len(train)
    as_custom = train.assign(dataset="custom")  # auto is per dataset: a custom video set keeps every frame
    assert resolve_mode("auto", "custom") == "frame" and len(caption_target_rows(as_custom, "auto")) == len(
        train
    )
    no_tracks = train.assign(track_id=None)
    assert len(caption_target_rows(no_tracks, "tracklet")) == len(train)
    with pytest.raises(ConfigError, match="caption targets"):
        resolve_mode("clip", "ccvid")


class HashEncoder(TextEncoder):
    """A deterministic offline text encoder: unit vectors seeded by each string's sha256."""

    def __init__(self) -> None:
        self.spec, self.dim, self.device, self.fingerprint, self.batch_size = "hash8", 8, "cpu", "h8", 64

    def _forward(self, texts):
        import torch

        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return torch.from_numpy(np.stack([np.random.default_rng(s).normal(size=8) for s in seeds]))


def test_training_gathers_each_frame_s_tracklet_feature_through_an_index(ccvid_ws):
    from captions.features.tables import encode_dataset
    from differ_core.config import config_from_dict
    from differ_core.data import load_features

    caption_dataset(ccvid_ws, "ccvid", PERSPECTIVES, backend=Recorder(), show_progress=False)
    encode_dataset(ccvid_ws, "ccvid", encoder=HashEncoder(), progress=False)
    train = _train(ccvid_ws)
    cfg = config_from_dict(
        {"data": {"dataset": "ccvid", "workdir": str(ccvid_ws)},
         "text": {"encoder": "hash8", "perspectives": PERSPECTIVES, "caption_targets": "tracklet"}}
    )  # fmt: skip
    feats = load_features(cfg, ccvid_ws, train, log=lambda _m: None)
    n_tracks = train["track_id"].nunique()
    assert feats.shape == (len(train), 2, 8)
    assert all(a.shape[0] == n_tracks for a in feats.arrays)  # one stored row per tracklet, not per frame
    dense = feats.dense().numpy()
    keys = caption_keys(train, "tracklet")
    target_row = {k: i for i, k in enumerate(train["image_id"]) if k in set(keys)}
    for i, key in enumerate(keys):
        assert np.array_equal(dense[i], dense[target_row[key]])
    per_track = pd.DataFrame({"t": train["track_id"], "v": dense[:, 1, 0]}).groupby("t")["v"]
    assert (
        per_track.nunique() == 1
    ).all() and per_track.first().nunique() == n_tracks  # distinct per tracklet
