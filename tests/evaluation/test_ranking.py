"""evaluate_ranking equals the per-query loop reference exactly; bad input is an error naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from differ_core.evaluation.metrics import (
    MODES,
    EvaluationInputError,
    FeatureDistance,
    evaluate_ranking,
    pairwise_distance,
)
from differ_core.testing import evaluate_loop


@st.composite
def problems(draw):
    """A random ranking problem: few ids/cameras/outfits so every branch (junk, skipped, ties) occurs."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q = draw(st.integers(1, 9))
    g = draw(st.integers(1, 24))
    n_pid = draw(st.integers(1, 4))
    n_cam = draw(st.integers(1, 3))
    n_clo = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["float", "ties", "constant", "float64"]))
    if kind == "float":
        dist = rng.random((q, g), dtype=np.float32)
    elif kind == "float64":
        dist = rng.standard_normal((q, g))
    elif kind == "ties":
        dist = rng.integers(0, 4, (q, g)).astype(np.float32)
    else:
        dist = np.zeros((q, g), np.float32)
    ids = {
        "q_pids": rng.integers(0, n_pid, q),
        "g_pids": rng.integers(0, n_pid, g),
        "q_camids": rng.integers(0, n_cam, q),
        "g_camids": rng.integers(0, n_cam, g),
        "q_clothes": rng.integers(0, n_clo, q),
        "g_clothes": rng.integers(0, n_clo, g),
    }
    mode = draw(st.sampled_from(MODES))
    ignore_camera = draw(st.booleans())
    max_rank = draw(st.integers(1, 30))
    chunk = draw(st.sampled_from([1, 7, 25, 1 << 22]))  # 1 element -> one query row per chunk
    return dist, ids, mode, ignore_camera, max_rank, chunk


@settings(
    max_examples=3000,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(problems())
def test_equals_per_query_loop(problem):
    dist, ids, mode, ignore_camera, max_rank, chunk = problem
    try:
        ref = evaluate_loop(dist, **ids, mode=mode, ignore_camera=ignore_camera, max_rank=max_rank)
    except ValueError:  # no valid query: ours must raise too, never return 0.0
        with pytest.raises(EvaluationInputError, match="no query has a good gallery match"):
            evaluate_ranking(
                dist, **ids, mode=mode, ignore_camera=ignore_camera, max_rank=max_rank, chunk_elements=chunk
            )
        return
    r = evaluate_ranking(
        dist, **ids, mode=mode, ignore_camera=ignore_camera, max_rank=max_rank, chunk_elements=chunk
    )
    ref_cmc, ref_map, ref_valid = ref
    assert r.cmc.shape == (max_rank,)
    np.testing.assert_allclose(r.cmc, ref_cmc, atol=1e-6, rtol=0)
    assert abs(r.mAP - ref_map) <= 1e-6
    assert r.num_valid_query == ref_valid
    assert r.num_query == dist.shape[0]
    assert np.all(np.diff(r.cmc) >= 0) and 0.0 <= r.mAP <= 1.0
    # per-query outputs agree with the summary
    assert np.isnan(r.ap).sum() == r.num_query - r.num_valid_query
    assert np.nansum(r.ap) / r.num_valid_query == pytest.approx(r.mAP, abs=1e-12)


def test_hand_checked_case():
    # one query (pid 1, cam 0, clothes 0); gallery ranked by distance 0..5
    dist = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids = np.array([1, 2, 1, 1, 2, 1])
    g_cams = np.array([0, 1, 1, 1, 1, 1])  # item 0 is same camera -> junk
    g_clo = np.array([0, 0, 0, 1, 0, 1])
    q = dict(q_pids=[1], q_camids=[0], q_clothes=[0])
    r = evaluate_ranking(dist, g_pids=g_pids, g_camids=g_cams, g_clothes=g_clo, **q, max_rank=5)
    # after junk removal: [2(x), 1(v), 1(v), 2(x), 1(v)] -> hits at 2, 3, 5 -> AP = (1/2 + 2/3 + 3/5) / 3
    assert r.cmc.tolist() == [0, 1, 1, 1, 1]
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    cc = evaluate_ranking(dist, g_pids=g_pids, g_camids=g_cams, g_clothes=g_clo, **q, mode="clothes_changing")
    # good = other cam, other clothes: items 3, 5; junk: 0, 2 -> ranking [2(x), 1(v), 2(x), 1(v)]
    assert cc.rank1 == 0 and cc.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    sc = evaluate_ranking(dist, g_pids=g_pids, g_camids=g_cams, g_clothes=g_clo, **q, mode="same_clothes")
    # good: item 2 only; junk 0, 3, 5 -> ranking [2(x), 1(v), 2(x)]
    assert sc.cmc[:2].tolist() == [0, 1] and sc.mAP == pytest.approx(1 / 2)
    ic = evaluate_ranking(dist, g_pids=g_pids, g_camids=g_cams, g_clothes=g_clo, **q, ignore_camera=True)
    # every same-pid item is good: [1(v) 2(x) 1(v) 1(v) 2(x) 1(v)]
    assert ic.rank1 == 1 and ic.mAP == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 6) / 4)


def test_ties_broken_by_gallery_index():
    dist = np.zeros((1, 4))
    r = evaluate_ranking(dist, [5], [1, 5, 1, 5], [0], [1, 1, 1, 1])
    assert r.rank1 == 0 and r.first_hit[0] == 1 and r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    r = evaluate_ranking(dist, [5], [5, 1, 1, 5], [0], [1, 1, 1, 1])
    assert r.rank1 == 1


def test_inputs_of_other_types_agree():
    import torch

    rng = np.random.default_rng(3)
    qf, gf = rng.standard_normal((40, 8)), rng.standard_normal((300, 8))
    qp, gp = rng.integers(0, 10, 40), rng.integers(0, 10, 300)
    qc, gc = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    full = pairwise_distance(qf, gf)
    base = evaluate_ranking(full, qp, gp, qc, gc)
    src = evaluate_ranking(FeatureDistance(qf, gf), qp, gp, qc, gc, chunk_elements=1000)
    tens = evaluate_ranking(torch.from_numpy(full), torch.from_numpy(qp), gp, qc, gc)
    strs = evaluate_ranking(full, qp.astype(str), gp.astype(str), qc, gc)
    for other in (src, tens, strs):
        np.testing.assert_array_equal(other.cmc, base.cmc)
        assert other.mAP == base.mAP
    # cosine-equivalent: the ranking by Euclidean distance of normalised features is the ranking by -cosine
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    np.testing.assert_allclose(full**2, 2 - 2 * qn @ gn.T, atol=1e-5)


def _args(**over):
    rng = np.random.default_rng(0)
    a = dict(
        dist=rng.random((3, 5)),
        q_pids=np.array([0, 1, 2]),
        g_pids=np.array([0, 1, 2, 0, 1]),
        q_camids=np.array([0, 0, 0]),
        g_camids=np.array([1, 1, 1, 1, 1]),
        q_clothes=np.array([0, 1, 2]),
        g_clothes=np.array([5, 1, 2, 0, 6]),
    )
    a.update(over)
    return a


@pytest.mark.parametrize(
    "over, mode, needle",
    [
        (dict(q_pids=np.array([0, 1])), "general", "q_pids"),
        (dict(g_pids=np.array([0, 1, 2, 0])), "general", "g_pids"),
        (dict(q_camids=np.array([0, 0, 0, 0])), "general", "q_camids"),
        (dict(g_camids=np.array([1, 1])), "general", "g_camids"),
        (dict(g_clothes=np.array([1, 2])), "clothes_changing", "g_clothes"),
        (dict(q_clothes=np.array([[0, 1, 2]])), "same_clothes", "q_clothes"),
        (dict(q_clothes=None), "clothes_changing", "q_clothes"),
        (dict(g_clothes=None), "same_clothes", "g_clothes"),
        (dict(dist=np.ones(5)), "general", "dist"),
        (dict(dist=np.zeros((0, 5))), "general", "dist"),
        (dict(dist=np.where(np.eye(3, 5) > 0, np.nan, 0.5)), "general", "dist: NaN"),
        (dict(q_pids=np.array([0.0, np.nan, 1.0])), "general", "q_pids"),
        (dict(g_camids=np.array([0, 0, 0, 0, 0])), "general", "no query has a good gallery match"),
        (dict(g_clothes=np.array([0, 1, 2, 0, 1])), "clothes_changing", "no query has a good gallery match"),
        ({}, "sideways", "mode"),
    ],
)
def test_bad_input_names_the_argument(over, mode, needle):
    with pytest.raises(EvaluationInputError, match=needle):
        evaluate_ranking(**_args(**over), mode=mode)


def test_bad_max_rank_and_feature_shapes():
    with pytest.raises(EvaluationInputError, match="max_rank"):
        evaluate_ranking(**_args(), max_rank=0)
    with pytest.raises(EvaluationInputError, match="q_feats/g_feats"):
        FeatureDistance(np.ones((2, 3)), np.ones((2, 4)))


def test_nan_in_a_later_chunk_of_a_distance_source():
    qf = np.ones((6, 4))
    qf[4] = np.nan
    with pytest.raises(EvaluationInputError, match="dist: NaN distance at query 4"):
        evaluate_ranking(
            FeatureDistance(qf, np.ones((3, 4)), normalize=False),
            [0] * 6,
            [0, 0, 0],
            [0] * 6,
            [1, 1, 1],
            chunk_elements=3,
        )
