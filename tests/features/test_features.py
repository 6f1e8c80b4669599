"""encode_dataset: dedupe, incremental re-encoding, stale-row removal, resumability, dimension guard, layout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from feature_helpers import manifest, write_captions, write_manifest, write_summaries

from captions.features.tables import caption_sha, encode_dataset, feature_status
from differ_common.errors import DataError
from differ_common.perspectives import SUMMARY_PERSPECTIVE
from differ_common.workspace import Workspace

DS = "toy"
IDS = [f"train/{i:03d}_c{1 + i % 2}.png" for i in range(24)]
PIDS = [i // 6 for i in range(24)]
CLOTHING = ["red jacket, blue jeans", "green coat, black trousers", "white shirt and grey shorts"]
POSE = ["walking left", "standing still"]


def _captions(clothing_of=lambda i: CLOTHING[i % 3]):
    return {
        "biometrics": {
            img: f"a {'tall' if PIDS[i] % 2 else 'short'} person, id {PIDS[i]}, view {i % 4}"
            for i, img in enumerate(IDS)
        },
        "clothing": {img: clothing_of(i) for i, img in enumerate(IDS)},
        "pose": {img: POSE[i % 2] for i, img in enumerate(IDS)},
    }


@pytest.fixture
def ws(workdir):
    write_manifest(workdir, DS, manifest(IDS, PIDS, clothes=[p * 3 + i % 3 for i, p in enumerate(PIDS)]))
    write_captions(workdir, DS, _captions())
    write_summaries(
        workdir, DS, {0: "a short person", 1: "a tall person", 2: "a short person", 3: "a tall person"}
    )
    return workdir


def _vectors(workdir, perspective, encoder="minilm"):
    from captions.features.reader import read_perspective

    ids, vecs = read_perspective(workdir, DS, encoder, perspective)
    return dict(zip(ids.tolist(), vecs))


def test_each_distinct_string_is_encoded_once_and_rerun_encodes_nothing(ws, counting):
    enc = counting()
    rep = encode_dataset(ws, DS, encoder=enc, progress=False)
    distinct = {p: len(set(c.values())) for p, c in _captions().items()}
    assert rep.encoded == {**distinct, SUMMARY_PERSPECTIVE: 2}
    assert rep.total == {"biometrics": 24, "clothing": 24, "pose": 24, SUMMARY_PERSPECTIVE: 4}
    # per perspective every string reached the model exactly once
    assert len(enc.seen) == sum(rep.encoded.values())
    assert enc.seen.count(CLOTHING[0]) == 1 and enc.seen.count(POSE[1]) == 1
    # identical strings share one vector
    vec = _vectors(ws, "clothing")
    np.testing.assert_array_equal(vec[IDS[0]], vec[IDS[3]])
    np.testing.assert_allclose(vec[IDS[0]], enc.inner.encode([CLOTHING[0]])[0], atol=1e-5)

    again = counting()
    rep2 = encode_dataset(ws, DS, encoder=again, progress=False)
    assert again.calls == 0 and sum(rep2.encoded.values()) == 0 and sum(rep2.dropped.values()) == 0
    assert rep2.reused == rep2.total


def test_changed_prompt_reencodes_only_changed_rows_of_that_perspective(ws, counting):
    encode_dataset(ws, DS, encoder=counting(), progress=False)
    before = {p: _vectors(ws, p) for p in ("biometrics", "clothing", "pose")}
    # a new clothing prompt: one image gets a new string, one image a string another image already has
    new = _captions()["clothing"]
    new[IDS[0]] = "a yellow raincoat with a hood"
    new[IDS[1]] = CLOTHING[2]
    write_captions(ws, DS, {"clothing": new}, prompt_ids={"clothing": "p-new"})
    enc = counting()
    rep = encode_dataset(ws, DS, encoder=enc, progress=False)
    assert rep.encoded == {"biometrics": 0, "clothing": 1, "pose": 0, SUMMARY_PERSPECTIVE: 0}
    assert enc.seen == ["a yellow raincoat with a hood"]
    assert rep.reused["clothing"] == 23 and rep.dropped["clothing"] == 2
    after = {p: _vectors(ws, p) for p in ("biometrics", "clothing", "pose")}
    for p in ("biometrics", "pose"):
        for img in IDS:
            np.testing.assert_array_equal(after[p][img], before[p][img])
    np.testing.assert_array_equal(after["clothing"][IDS[1]], before["clothing"][IDS[2]])
    assert not np.allclose(after["clothing"][IDS[0]], before["clothing"][IDS[0]])
    st = feature_status(ws, DS, "minilm").set_index("perspective")
    assert st.loc["clothing", "encoded"] == 24 and st.loc["clothing", "stale"] == 0
    assert (st["missing"] == 0).all()
    # the rewrite left exactly the current rows in the shards
    df = pd.read_parquet(Workspace.at(ws).feature_perspective_dir(DS, "minilm", "clothing"))
    assert sorted(df["image_id"]) == sorted(IDS)
    assert set(df["caption_sha"]) == {caption_sha(c) for c in new.values()}


def test_images_leaving_the_manifest_are_dropped(ws, counting):
    encode_dataset(ws, DS, encoder=counting(), progress=False)
    write_manifest(ws, DS, manifest(IDS[:20], PIDS[:20]))
    rep = encode_dataset(ws, DS, encoder=counting(), progress=False)
    assert rep.total["pose"] == 20 and rep.dropped["pose"] == 4 and rep.encoded["pose"] == 0
    assert len(_vectors(ws, "pose")) == 20


def test_a_killed_run_resumes_without_reencoding(ws, counting):
    enc = counting(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(ws, DS, encoder=enc, batch_size=2, progress=False, perspectives=["biometrics"])
    assert enc.calls == 2  # two batches of two strings finished before the "kill"
    folder = Workspace.at(ws).feature_perspective_dir(DS, "minilm", "biometrics")
    assert len(list(folder.glob("_pending-*.parquet"))) == 2
    resumed = counting()
    rep = encode_dataset(ws, DS, encoder=resumed, batch_size=2, progress=False, perspectives=["biometrics"])
    distinct = len(set(_captions()["biometrics"].values()))
    assert rep.encoded["biometrics"] == distinct - 4 == len(resumed.seen)
    assert not set(resumed.seen) & set(enc.seen)
    assert not list(folder.glob("_pending-*")) and not list(folder.glob(".tmp-*"))
    got = _vectors(ws, "biometrics")
    ref = enc.inner.encode([_captions()["biometrics"][i] for i in IDS])
    np.testing.assert_allclose(np.stack([got[i] for i in IDS]), ref, atol=1e-5)


def test_features_of_another_dimension_are_refused(ws, counting, tmp_path):
    from feature_tiny_models import build_tiny_open_clip

    from captions.features.encoders import load_encoder

    encode_dataset(ws, DS, encoder=counting(), progress=False, perspectives=["pose"])
    cfg, ckpt = build_tiny_open_clip(tmp_path / "oc")
    tiny = load_encoder(f"open_clip:{cfg}@{ckpt}", device="cpu")
    write_captions(ws, DS, {"pose": {img: "running fast" for img in IDS}}, prompt_ids={"pose": "p2"})
    folder = Workspace.at(ws).features_dir(DS, "minilm")
    shards = sorted(folder.rglob("shard-*.parquet"))
    with pytest.raises(DataError, match="384-d.*16-d.*never mixed"):
        encode_dataset(ws, DS, encoder=counting_like(tiny, "minilm"), progress=False, perspectives=["pose"])
    assert sorted(folder.rglob("shard-*.parquet")) == shards  # nothing removed or mixed


def counting_like(inner, spec):
    from feature_helpers import CountingEncoder

    return CountingEncoder(inner, spec=spec)


def test_layout_meta_and_pandas_readability(ws, counting):
    encode_dataset(ws, DS, encoder=counting(), progress=False)
    folder = Workspace.at(ws).features_dir(DS, "minilm")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["encoder"] == "minilm" and meta["dim"] == 384 and meta["dtype"] == "float32"
    assert meta["normalized"] is True and meta["captions_fingerprint"]
    assert set(meta["perspectives"]) == {"biometrics", "clothing", "pose", SUMMARY_PERSPECTIVE}
    df = pd.read_parquet(folder / f"perspective={SUMMARY_PERSPECTIVE}")
    assert sorted(df["pid"]) == [0, 1, 2, 3] and sorted(df["image_id"]) == ["0", "1", "2", "3"]
    import pyarrow.parquet as pq

    shard = next((folder / "perspective=clothing").glob("shard-*.parquet"))
    field = pq.read_schema(shard).field("embedding")
    assert str(field.type) in ("fixed_size_list<element: float>[384]", "fixed_size_list<item: float>[384]")
    assert set(pq.read_schema(shard).names) >= {"image_id", "perspective", "caption_sha", "embedding"}


def test_no_captions_is_a_clear_error(workdir):
    with pytest.raises(DataError, match="differ caption"):
        encode_dataset(workdir, DS, progress=False)
