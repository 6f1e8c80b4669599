"""Exact, vectorised CC-ReID ranking metrics (CMC, mAP) under the protocols of DESIGN.md §5.

Semantics (as in CAL and DIFFER):

* ``general``: good = same pid and other camera; junk = same pid and same camera.
* ``clothes_changing``: good = same pid, other camera, other clothes; junk = same pid and (same camera or same clothes).
* ``same_clothes``: good = same pid, other camera, same clothes; junk = same pid and (same camera or other clothes).
* ``ignore_camera=True`` drops the camera condition (Celeb-reID-light): in ``general`` every same-pid item is good.

The gallery is ranked by distance (smaller = closer) with ties broken by gallery index (a stable sort). Junk items
are removed from the ranking; AP is the mean of the precision at each good hit; a query's CMC is 1 from its first
good hit on. Queries without a good item are skipped and counted (``num_query - num_valid_query``).

How it is fast: only same-pid gallery items can be good or junk, so the metric needs only their positions in the
ranking. Per chunk of query rows the distances are sorted by value (``np.sort``, SIMD, several times faster than an
argsort), and the stable rank of each same-pid item is found by binary search (+ an exact count of equal distances
at lower gallery index where there are ties). Everything after that is O(#same-pid pairs). Memory is bounded by the
chunk size, and ``dist`` may be a :class:`FeatureDistance` so a 20,000 x 100,000 matrix never exists in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from differ_common.errors import DataError

Mode = Literal["general", "same_clothes", "clothes_changing"]
MODES: tuple[str, ...] = ("general", "same_clothes", "clothes_changing")
_MODE_ALIASES = {"cc": "clothes_changing", "sc": "same_clothes", "standard": "general"}

# elements of one distance chunk (rows x gallery); 4M float32 = 16 MiB per copy
DEFAULT_CHUNK_ELEMENTS = 1 << 22


class EvaluationInputError(DataError, ValueError):
    """Bad input to :func:`evaluate_ranking`; the message names the argument."""


@runtime_checkable
class DistanceSource(Protocol):
    """A [Q, G] distance matrix produced row-chunk by row-chunk (so it never exists in full)."""

    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Distances of queries ``start:stop`` to the whole gallery, float32/64 [stop-start, G]."""
        ...


class FeatureDistance:
    """Euclidean distance between query and gallery features, computed chunk by chunk with torch.

    ``normalize=True`` L2-normalises both sides first (the protocol default: cosine-equivalent ranking).
    """

    def __init__(self, q_feats: Any, g_feats: Any, normalize: bool = True, device: str | None = None) -> None:
        import torch

        q = torch.as_tensor(q_feats)
        g = torch.as_tensor(g_feats)
        if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
            raise EvaluationInputError(
                f"q_feats/g_feats: expected 2-D feature arrays with the same width, got {tuple(q.shape)} and "
                f"{tuple(g.shape)}"
            )
        dev = torch.device(device) if device else q.device
        q = q.to(dev, torch.float32)
        g = g.to(dev, torch.float32)
        if normalize:
            q = torch.nn.functional.normalize(q, dim=1)
            g = torch.nn.functional.normalize(g, dim=1)
        self.q, self.g = q, g
        self.q_sq = (q * q).sum(1)
        self.g_sq = (g * g).sum(1)
        self.shape = (int(q.shape[0]), int(g.shape[0]))

    def rows(self, start: int, stop: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            qc = self.q[start:stop]
            d2 = self.q_sq[start:stop, None] + self.g_sq[None, :] - 2.0 * (qc @ self.g.T)
            return d2.clamp_min_(0.0).sqrt_().cpu().numpy()

    def full(self) -> np.ndarray:
        """The whole matrix (only for small problems)."""
        return self.rows(0, self.shape[0])


@dataclass
class RankingResult:
    """CMC curve (fractions, length ``max_rank``), mAP, and the query counts."""

    cmc: np.ndarray
    mAP: float
    num_valid_query: int
    num_query: int
    mode: str = "general"
    ignore_camera: bool = False
    ap: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # per query, NaN where skipped
    first_hit: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int64), repr=False
    )  # -1 where skipped

    def rank(self, k: int) -> float:
        """Rank-k accuracy (``cmc[k-1]``; the last value if ``k`` > ``max_rank``)."""
        return float(self.cmc[min(k, len(self.cmc)) - 1])

    @property
    def rank1(self) -> float:
        return self.rank(1)

    @property
    def rank5(self) -> float:
        return self.rank(5)

    @property
    def rank10(self) -> float:
        return self.rank(10)

    @property
    def num_skipped(self) -> int:
        return self.num_query - self.num_valid_query

    def as_dict(self) -> dict[str, float | int]:
        """The per-protocol entry of ``metrics.json``."""
        return {
            "rank1": self.rank1,
            "rank5": self.rank5,
            "rank10": self.rank10,
            "mAP": float(self.mAP),
            "num_query": int(self.num_query),
            "num_valid_query": int(self.num_valid_query),
        }


# ----------------------------------------------------------------------------------------------- validation
def _as_1d(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise EvaluationInputError(f"{name}: required, got None")
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise EvaluationInputError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.dtype.kind == "f":
        if np.isnan(a).any():
            raise EvaluationInputError(f"{name}: contains NaN")
    elif a.dtype.kind not in "iubUSO":
        raise EvaluationInputError(f"{name}: expected integer ids, got dtype {a.dtype}")
    return a


def _normalise_mode(mode: str) -> str:
    m = _MODE_ALIASES.get(str(mode).lower(), str(mode).lower())
    if m not in MODES:
        raise EvaluationInputError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return m


def _as_matrix(dist: Any) -> np.ndarray | DistanceSource:
    if isinstance(dist, DistanceSource) and not isinstance(dist, np.ndarray):
        if len(dist.shape) != 2:
            raise EvaluationInputError(f"dist: expected a 2-D distance source, got shape {dist.shape}")
        return dist
    if hasattr(dist, "detach"):
        dist = dist.detach().cpu().numpy()
    d = np.asarray(dist)
    if d.ndim != 2:
        raise EvaluationInputError(
            f"dist: expected a 2-D [num_query, num_gallery] matrix, got shape {d.shape}"
        )
    if d.dtype.kind in "iub":
        d = d.astype(np.float64)
    elif d.dtype == np.float16 or d.dtype.kind != "f":
        if d.dtype.kind != "f":
            raise EvaluationInputError(f"dist: expected real distances, got dtype {d.dtype}")
        d = d.astype(np.float32)
    return d


def _check_chunk(d: np.ndarray, start: int) -> np.ndarray:
    if d.dtype.kind in "iub":
        d = d.astype(np.float64)
    elif d.dtype == np.float16:
        d = d.astype(np.float32)
    if np.isnan(d).any():
        r, c = np.argwhere(np.isnan(d))[0]
        raise EvaluationInputError(f"dist: NaN distance at query {start + int(r)}, gallery {int(c)}")
    # -0.0 and 0.0 compare equal; make them one value so sorting and searching agree bit for bit
    return d + d.dtype.type(0.0)


# ----------------------------------------------------------------------------------------------- core
def _row_chunks(num_q: int, num_g: int, chunk_elements: int) -> Iterator[tuple[int, int]]:
    step = max(1, int(chunk_elements) // max(1, num_g))
    for s in range(0, num_q, step):
        yield s, min(num_q, s + step)


def _classify(
    same_cam: np.ndarray, same_clo: np.ndarray | None, mode: str, ignore_camera: bool
) -> tuple[np.ndarray, np.ndarray]:
    """good / junk flags of same-pid pairs."""
    other_cam = np.ones_like(same_cam) if ignore_camera else ~same_cam
    cam_junk = np.zeros_like(same_cam) if ignore_camera else same_cam
    if mode == "general":
        good = other_cam
    elif mode == "clothes_changing":
        good = other_cam & ~same_clo
    else:  # same_clothes
        good = other_cam & same_clo
    return good, ~good | cam_junk  # every same-pid item that is not good is junk


def classify_gallery(
    q_pid: Any,
    q_camid: Any,
    q_clothes: Any,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    g_clothes: np.ndarray | None,
    mode: str = "general",
    ignore_camera: bool = False,
) -> np.ndarray:
    """Per gallery item of one query: 1 = good, 0 = junk (ignored by the metrics), -1 = wrong identity."""
    mode = _normalise_mode(mode)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    same = g_pids == q_pid
    same_cam = g_camids == q_camid
    same_clo = None if g_clothes is None or mode == "general" else np.asarray(g_clothes) == q_clothes
    good, junk = _classify(same_cam, same_clo, mode, ignore_camera)
    return np.where(same, np.where(good, 1, 0), -1).astype(np.int8)


def _stable_ranks(d: np.ndarray, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, chunk_elements: int):
    """Position of (rows, cols) in each row's stable ascending order: #{d < v} + #{d == v at lower index}."""
    import torch

    c = d.shape[0]
    v = d[rows, cols]
    if v.size == 0:
        return np.zeros(0, np.int64)
    s = np.sort(d, axis=1)
    m = int(counts.max())
    starts = np.cumsum(counts) - counts
    within = np.arange(rows.size) - np.repeat(starts, counts)
    pad = np.empty((c, m), dtype=d.dtype)
    pad[:] = s[:, :1]  # any value from the row; padding results are ignored
    pad[rows, within] = v
    st, pt = torch.from_numpy(s), torch.from_numpy(pad)
    lo = torch.searchsorted(st, pt, right=False).numpy()[rows, within]
    rank = lo.astype(np.int64)
    # s[row, lo] == v (v is in its row); another equal value exists iff the next sorted value equals v too
    nxt = np.minimum(rank + 1, d.shape[1] - 1)
    tied = np.nonzero((rank + 1 < d.shape[1]) & (s[rows, nxt] == v))[0]
    if tied.size:
        g = d.shape[1]
        step = max(1, chunk_elements // max(1, g))
        idx = np.arange(g)
        for b in range(0, tied.size, step):
            t = tied[b : b + step]
            eq = (d[rows[t]] == v[t, None]) & (idx[None, :] < cols[t, None])
            rank[t] += eq.sum(1)
    return rank


def evaluate_ranking(
    dist: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    q_clothes: Any = None,
    g_clothes: Any = None,
    mode: Mode | str = "general",
    ignore_camera: bool = False,
    max_rank: int = 50,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> RankingResult:
    """CMC and mAP of a [Q, G] distance matrix (smaller = closer) under one protocol (DESIGN.md §5).

    ``dist`` is a NumPy array, a torch tensor, or a :class:`DistanceSource` (e.g. :class:`FeatureDistance`)
    evaluated chunk by chunk. Raises :class:`EvaluationInputError` (a ``ValueError`` and ``DataError``) on
    mismatched shapes, NaN distances, missing clothes ids for a clothes-aware mode, or when no query has a good
    gallery item.
    """
    mode = _normalise_mode(mode)
    d_all = _as_matrix(dist)
    num_q, num_g = (int(x) for x in d_all.shape)
    if num_q == 0 or num_g == 0:
        raise EvaluationInputError(f"dist: empty distance matrix of shape {(num_q, num_g)}")
    qp, gp = _as_1d(q_pids, "q_pids"), _as_1d(g_pids, "g_pids")
    qc, gc = _as_1d(q_camids, "q_camids"), _as_1d(g_camids, "g_camids")
    for name, arr, n, side in (
        ("q_pids", qp, num_q, "rows"),
        ("q_camids", qc, num_q, "rows"),
        ("g_pids", gp, num_g, "columns"),
        ("g_camids", gc, num_g, "columns"),
    ):
        if arr.shape[0] != n:
            raise EvaluationInputError(f"{name}: length {arr.shape[0]} does not match dist's {n} {side}")
    qk = gk = None
    if mode != "general":
        if q_clothes is None or g_clothes is None:
            missing = " and ".join(
                n for n, a in (("q_clothes", q_clothes), ("g_clothes", g_clothes)) if a is None
            )
            raise EvaluationInputError(f"{missing}: required for mode={mode!r} (clothes ids of each image)")
        qk, gk = _as_1d(q_clothes, "q_clothes"), _as_1d(g_clothes, "g_clothes")
        if qk.shape[0] != num_q:
            raise EvaluationInputError(f"q_clothes: length {qk.shape[0]} does not match dist's {num_q} rows")
        if gk.shape[0] != num_g:
            raise EvaluationInputError(
                f"g_clothes: length {gk.shape[0]} does not match dist's {num_g} columns"
            )
    if int(max_rank) < 1:
        raise EvaluationInputError(f"max_rank: must be >= 1, got {max_rank}")
    max_rank = int(max_rank)

    # group the gallery by pid: codes shared by query and gallery, gallery indices sorted by (pid, index)
    try:
        _, inv = np.unique(np.concatenate([qp, gp]), return_inverse=True)
    except TypeError as exc:
        raise EvaluationInputError(f"q_pids/g_pids: ids of incomparable types ({exc})") from exc
    q_code, g_code = inv[:num_q], inv[num_q:]
    n_codes = int(inv.max()) + 1
    g_by_pid = np.argsort(g_code, kind="stable")
    pid_count = np.bincount(g_code, minlength=n_codes)
    pid_start = np.cumsum(pid_count) - pid_count

    ap = np.full(num_q, np.nan)
    first_hit = np.full(num_q, -1, dtype=np.int64)
    for r0, r1 in _row_chunks(num_q, num_g, chunk_elements):
        d = d_all.rows(r0, r1) if not isinstance(d_all, np.ndarray) else d_all[r0:r1]
        d = np.asarray(d)
        if d.shape != (r1 - r0, num_g):
            raise EvaluationInputError(
                f"dist: rows {r0}:{r1} have shape {d.shape}, expected {(r1 - r0, num_g)}"
            )
        d = _check_chunk(d, r0)
        c = r1 - r0
        counts = pid_count[q_code[r0:r1]]
        p = int(counts.sum())
        if p == 0:
            continue
        rows = np.repeat(np.arange(c), counts)
        offs = np.arange(p) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = g_by_pid[np.repeat(pid_start[q_code[r0:r1]], counts) + offs]
        qrow = rows + r0
        same_cam = qc[qrow] == gc[cols]
        same_clo = (qk[qrow] == gk[cols]) if qk is not None else None
        good, junk = _classify(same_cam, same_clo, mode, ignore_camera)
        rank = _stable_ranks(d, rows, cols, counts, chunk_elements)

        # order pairs by (row, rank); rows stay grouped with the same counts
        order = np.lexsort((rank, rows))
        rows_s, rank_s = rows[order], rank[order]
        good_s, junk_s = good[order], junk[order]
        row_begin = np.repeat(np.cumsum(counts) - counts, counts)  # first pair of each pair's row (sorted)
        ex_junk = np.concatenate([[0], np.cumsum(junk_s)])
        ex_good = np.concatenate([[0], np.cumsum(good_s)])
        junk_before = ex_junk[:-1] - ex_junk[row_begin]
        kept_rank = rank_s - junk_before  # 0-based position after junk removal
        good_upto = ex_good[1:] - ex_good[row_begin]  # goods so far, inclusive
        gi = np.nonzero(good_s)[0]
        if gi.size == 0:
            continue
        g_rows = rows_s[gi]
        prec = good_upto[gi] / (kept_rank[gi] + 1.0)
        n_good = np.bincount(g_rows, minlength=c)
        ap_sum = np.bincount(g_rows, weights=prec, minlength=c)
        valid = n_good > 0
        ap[r0:r1][valid] = ap_sum[valid] / n_good[valid]
        uniq, first = np.unique(g_rows, return_index=True)
        first_hit[r0 + uniq] = kept_rank[gi[first]]

    valid = first_hit >= 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise EvaluationInputError(
            f"q_pids/g_pids: no query has a good gallery match under mode={mode!r}"
            f"{' with ignore_camera' if ignore_camera else ''} ({num_q} queries, {num_g} gallery items); "
            "check the split, the camera ids and the clothes ids"
        )
    hist = np.bincount(first_hit[valid & (first_hit < max_rank)], minlength=max_rank)[:max_rank]
    cmc = np.cumsum(hist).astype(np.float64) / n_valid
    m_ap = float(np.nansum(ap) / n_valid)
    return RankingResult(
        cmc=cmc,
        mAP=m_ap,
        num_valid_query=n_valid,
        num_query=num_q,
        mode=mode,
        ignore_camera=bool(ignore_camera),
        ap=ap,
        first_hit=first_hit,
    )


def pairwise_distance(q_feats: Any, g_feats: Any, normalize: bool = True) -> np.ndarray:
    """Full Euclidean distance matrix (L2-normalised features by default) as float32 NumPy."""
    return FeatureDistance(q_feats, g_feats, normalize=normalize).full()
