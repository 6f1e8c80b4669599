"""CCVID frame sampling (differ_core.video_sampling) on a tree in the real CCVID layout: each tracklet gives exactly
``frames_per_tracklet`` frames per epoch (CAL's clip rule), another draw every epoch, the same on every rank and
after a resume; an identity's K items come from different tracklets; training uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_manifests.registry import build_manifest
from differ_core.config import config_from_dict
from differ_core.sampler import IdentityBatchSampler
from differ_core.video_sampling import TrackletFrames, TrackletFrameSampler, make_sampler
from tests.manifests.manifest_trees import ccvid_video_lists, make_ccvid


@pytest.fixture(scope="module")
def train_rows(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("ccvid-tree")
    make_ccvid(root, ccvid_video_lists(train_ids=4, tracklets=3))
    m = build_manifest("ccvid", root)
    return m[m["split"] == "train"].reset_index(drop=True)


def _sampler(rows: pd.DataFrame, F: int = 4, stride: int = 2, **kw) -> TrackletFrameSampler:
    args = dict(P=2, K=2, frames_per_tracklet=F, stride=stride, split=0, seed=3)
    args.update(kw)
    return TrackletFrameSampler(rows["pid"].tolist(), rows["track_id"], rows["frame"], **args)


@pytest.mark.parametrize("F,stride", [(4, 2), (8, 4), (3, 1)])
def test_each_tracklet_gives_exactly_F_frames_of_its_own_in_order(train_rows, F, stride):
    plan = TrackletFrames(train_rows["track_id"], train_rows["frame"], F, stride, split=0, seed=0)
    tracks = train_rows["track_id"].to_numpy()
    lengths = train_rows.groupby("track_id").size()
    assert plan.num_pieces == train_rows["track_id"].nunique()
    for epoch in (0, 1):
        rows = plan.rows(epoch)
        assert rows.shape == (plan.num_pieces, F)
        seen = set()
        for r in rows:
            (track,) = set(tracks[r])  # one tracklet per piece
            seen.add(track)
            frames = train_rows["frame"].to_numpy()[r]
            L = lengths[track]
            assert (np.diff(frames) >= 0).all()  # temporal order
            if L >= F * stride:  # CAL: F frames at the stride from a random start
                assert (np.diff(frames) == stride).all()
            elif L >= F:  # one frame from each of F equal segments: all different
                seg = L // F
                assert (frames // seg == np.arange(F)).all()
            else:  # fewer frames than the clip: drawn with replacement
                assert len(set(frames)) <= L
        assert seen == set(tracks)


def test_the_epoch_items_are_the_plan_and_differ_between_epochs(train_rows):
    s = _sampler(train_rows)
    per_epoch = []
    for epoch in (0, 1, 2):
        items = np.sort(np.concatenate(list(s.epoch_groups(epoch).values())))
        assert np.array_equal(items, np.sort(s.plan.rows(epoch).ravel()))
        counts = train_rows["track_id"].to_numpy()[items]
        assert set(pd.Series(counts).value_counts()) == {4}  # exactly F items of every tracklet
        batch_rows = np.concatenate([np.asarray(b) for b in s.batches(epoch)])
        assert np.isin(batch_rows, items).all()  # batches draw from the sampled frames only
        per_epoch.append(items)
    assert not np.array_equal(per_epoch[0], per_epoch[1]) and not np.array_equal(per_epoch[1], per_epoch[2])


@pytest.mark.parametrize("style", ["distinct", "official"])
def test_two_ranks_share_the_plan_and_split_its_batches(train_rows, style):
    r0, r1 = (_sampler(train_rows, num_replicas=2, rank=r, style=style) for r in (0, 1))
    for epoch in (0, 1):
        g0, g1 = r0.epoch_groups(epoch), r1.epoch_groups(epoch)
        assert g0.keys() == g1.keys() and all(np.array_equal(g0[p], g1[p]) for p in g0)
        b0, b1 = r0.batches(epoch), r1.batches(epoch)
        assert len(b0) == len(b1) == len(r0) > 0
        assert b0 != b1


def test_a_resumed_sampler_continues_the_same_epoch(train_rows):
    first = _sampler(train_rows)
    first.set_epoch(2)
    full = list(first)
    state = {**first.state_dict(), "epoch": 2, "start_batch": 2}
    again = _sampler(train_rows)  # a new process: nothing but the state
    again.load_state_dict(state)
    assert list(again) == full[2:]
    assert again.batches(3) == first.batches(3)
    with pytest.raises(ValueError, match="frames_per_tracklet"):
        _sampler(train_rows, F=5).load_state_dict(state)


@pytest.mark.parametrize("style", ["distinct", "official"])
def test_an_identity_s_k_items_come_from_different_tracklets(train_rows, style):
    s = _sampler(train_rows, style=style)
    tracks, pids = train_rows["track_id"].to_numpy(), train_rows["pid"].to_numpy()
    for epoch in range(4):
        for batch in s.batches(epoch):
            for j in range(0, len(batch), s.K):  # one K-chunk of one identity
                chunk = batch[j : j + s.K]
                assert len(set(pids[chunk])) == 1
                assert len(set(tracks[chunk])) == s.K  # every identity here has 3 tracklets >= K


def test_tracklets_are_cut_into_pieces_as_cal_s_dense_sampling():
    tracks = np.repeat([0, 1, 2, 3], [63, 127, 130, 200])
    frames = np.concatenate([np.arange(63), np.arange(127), np.arange(130), np.arange(200)])
    plan = TrackletFrames(tracks, frames, 8, 4, split=64, seed=0)
    pieces = sorted(zip(plan.track_of_piece.tolist(), plan.length.tolist(), strict=True))
    # CAL: n = L // 64 pieces, the last keeping the rest; under 128 frames a tracklet stays whole
    assert pieces == [(0, 63), (1, 127), (2, 64), (2, 66), (3, 64), (3, 64), (3, 72)]
    rows = plan.rows(0)
    assert rows.shape == (7, 8) and len(np.unique(rows)) == 56


def test_make_sampler_samples_frames_only_for_tracklets_with_the_knob(train_rows):
    cfg = config_from_dict({"data": {"frames_per_tracklet": 4}, "sampler": {"P": 2, "K": 2}})
    labels = train_rows["pid"].tolist()
    codes = pd.factorize(train_rows["track_id"])[0]
    assert isinstance(make_sampler(cfg, labels, codes, train_rows["frame"].to_numpy()), TrackletFrameSampler)
    plain = make_sampler(cfg, labels, None, None)
    assert type(plain) is IdentityBatchSampler
    off = config_from_dict({"sampler": {"P": 2, "K": 2}})
    assert type(make_sampler(off, labels, codes, train_rows["frame"].to_numpy())) is IdentityBatchSampler


def test_training_on_a_ccvid_tree_draws_each_epoch_from_its_sampled_frames(tmp_path):
    """A real (tiny) run on the CCVID layout: every step's frames are among that epoch's plan."""
    from data_manifests.registry import make_manifest
    from differ_core.training import train

    root, work = tmp_path / "data", tmp_path / "work"
    make_ccvid(root, ccvid_video_lists(train_ids=5, tracklets=3, seed=1))
    make_manifest(work, "ccvid", root)
    cfg = config_from_dict({
        "data": {"dataset": "ccvid", "workdir": str(work), "img_size": [16, 8], "decode_threads": 1,
                 "mean": [0.5] * 3, "std": [0.25] * 3, "frames_per_tracklet": 3, "frame_stride": 2},
        "model": {"backbone": "resnet18", "pretrained": "random"},
        "losses": {"use": ["id", "triplet"]},
        "schedule": {"epochs": 2, "warmup_epochs": 0},
        "sampler": {"P": 2, "K": 2},
        "run": {"name": "v", "output": str(tmp_path / "run"), "val_ids": 0.0, "progress": False,
                "threads": 1, "debug_batches": True, "log_with": []},
    })  # fmt: skip
    run = train(cfg)
    m = pd.read_parquet(work / "manifests" / "ccvid.parquet")
    tr = m[m["split"] == "train"].reset_index(drop=True)
    plan = TrackletFrames(pd.factorize(tr["track_id"], sort=True)[0], tr["frame"], 3, 2, 64, seed=0)
    lines = (Path(run) / "debug" / "batches-rank0.txt").read_text().splitlines()
    by_epoch: dict[int, set[str]] = {}
    for line in lines:
        _step, epoch, ids = line.split("\t")
        by_epoch.setdefault(int(epoch), set()).update(ids.split(","))
    assert sorted(by_epoch) == [0, 1]
    for epoch, used in by_epoch.items():
        planned = set(tr["image_id"].to_numpy()[plan.rows(epoch).ravel()])
        assert used <= planned and len(used) >= 4
    assert by_epoch[0] != by_epoch[1]
