"""Frames sampled per tracklet every epoch (video manifests such as CCVID), then P×K identity batches over them.

What CAL does (Simple-CCReID, the video CC-ReID baseline CCVID results follow: ``data/datasets/ccvid.py``,
``data/temporal_transforms.py``, ``configs/default_vid.py``), for a video network that pools a clip into one
feature:

1. once, "dense sampling": each training tracklet of ``L`` frames is cut into ``n = L // 64`` consecutive pieces
   (``SAMPLING_STEP``), the first ``n - 1`` of 64 frames and the last one keeping the rest (64 to 127 frames); a
   tracklet under 128 frames stays one piece;
2. every time a piece is drawn, ``TemporalRandomCrop(size=8, stride=4)`` (``SEQ_LEN``, ``SAMPLING_STRIDE``) picks
   its clip: with at least 8 × 4 frames, 8 frames at stride 4 from a uniformly random start; with 8 to 31 frames,
   the piece cut into 8 segments of ``L // 8`` frames and one random frame of each; with fewer than 8, 8 frames
   drawn with replacement and sorted (Python's global ``random``/NumPy state, so not reproducible per epoch);
3. ``DistributedRandomIdentitySampler`` deals K = 4 pieces per identity (``NUM_INSTANCES``), 16 clips a batch.

What is done here, for an image model where every frame is its own item:

1. the same split into pieces (``data.tracklet_split``, 64; 0 keeps tracklets whole);
2. the same clip rule per piece and epoch (``data.frames_per_tracklet`` frames, ``data.frame_stride``), drawn from
   a generator seeded with ``(seed, epoch)``: every rank computes the same frames without communication, and a
   run resumed at epoch ``e`` draws what an uninterrupted run draws;
3. the epoch's items are those frames (pieces × ``frames_per_tracklet`` rows; a row repeats when its piece is
   shorter than the clip), and the P×K sampler (:class:`~differ_core.sampler.IdentityBatchSampler`, either
   style) draws its batches from them: an identity's sampled frames are cut into K-chunks in a round-robin over
   its tracklets (tracklets in random order, each one's frames shuffled), so the K items of an identity come
   from K different tracklets whenever it has K tracklets with frames left, as CAL's K clips do.

Steps per epoch are fixed (the number of pieces does not change). Only active when the manifest has track ids and
``data.frames_per_tracklet`` is set (:func:`make_sampler`); otherwise every frame is an item every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from differ_core.sampler import IdentityBatchSampler

_PLAN_SALT = 0x7F4A


def _codes(tracks: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Integer codes of tracklet keys (already-integer arrays are kept)."""
    arr = np.asarray(tracks)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    _, codes = np.unique(arr.astype(str), return_inverse=True)
    return codes.astype(np.int64)


class TrackletFrames:
    """The rows of a training set grouped into tracklet pieces, and the frames each epoch takes from each piece.

    ``tracks`` (a key or code per row) and ``frames`` (the frame index per row, the temporal order) are
    row-aligned with the dataset; :meth:`rows` gives dataset indices.
    """

    def __init__(
        self,
        tracks: Sequence[Any] | np.ndarray,
        frames: Sequence[int] | np.ndarray,
        frames_per_tracklet: int,
        stride: int = 4,
        split: int = 64,
        seed: int = 0,
    ) -> None:
        if frames_per_tracklet < 1 or stride < 1 or split < 0:
            raise ValueError(
                f"frames_per_tracklet={frames_per_tracklet} and frame_stride={stride} must be >= 1, "
                f"tracklet_split={split} >= 0"
            )
        codes = _codes(tracks)
        frames = np.asarray(frames, dtype=np.int64)
        if codes.shape != frames.shape or codes.ndim != 1 or not len(codes):
            raise ValueError("TrackletFrames: one track and one frame index per row, at least one row")
        self.F, self.stride = int(frames_per_tracklet), int(stride)
        self.split, self.seed = int(split), int(seed)
        self.order = np.lexsort((frames, codes))  # rows by tracklet, then frame
        sc = codes[self.order]
        t_start = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        t_len = np.diff(np.r_[t_start, len(sc)])
        n = np.maximum(1, t_len // self.split) if self.split else np.ones_like(t_len)
        piece_track = np.repeat(np.arange(len(t_start)), n)
        j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)  # piece number within its tracklet
        step = self.split if self.split else 0
        self.start = t_start[piece_track] + j * step
        last = j == n[piece_track] - 1
        self.length = np.where(last, t_len[piece_track] - j * step, step)
        self.track_of_piece = sc[t_start][piece_track]
        self.track_of_row = codes

    @property
    def num_pieces(self) -> int:
        return len(self.start)

    def offsets(self, epoch: int) -> np.ndarray:
        """``[pieces, F]`` frame positions within each piece for ``epoch`` (CAL's clip rule, module doc)."""
        rng = np.random.default_rng([self.seed, int(epoch), _PLAN_SALT])
        L, F, s = self.length, self.F, self.stride
        u0 = rng.random(len(L))
        U = rng.random((len(L), F))
        ar = np.arange(F, dtype=np.int64)
        begin = np.floor(u0 * (L - (F - 1) * s)).astype(np.int64)  # uniform in 0 .. L - (F-1)s - 1
        strided = begin[:, None] + ar * s
        seg = L // F
        segments = seg[:, None] * ar + np.floor(U * seg[:, None]).astype(np.int64)
        short = np.sort(np.floor(U * L[:, None]).astype(np.int64), axis=1)
        picked = np.where((L >= F)[:, None], segments, short)
        return np.where((L >= F * s)[:, None], strided, picked).astype(np.int64)

    def rows(self, epoch: int) -> np.ndarray:
        """``[pieces, F]`` dataset indices of the frames ``epoch`` trains on, one row per piece."""
        return self.order[self.start[:, None] + self.offsets(epoch)]


class TrackletFrameSampler(IdentityBatchSampler):
    """:class:`~differ_core.sampler.IdentityBatchSampler` over the frames :class:`TrackletFrames` samples each
    epoch, an identity's K items from different tracklets where possible (module doc)."""

    def __init__(
        self,
        pids: Sequence[int],
        tracks: Sequence[Any] | np.ndarray,
        frames: Sequence[int] | np.ndarray,
        P: int,
        K: int,
        frames_per_tracklet: int,
        stride: int = 4,
        split: int = 64,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        style: str = "distinct",
    ) -> None:
        self.plan = TrackletFrames(tracks, frames, frames_per_tracklet, stride, split, seed)
        self.pid_of = np.asarray(pids, dtype=np.int64)
        if len(self.pid_of) != len(self.plan.track_of_row):
            raise ValueError("TrackletFrameSampler: one pid per row")
        self._groups_cache: tuple[int, dict[int, np.ndarray]] | None = None
        super().__init__(pids, P, K, seed, num_replicas, rank, style)

    def epoch_groups(self, epoch: int) -> dict[int, np.ndarray]:
        """Each identity's sampled frame rows of ``epoch`` (pid order)."""
        if self._groups_cache is not None and self._groups_cache[0] == epoch:
            return self._groups_cache[1]
        rows = self.plan.rows(epoch).ravel()
        p = self.pid_of[rows]
        o = np.argsort(p, kind="stable")
        rows, p = rows[o], p[o]
        cut = np.flatnonzero(p[1:] != p[:-1]) + 1
        groups = {int(g[0]): r for g, r in zip(np.split(p, cut), np.split(rows, cut), strict=True)}
        self._groups_cache = (int(epoch), groups)
        return groups

    def _order(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Round-robin over the identity's tracklets (random order), each tracklet's frames shuffled."""
        _, inv = np.unique(self.plan.track_of_row[idx], return_inverse=True)
        inv = inv.reshape(-1)
        track_rank = rng.permutation(int(inv.max()) + 1)[inv]
        o = np.lexsort((rng.random(len(idx)), inv))  # by tracklet, shuffled within
        si = inv[o]
        starts = np.flatnonzero(np.r_[True, si[1:] != si[:-1]])
        pos = np.empty(len(idx), dtype=np.int64)
        pos[o] = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
        return idx[np.lexsort((track_rank, pos))]

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "frames_per_tracklet": self.plan.F,
            "frame_stride": self.plan.stride,
            "tracklet_split": self.plan.split,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"frames_per_tracklet": self.plan.F, "frame_stride": self.plan.stride,
                "tracklet_split": self.plan.split}  # fmt: skip
        for key, value in mine.items():
            if key in state and int(state[key]) != value:
                raise ValueError(f"sampler state has {key}={state[key]} but this run uses {value}")
        super().load_state_dict(state)


def make_sampler(
    cfg: Any,
    labels: Sequence[int],
    tracks: np.ndarray | None,
    frames: np.ndarray | None,
    num_replicas: int = 1,
    rank: int = 0,
) -> IdentityBatchSampler:
    """The training sampler: :class:`TrackletFrameSampler` when the rows have tracklets and
    ``data.frames_per_tracklet`` is set, else the plain P×K sampler over every row."""
    d, s = cfg.data, cfg.sampler
    if d.frames_per_tracklet and tracks is not None and frames is not None:
        return TrackletFrameSampler(
            labels, tracks, frames, s.P, s.K, d.frames_per_tracklet, d.frame_stride, d.tracklet_split,
            cfg.run.seed, num_replicas, rank, style=s.style,
        )  # fmt: skip
    return IdentityBatchSampler(labels, s.P, s.K, cfg.run.seed, num_replicas, rank, style=s.style)
