"""P identities × K images per batch, distributed-aware, reshuffled every epoch from ``(seed, epoch)``.

Per epoch (all ranks compute the same global plan from ``(seed, epoch)``, so no communication is needed):

1. each identity's images are shuffled and cut into chunks of K; an identity with fewer than K images is padded
   by sampling its own images with replacement; a last partial chunk is dropped;
2. batches are formed by repeatedly drawing P distinct identities that still have chunks (randomly) and taking
   one chunk of each, until fewer than P identities remain;
3. the global batch list is dealt round-robin to the ranks, and every rank keeps exactly epoch 0's per-rank
   count (drop-last), so ranks see disjoint images, step in lockstep, and every epoch has the same number of
   steps (how identities run out is random: a rank whose share of an epoch is a batch short repeats its own
   first batch, never another rank's).

``style="official"`` is the epoch of the official ``DistributedRandomIdentitySampler`` (``data/samplers.py``):
every identity's shuffled images are cut into K-chunks (fewer than K: K drawn with replacement; a partial chunk
dropped), all chunks are shuffled together, the list is cut to ``num_samples`` chunks per rank
(``ceil((C - R) / R)`` when ``R`` does not divide the ``C`` chunks, else ``C / R``) and dealt round-robin to the
ranks, and each rank's data loader takes P consecutive chunks per batch, dropping the last partial batch. So an
identity can fill two chunks of one batch, every chunk is used, and every epoch has ``num_samples // P`` steps.

The official code's sampler repeated the same order every epoch (``set_epoch`` is never called); in both styles
here the epoch is part of the seed.

Subclasses change what an epoch draws from (:meth:`IdentityBatchSampler.epoch_groups`, e.g. the frames sampled
per tracklet in :mod:`differ_core.video_sampling`) and the order an identity's items are cut in (``_order``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class IdentityBatchSampler:
    """Yields lists of dataset indices (one P×K batch each) for this rank; ``len()`` = batches per epoch."""

    def __init__(
        self,
        pids: Sequence[int],
        P: int,
        K: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        style: str = "distinct",
    ) -> None:
        if P < 1 or K < 1:
            raise ValueError(f"P and K must be >= 1 (got P={P}, K={K})")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.P, self.K, self.seed = int(P), int(K), int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        if style not in ("distinct", "official"):
            raise ValueError(f"sampler style {style!r}: expected 'distinct' or 'official'")
        self.style = style
        groups: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            groups[int(pid)].append(i)
        self.groups = {pid: np.asarray(idx, dtype=np.int64) for pid, idx in sorted(groups.items())}
        if len(self.groups) < self.P:
            raise ValueError(
                f"sampler.P={self.P} identities per batch but the training set has only {len(self.groups)}"
            )
        self.epoch = 0
        self.start_batch = 0  # batches of the current epoch already consumed (resume)
        # steps per epoch are fixed to epoch 0's count (see the module docstring)
        if style == "official":
            self._len = self._official_chunks_per_rank() // self.P
        else:
            self._len = len(self._global_batches(0)) // self.num_replicas

    # ---- what an epoch draws from (subclasses: a different item set per epoch, another order)
    def epoch_groups(self, epoch: int) -> dict[int, np.ndarray]:
        """Each identity's dataset indices that ``epoch`` draws from (here: all of them, every epoch)."""
        return self.groups

    def _order(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An identity's items in the order they are cut into K-chunks (here: a random permutation)."""
        return rng.permutation(idx)

    # ---- plan
    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 0x1D5])
        groups = self.epoch_groups(epoch)
        chunks: dict[int, list[np.ndarray]] = {}
        for pid, idx in groups.items():
            if len(idx) < self.K:
                first = self._order(idx, rng)  # drawn before the padding
                idx = np.concatenate([first, rng.choice(idx, self.K - len(idx), replace=True)])
            else:
                idx = self._order(idx, rng)
            n = len(idx) // self.K
            chunks[pid] = [idx[j * self.K : (j + 1) * self.K] for j in range(n)]
        available = [pid for pid in groups if chunks[pid]]
        batches: list[np.ndarray] = []
        while len(available) >= self.P:
            chosen = rng.choice(len(available), self.P, replace=False)
            batch = [chunks[available[c]].pop() for c in chosen]
            batches.append(np.concatenate(batch))
            available = [pid for pid in available if chunks[pid]]
        return batches

    def _chunks(self, rng: np.random.Generator, groups: dict[int, np.ndarray]) -> list[np.ndarray]:
        """Every identity's images shuffled and cut into K-chunks (padded with replacement when fewer than K)."""
        chunks: list[np.ndarray] = []
        for idx in groups.values():
            if len(idx) < self.K:
                idx = rng.choice(idx, self.K, replace=True)
            idx = self._order(idx, rng)
            chunks += [idx[j * self.K : (j + 1) * self.K] for j in range(len(idx) // self.K)]
        return chunks

    def _official_chunks_per_rank(self) -> int:
        """``num_samples // K`` of the official sampler: the chunks each rank gets per epoch."""
        n = sum(max(len(idx), self.K) // self.K for idx in self.epoch_groups(0).values())
        r = self.num_replicas
        return math.ceil((n - r) / r) if n % r else n // r

    def _official_plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 0x0FF])
        chunks = self._chunks(rng, self.epoch_groups(epoch))
        order = rng.permutation(len(chunks))
        per_rank = self._official_chunks_per_rank()
        mine = [chunks[i] for i in order[: per_rank * self.num_replicas]][self.rank :: self.num_replicas]
        return [np.concatenate(mine[b * self.P : (b + 1) * self.P]) for b in range(self._len)]

    def _plan(self, epoch: int) -> list[np.ndarray]:
        if self.style == "official":
            return self._official_plan(epoch)
        mine = self._global_batches(epoch)[self.rank :: self.num_replicas]
        if mine and len(mine) < self._len:
            mine = [mine[i % len(mine)] for i in range(self._len)]
        return mine[: self._len]

    # ---- sampler protocol
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (its own shuffle) and how many of its batches were already consumed."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._plan(self.epoch)[self.start_batch :]:
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same every epoch)."""
        return self._len

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (for inspection and tests)."""
        return [b.tolist() for b in self._plan(epoch)]

    # ---- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "start_batch": self.start_batch,
            "P": self.P,
            "K": self.K,
            "num_replicas": self.num_replicas,
            "style": self.style,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "P", "K"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this run uses {getattr(self, key)}"
                )
        self.set_epoch(int(state["epoch"]), int(state["start_batch"]))
