"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), as used by the CC-ReID codebases.

:func:`re_ranking` has the inputs, outputs and arithmetic of the widely copied reference implementation
(``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)``): squared distances normalised
per row, k-reciprocal neighbour sets with the 2/3 expansion rule, Gaussian-weighted sparse vectors ``V``,
local query expansion over ``k2`` neighbours, and the Jaccard distance mixed with the original one:
``final = (1 - lambda) * jaccard + lambda * original``. ``lambda_value = 1`` therefore keeps the original
ranking. The difference is speed and memory: neighbour lists come from a partial sort, ``V`` is sparse, and the
Jaccard term is gathered per query with array operations instead of a Python loop over non-zeros.
Ties in the neighbour lists are broken by index (deterministic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from differ_common.errors import DataError

# two (Q+G)^2 float32 matrices must fit (2.5 GiB each at the limit); beyond it an error, not an out-of-memory kill
MAX_ITEMS = 25_000


def _top_k(dist: np.ndarray, k: int, rows_per_chunk: int = 1024) -> np.ndarray:
    """Indices of the ``k`` smallest entries of each row, ascending by (distance, index); chunked over rows so
    the temporary index array stays small."""
    if dist.shape[0] > rows_per_chunk:
        return np.concatenate(
            [
                _top_k(dist[s : s + rows_per_chunk], k, rows_per_chunk)
                for s in range(0, dist.shape[0], rows_per_chunk)
            ]
        )
    n = dist.shape[1]
    k = min(k, n)
    if k < n:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), dist.shape).copy()
    vals = np.take_along_axis(dist, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _k_reciprocal_sets(initial_rank: np.ndarray, k: int) -> list[np.ndarray]:
    """For every item i: its k-nearest neighbours j (in rank order) that have i among their own k-nearest."""
    forward = initial_rank[:, : k + 1]
    backward = initial_rank[forward, : k + 1]  # [n, k+1, k+1]
    mask = np.any(backward == np.arange(initial_rank.shape[0])[:, None, None], axis=2)
    return [f[m] for f, m in zip(forward, mask)]


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked [Q, G] distance from the query-gallery, query-query and gallery-gallery distances."""
    q_g = np.asarray(q_g_dist, dtype=np.float32)
    q_q = np.asarray(q_q_dist, dtype=np.float32)
    g_g = np.asarray(g_g_dist, dtype=np.float32)
    if q_g.ndim != 2:
        raise DataError(f"q_g_dist: expected a 2-D [num_query, num_gallery] matrix, got shape {q_g.shape}")
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq):
        raise DataError(f"q_q_dist: expected shape {(nq, nq)}, got {q_q.shape}")
    if g_g.shape != (ng, ng):
        raise DataError(f"g_g_dist: expected shape {(ng, ng)}, got {g_g.shape}")
    if int(k1) < 1 or int(k2) < 1:
        raise DataError(f"k1/k2: must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise DataError(f"lambda_value: must be in [0, 1], got {lambda_value}")
    n = nq + ng
    if n > MAX_ITEMS:
        raise DataError(
            f"re-ranking: {nq} queries + {ng} gallery items exceed {MAX_ITEMS} (it needs an (Q+G)^2 matrix); "
            "evaluate without --rerank"
        )
    for name, a in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
        if not np.isfinite(a).all():
            raise DataError(f"{name}: contains NaN or infinite distances")
    k1, k2 = int(k1), int(k2)

    original = np.empty((n, n), np.float32)
    original[:nq, :nq] = q_q
    original[:nq, nq:] = q_g
    original[nq:, :nq] = q_g.T
    original[nq:, nq:] = g_g
    np.square(original, out=original)
    col_max = original.max(axis=0)
    col_max[col_max == 0] = 1.0
    original /= col_max[None, :]
    original = np.ascontiguousarray(original.T)

    initial_rank = _top_k(original, k1 + 1)
    half = int(np.around(k1 / 2.0))

    # k-reciprocal expansion and Gaussian weights: sparse rows of V (COO triplets)
    v_rows, v_cols, v_vals = [], [], []
    rec_sets = _k_reciprocal_sets(initial_rank, k1)
    half_sets = _k_reciprocal_sets(initial_rank, half)
    member = np.zeros(n, dtype=bool)  # membership of the current k-reciprocal set (cheaper than intersect1d)
    for i in range(n):
        k_rec = rec_sets[i]
        member[k_rec] = True
        expansion = [k_rec]
        for cand in k_rec:
            cset = half_sets[cand]
            if np.count_nonzero(member[cset]) > 2.0 / 3.0 * cset.size:
                expansion.append(cset)
        member[k_rec] = False
        idx = np.unique(np.concatenate(expansion))
        w = np.exp(-original[i, idx])
        v_rows.append(np.full(idx.size, i))
        v_cols.append(idx)
        v_vals.append(w / w.sum())

    from scipy import sparse

    v = sparse.csr_matrix(
        (np.concatenate(v_vals).astype(np.float32), (np.concatenate(v_rows), np.concatenate(v_cols))),
        shape=(n, n),
    )
    if k2 != 1:  # local query expansion: mean of V over each item's k2 nearest neighbours
        nn = initial_rank[:, :k2] if k2 <= initial_rank.shape[1] else _top_k(original, k2)
        kk = nn.shape[1]
        avg = sparse.csr_matrix(
            (np.full(n * kk, 1.0 / kk, np.float32), (np.repeat(np.arange(n), kk), nn.ravel())), shape=(n, n)
        )
        v = (avg @ v).tocsr()
        v.sort_indices()
    v_csc = v.tocsc()
    v_csc.sort_indices()
    original = original[:nq, nq:].copy()

    # Jaccard distance of every query to every item: 1 - sum(min) / (2 - sum(min))
    final = np.empty((nq, ng), np.float32)
    indptr, indices, data = v_csc.indptr, v_csc.indices, v_csc.data
    for i in range(nq):
        lo, hi = v.indptr[i], v.indptr[i + 1]
        cols, vals = v.indices[lo:hi], v.data[lo:hi]
        starts, stops = indptr[cols], indptr[cols + 1]
        lens = stops - starts
        if lens.sum() == 0:
            temp_min = np.zeros(n, np.float32)
        else:
            pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
            mins = np.minimum(np.repeat(vals, lens), data[pos])
            temp_min = np.bincount(indices[pos], weights=mins, minlength=n).astype(np.float32)
        jac = 1.0 - temp_min[nq:] / (2.0 - temp_min[nq:])
        final[i] = jac * (1.0 - lambda_value) + original[i] * lambda_value
    return final


def rerank_features(
    q_feats: Any, g_feats: Any, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, normalize: bool = True
) -> np.ndarray:
    """Re-ranked [Q, G] distance of query and gallery features (Euclidean, L2-normalised by default)."""
    from differ_core.evaluation.metrics import pairwise_distance

    q = np.asarray(q_feats, dtype=np.float32)
    g = np.asarray(g_feats, dtype=np.float32)
    if q.shape[0] + g.shape[0] > MAX_ITEMS:
        raise DataError(
            f"re-ranking: {q.shape[0]} queries + {g.shape[0]} gallery items exceed {MAX_ITEMS}; evaluate without "
            "--rerank"
        )
    return re_ranking(
        pairwise_distance(q, g, normalize),
        pairwise_distance(q, q, normalize),
        pairwise_distance(g, g, normalize),
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
    )
