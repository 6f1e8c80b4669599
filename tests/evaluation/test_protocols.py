"""Per-dataset protocols from a manifest: splits, modes, single-shot trials, tracklets, optional protocols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from differ_common.errors import DataError
from differ_core.evaluation.metrics import EvaluationInputError, evaluate_ranking, pairwise_distance
from differ_core.evaluation.protocols import (
    Protocol,
    RerankOptions,
    build_set,
    dataset_protocols,
    evaluate_protocols,
    protocols_from_manifest,
)


def _manifest(dataset: str, rows: list[tuple]) -> pd.DataFrame:
    """rows: (split, pid, camid, clothes_id[, track_id, frame])."""
    recs = []
    for i, r in enumerate(rows):
        split, pid, cam, clo = r[:4]
        track, frame = (r[4], r[5]) if len(r) > 4 else (None, None)
        recs.append({"image_id": f"{split}/{i:04d}.png", "path": f"/nowhere/{split}/{i:04d}.png",
                     "dataset": dataset, "split": split, "pid": pid, "raw_pid": pid, "camid": cam,
                     "clothes_id": clo, "clothes_key": str(clo), "track_id": track, "frame": frame})  # fmt: skip
    return pd.DataFrame(recs)


def _random_ltcc(dataset: str = "ltcc", n_ids: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n_ids):
        for _ in range(3):
            rows.append(("query", pid, int(rng.integers(0, 3)), pid * 2 + int(rng.integers(0, 2))))
        for _ in range(8):
            rows.append(("gallery", pid, int(rng.integers(0, 3)), pid * 2 + int(rng.integers(0, 2))))
    return _manifest(dataset, rows)


def _direct(man, feats, qs, gs, **kw):
    q, g = man["split"] == qs, man["split"] == gs
    d = pairwise_distance(feats[q.to_numpy()], feats[g.to_numpy()])
    mq, mg = man[q], man[g]
    return evaluate_ranking(d, mq.pid, mg.pid, mq.camid, mg.camid, mq.clothes_id, mg.clothes_id, **kw)


def test_dataset_tables():
    names = lambda ds, **kw: [(p.name, p.query_split, p.mode, p.ignore_camera, p.tracklet)  # noqa: E731
                              for p in dataset_protocols(ds, **kw)]  # fmt: skip
    assert (
        names("ltcc")
        == names("synthcc")
        == [
            ("general", "query", "general", False, False),
            ("clothes_changing", "query", "clothes_changing", False, False),
            ("same_clothes", "query", "same_clothes", False, False),
        ]
    )
    assert names("prcc") == [("same_clothes", "query_same", "same_clothes", False, False),
                             ("clothes_changing", "query_diff", "clothes_changing", False, False)]  # fmt: skip
    ss = [p for p in dataset_protocols("prcc", single_shot=True) if p.single_shot_trials]
    assert [(p.name, p.single_shot_trials) for p in ss] == [("same_clothes_single_shot", 10),
                                                            ("clothes_changing_single_shot", 10)]  # fmt: skip
    assert names("celeb-light") == [("general", "query", "general", True, False)]
    assert [n[-1] for n in names("ccvid")] == [True, True, True]
    assert [p.required for p in dataset_protocols("ltcc")] == [True, True, False]


@pytest.mark.parametrize("dataset", ["ltcc", "synthcc", "custom"])
def test_ltcc_like_equals_direct_evaluation(dataset):
    man = _random_ltcc(dataset)
    feats = np.random.default_rng(1).standard_normal((len(man), 16)).astype(np.float32)
    results, skipped = evaluate_protocols(man, feats)
    assert set(results) | set(skipped) == {"general", "clothes_changing", "same_clothes"}
    for pr in results.values():
        ref = _direct(man, feats, "query", "gallery", mode=pr.protocol.mode)
        np.testing.assert_array_equal(pr.result.cmc, ref.cmc)
        assert pr.result.mAP == ref.mAP and pr.as_dict()["num_query"] == 24


def test_prcc_multi_and_single_shot():
    rng = np.random.default_rng(2)
    rows = [
        (
            "gallery",
            p,
            0,
            p,
        )
        for p in range(10)
        for _ in range(5)
    ]
    rows += [("query_same", p, 1, p) for p in range(10) for _ in range(3)]
    rows += [("query_diff", p, 2, 100 + p) for p in range(10) for _ in range(3)]
    man = _manifest("prcc", rows)
    feats = rng.standard_normal((len(man), 8)).astype(np.float32)
    protos = protocols_from_manifest(man, single_shot=True)
    res, skipped = evaluate_protocols(man, feats, protos, seed=7)
    assert not skipped
    sc = _direct(man, feats, "query_same", "gallery", mode="same_clothes")
    cc = _direct(man, feats, "query_diff", "gallery", mode="clothes_changing")
    assert res["same_clothes"].result.mAP == sc.mAP and res["clothes_changing"].result.mAP == cc.mAP
    # CAL evaluates PRCC with the plain protocol: identical here (B and C are other cameras than A)
    assert _direct(man, feats, "query_diff", "gallery").mAP == cc.mAP
    # single-shot: the mean over 10 seeded galleries of one image per identity
    g_mask = (man["split"] == "gallery").to_numpy()
    q_mask = (man["split"] == "query_diff").to_numpy()
    gm, qm = man[g_mask].reset_index(drop=True), man[q_mask]
    r = np.random.default_rng(7)
    maps, r1s = [], []
    for _ in range(10):
        order = r.permutation(len(gm))
        _, first = np.unique(gm.pid.to_numpy()[order], return_index=True)
        pick = np.sort(order[first])
        assert len(pick) == 10 and sorted(gm.pid[pick]) == list(range(10))
        d = pairwise_distance(feats[q_mask], feats[g_mask][pick])
        one = evaluate_ranking(d, qm.pid, gm.pid[pick], qm.camid, gm.camid[pick], qm.clothes_id,
                               gm.clothes_id[pick], mode="clothes_changing")  # fmt: skip
        maps.append(one.mAP)
        r1s.append(one.rank1)
    assert res["clothes_changing_single_shot"].result.mAP == pytest.approx(np.mean(maps), abs=1e-12)
    assert res["clothes_changing_single_shot"].trials == 10
    # the spread over the draws is reported beside the mean (metrics.json / metrics.parquet)
    entry = res["clothes_changing_single_shot"].as_dict()
    assert entry["mAP_std"] == pytest.approx(np.std(maps), abs=1e-12) and entry["mAP_std"] > 0
    assert entry["rank1_std"] == pytest.approx(np.std(r1s), abs=1e-12) and entry["trials"] == 10
    assert "mAP_std" not in res["clothes_changing"].as_dict()  # multi-shot: one gallery, no spread
    other = evaluate_protocols(man, feats, protos, seed=8)[0]["clothes_changing_single_shot"].result.mAP
    assert other != res["clothes_changing_single_shot"].result.mAP  # the seed matters, and is recorded


def test_celeb_light_ignores_camera():
    rows = [("query", p, 0, 10 * p + k) for p in range(5) for k in range(2)]
    rows += [("gallery", p, 0, 10 * p + 5 + k) for p in range(5) for k in range(4)]  # all "camera 0"
    man = _manifest("celeb-light", rows)
    feats = np.random.default_rng(3).standard_normal((len(man), 8)).astype(np.float32)
    res, _ = evaluate_protocols(man, feats)
    assert list(res) == ["general"] and res["general"].result.num_valid_query == 10
    with pytest.raises(EvaluationInputError, match="no query has a good gallery match"):
        evaluate_protocols(
            man, feats, [Protocol("general", "query")]
        )  # without ignore_camera nothing matches


def test_ccvid_tracklets_average_frames():
    rows, k = [], 0
    for pid in range(4):
        for t, (split, cam, clo) in enumerate([("query", 0, 2 * pid), ("gallery", 1, 2 * pid),
                                               ("gallery", 2, 2 * pid + 1), ("query", 1, 2 * pid + 1)]):  # fmt: skip
            for f in range(3):
                rows.append((split, pid, cam, clo, f"s1/{pid:03d}_{t:02d}", f))
                k += 1
    man = _manifest("ccvid", rows)
    feats = np.random.default_rng(4).standard_normal((len(man), 6)).astype(np.float32)
    q = build_set(man, feats, "query", tracklet=True)
    assert len(q) == 8 and q.ids[0] == "s1/000_00"
    m = (man["track_id"] == "s1/000_00").to_numpy()
    np.testing.assert_allclose(q.feats[0], feats[m].mean(0), rtol=1e-6)
    res, skipped = evaluate_protocols(man, feats)
    assert res["general"].protocol.tracklet and res["general"].result.num_query == 8
    g = build_set(man, feats, "gallery", tracklet=True)
    ref = evaluate_ranking(pairwise_distance(q.feats, g.feats), q.pids, g.pids, q.camids, g.camids, q.clothes,
                           g.clothes, mode="clothes_changing")  # fmt: skip
    assert res["clothes_changing"].result.mAP == ref.mAP


def test_optional_protocol_skipped_required_raises():
    # every gallery image of a pid wears the query's clothes: CC has no valid query
    rows = [("query", p, 0, p) for p in range(4)] + [("gallery", p, 1, p) for p in range(4) for _ in range(2)]
    feats = np.random.default_rng(5).standard_normal((12, 4)).astype(np.float32)
    with pytest.raises(EvaluationInputError, match="protocol 'clothes_changing'"):
        evaluate_protocols(_manifest("ltcc", rows), feats)
    res, skipped = evaluate_protocols(_manifest("custom", rows), feats)
    assert (
        set(res) == {"general", "same_clothes"}
        and "no query has a good gallery match" in skipped["clothes_changing"]
    )


def test_rerank_option_and_bad_inputs():
    man = _random_ltcc("ltcc", n_ids=6)
    feats = np.random.default_rng(6).standard_normal((len(man), 8)).astype(np.float32)
    plain, _ = evaluate_protocols(man, feats)
    rr, _ = evaluate_protocols(man, feats, rerank=RerankOptions(k1=4, k2=2, lambda_value=1.0))
    for name in plain:  # lambda = 1: the original ranking, the same metrics
        np.testing.assert_allclose(rr[name].result.cmc, plain[name].result.cmc)
        assert rr[name].result.mAP == pytest.approx(plain[name].result.mAP, abs=1e-12)
    rr0, _ = evaluate_protocols(man, feats, rerank=RerankOptions(k1=4, k2=2, lambda_value=0.0))
    assert any(rr0[n].result.mAP != plain[n].result.mAP for n in plain)
    with pytest.raises(DataError, match="features"):
        evaluate_protocols(man, feats[:-1])
    bad = feats.copy()
    bad[3] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        evaluate_protocols(man, bad)
    with pytest.raises(DataError, match="no query/gallery splits"):
        protocols_from_manifest(man[man.split == "gallery"])
