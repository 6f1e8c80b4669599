"""Plain per-query reference of DESIGN.md §5, in the style of the CC-ReID codebases (CAL's ``evaluate`` /
``evaluate_with_clothes`` + ``compute_ap_cmc``): argsort of the whole matrix, then set operations per query.

It is the oracle for the tests and the "loop style" of ``benchmarks/eval_speed.py``; use
:func:`differ_core.evaluation.evaluate_ranking` for real work. The only change from CAL is a *stable* argsort,
so ties are broken by gallery index as in our protocol.
"""

from __future__ import annotations

import numpy as np


def compute_ap_cmc(
    index: np.ndarray, good_index: np.ndarray, junk_index: np.ndarray
) -> tuple[float, np.ndarray]:
    """AP and CMC of one ranked gallery ``index`` (CAL's function, unchanged)."""
    ap = 0.0
    cmc = np.zeros(len(index))
    mask = np.isin(index, junk_index, invert=True)
    index = index[mask]
    ngood = len(good_index)
    mask = np.isin(index, good_index)
    rows_good = np.argwhere(mask).flatten()
    cmc[rows_good[0] :] = 1.0
    for i in range(ngood):
        d_recall = 1.0 / ngood
        precision = (i + 1) * 1.0 / (rows_good[i] + 1)
        ap = ap + d_recall * precision
    return ap, cmc


def evaluate_loop(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    q_clothes: np.ndarray | None = None,
    g_clothes: np.ndarray | None = None,
    mode: str = "general",
    ignore_camera: bool = False,
    max_rank: int = 50,
    stable: bool = True,
) -> tuple[np.ndarray, float, int]:
    """(CMC[:max_rank], mAP, num_valid_query); raises ValueError when no query is valid."""
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = distmat.shape
    index = np.argsort(distmat, axis=1, kind="stable" if stable else None)
    num_no_gt = 0
    cmc_sum = np.zeros(num_g)
    ap_sum = 0.0
    all_g = np.arange(num_g)
    for i in range(num_q):
        query_index = np.argwhere(g_pids == q_pids[i]).flatten()
        camera_index = all_g if ignore_camera else np.argwhere(g_camids == q_camids[i]).flatten()
        if ignore_camera:
            good_index = query_index
            junk_index = np.array([], dtype=np.int64)
        else:
            good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
            junk_index = np.intersect1d(query_index, camera_index)
        if mode == "clothes_changing":
            cloth_index = np.argwhere(g_clothes == q_clothes[i]).flatten()
            good_index = np.setdiff1d(good_index, cloth_index, assume_unique=True)
            junk_index = np.union1d(junk_index, np.intersect1d(query_index, cloth_index))
        elif mode == "same_clothes":
            cloth_index = np.argwhere(g_clothes == q_clothes[i]).flatten()
            good_index = np.intersect1d(good_index, cloth_index)
            junk_index = np.union1d(junk_index, np.setdiff1d(query_index, cloth_index))
        if good_index.size == 0:
            num_no_gt += 1
            continue
        ap_tmp, cmc_tmp = compute_ap_cmc(index[i], good_index, junk_index)
        cmc_sum += cmc_tmp
        ap_sum += ap_tmp
    n_valid = num_q - num_no_gt
    if n_valid == 0:
        raise ValueError("no valid query")
    cmc = cmc_sum / n_valid
    if max_rank > num_g:
        cmc = np.concatenate([cmc, np.full(max_rank - num_g, cmc[-1])])
    return cmc[:max_rank], ap_sum / n_valid, n_valid
