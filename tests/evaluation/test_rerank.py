"""k-reciprocal re-ranking: a hand-checked case, the original implementation's output, and lambda = 1."""

from __future__ import annotations

import numpy as np
import pytest

from differ_common.errors import DataError
from differ_core.evaluation.metrics import pairwise_distance
from differ_core.evaluation.rerank import re_ranking, rerank_features


def _zhong_reference(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """The widely copied original (Zhong et al.), transcribed unchanged except for a stable argsort."""
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)  # noqa: N806
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            h = int(np.around(k1 / 2.0)) + 1
            candidate_forward_k_neigh_index = initial_rank[candidate, :h]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :h]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2.0 / 3 * len(
                candidate_k_reciprocal_index
            ):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)  # noqa: N806
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe  # noqa: N806
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        ind_non_zero = np.where(V[i, :] != 0)[0]
        ind_images = [inv_index[ind] for ind in ind_non_zero]
        for j in range(len(ind_non_zero)):
            temp_min[0, ind_images[j]] = temp_min[0, ind_images[j]] + np.minimum(
                V[i, ind_non_zero[j]], V[ind_images[j], ind_non_zero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def test_hand_checked_case():
    # points on a line: query at 0, gallery at 1 and 3; k1 = k2 = 1
    q_g, q_q, g_g = np.array([[1.0, 3.0]]), np.zeros((1, 1)), np.array([[0.0, 2.0], [2.0, 0.0]])
    out = re_ranking(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.3)
    # squared distances normalised per row: q -> [0, 1/9, 1]; g0 -> [1/4, 0, 1]; g1 -> [1, 4/9, 0]
    # k-reciprocal sets: q {q, g0}, g0 {q, g0}, g1 {g1}; V rows are softmax(-dist) over those sets
    vq = np.exp([0.0, -1 / 9]) / np.exp([0.0, -1 / 9]).sum()
    v0 = np.exp([-0.25, 0.0]) / np.exp([-0.25, 0.0]).sum()
    inter = np.minimum(vq, v0).sum()
    jac_g0 = 1 - inter / (2 - inter)  # g1 shares nothing with q: Jaccard distance 1
    expected = [0.7 * jac_g0 + 0.3 / 9, 0.7 * 1.0 + 0.3 * 1.0]
    np.testing.assert_allclose(out, [expected], atol=1e-6)
    assert jac_g0 == pytest.approx(0.16504, abs=1e-4)


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (5, 3, 0.0), (4, 1, 0.5), (3, 8, 0.3)])
def test_matches_the_original_implementation(k1, k2, lam):
    rng = np.random.default_rng(k1 * 10 + k2)
    centres = rng.standard_normal((12, 16))
    q = centres[rng.integers(0, 12, 30)] + 0.6 * rng.standard_normal((30, 16))
    g = centres[rng.integers(0, 12, 90)] + 0.6 * rng.standard_normal((90, 16))
    q_g, q_q, g_g = pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g)
    ours = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    ref = _zhong_reference(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(rerank_features(q, g, k1=k1, k2=k2, lambda_value=lam), ours, atol=1e-6)


def test_lambda_one_keeps_the_original_ranking():
    rng = np.random.default_rng(1)
    q, g = rng.standard_normal((25, 8)), rng.standard_normal((70, 8))
    out = rerank_features(q, g, k1=6, k2=3, lambda_value=1.0)
    orig = pairwise_distance(q, g)
    np.testing.assert_array_equal(
        np.argsort(out, axis=1, kind="stable"), np.argsort(orig, axis=1, kind="stable")
    )
    assert not np.array_equal(
        np.argsort(rerank_features(q, g, k1=6, k2=3, lambda_value=0.0), axis=1, kind="stable"),
        np.argsort(orig, axis=1, kind="stable"),
    )


def test_bad_input():
    with pytest.raises(DataError, match="q_q_dist"):
        re_ranking(np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(DataError, match="lambda_value"):
        re_ranking(np.ones((2, 3)), np.ones((2, 2)), np.ones((3, 3)), lambda_value=2)
    with pytest.raises(DataError, match="q_g_dist: contains NaN"):
        re_ranking(np.full((2, 3), np.nan), np.ones((2, 2)), np.ones((3, 3)))
