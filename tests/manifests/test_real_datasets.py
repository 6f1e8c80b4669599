"""Every count and label of the real-dataset adapters on trees in their published layouts."""

from __future__ import annotations

import pandas as pd
import pytest
from manifest_trees import make_ccvid, make_celeb, make_custom, make_ltcc, make_prcc

from data_manifests import build_manifest, split_summary
from data_manifests.schema import MANIFEST_COLUMNS, validate_manifest


def _rows(df: pd.DataFrame) -> dict[str, dict]:
    return {r["image_id"]: r for r in df.to_dict("records")}


def _check_common(df: pd.DataFrame, base, dataset: str) -> None:
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    validate_manifest(df)
    assert (df["dataset"] == dataset).all()
    for r in df.itertuples():
        assert r.path == str(base / r.image_id)
    train = df[df["split"] == "train"]
    raw = sorted(train["raw_pid"].unique())
    assert dict(zip(train["raw_pid"], train["pid"], strict=True)) == {p: i for i, p in enumerate(raw)}
    other = df[~df["split"].isin(["train", "val"])]
    assert (other["pid"] == other["raw_pid"]).all()
    codes = dict(zip(df["clothes_key"], df["clothes_id"], strict=True))
    assert sorted(codes.values()) == list(range(len(codes)))


def test_ltcc_labels_come_from_file_names_only(root):
    base = make_ltcc(root)
    df = build_manifest("ltcc", root)
    _check_common(df, base, "ltcc")
    assert df["split"].value_counts().to_dict() == {"train": 6, "query": 2, "gallery": 5}
    rows = _rows(df)
    r = rows["train/005_1_c11_015858.png"]
    assert (r["pid"], r["raw_pid"], r["camid"], r["clothes_key"]) == (0, 5, 10, "5_1")
    assert rows["train/012_3_c2_000002.png"]["pid"] == 1 and rows["train/099_1_c4_000003.png"]["pid"] == 2
    q = rows["query/031_2_c5_000101.png"]
    assert (q["pid"], q["raw_pid"], q["camid"], q["clothes_key"]) == (31, 31, 4, "31_2")
    assert rows["test/044_1_c1_000204.png"]["split"] == "gallery"
    assert df["track_id"].isna().all() and df["frame"].isna().all()
    assert sorted(df["clothes_key"].unique()) == sorted(
        ["5_1", "5_2", "12_1", "12_3", "99_1", "20_1", "20_2", "31_1", "31_2", "44_1"]
    )
    s = split_summary(df)
    assert s.loc["train"].to_dict() == {"ids": 3, "images": 6, "outfits": 5, "cameras": 6, "tracklets": 0}
    assert s.loc["gallery", "ids"] == 3 and s.loc["total", "images"] == 13 and s.loc["total", "ids"] == 6


def test_same_tree_under_a_plain_root_gives_the_same_labels(root, tmp_path):
    make_ltcc(root)
    plain = tmp_path / "plain"
    make_ltcc(plain)
    cols = ["image_id", "split", "pid", "raw_pid", "camid", "clothes_id", "clothes_key"]
    a = build_manifest("ltcc", root)[cols]
    b = build_manifest("ltcc", plain / "LTCC_ReID")[cols]  # the dataset folder itself works too
    pd.testing.assert_frame_equal(a, b)


def test_prcc_split_mapping_cameras_and_clothes(root):
    base = make_prcc(root)
    df = build_manifest("prcc", root)
    _check_common(df, base, "prcc")
    counts = df["split"].value_counts().to_dict()
    assert counts == {"train": 8, "val": 3, "gallery": 4, "query_same": 3, "query_diff": 4}
    rows = _rows(df)
    r = rows["rgb/train/003/C_cropped_rgb002.jpg"]
    assert (r["pid"], r["raw_pid"], r["camid"], r["clothes_key"]) == (1, 3, 2, "3C")
    assert rows["rgb/train/010/C_cropped_rgb000.jpg"]["pid"] == 2
    assert rows["rgb/train/001/B_cropped_rgb002.jpg"]["clothes_key"] == "1"
    v = rows["rgb/val/003/B_cropped_rgb000.jpg"]
    assert (v["split"], v["pid"], v["camid"]) == ("val", 1, 1)  # val ids are train ids: same relabelling
    a = rows["rgb/test/A/100/cropped_rgb001.jpg"]
    assert (a["split"], a["camid"], a["clothes_key"], a["pid"]) == ("gallery", 0, "100", 100)
    b = rows["rgb/test/B/101/cropped_rgb000.jpg"]
    assert (b["split"], b["camid"], b["clothes_key"]) == ("query_same", 1, "101")
    c = rows["rgb/test/C/102/cropped_rgb002.jpg"]
    assert (c["split"], c["camid"], c["clothes_key"]) == ("query_diff", 2, "102C")
    # same clothes for A and B, other clothes for C
    assert (
        a["clothes_id"]
        == rows["rgb/test/B/100/cropped_rgb000.jpg"]["clothes_id"]
        != rows["rgb/test/C/100/cropped_rgb000.jpg"]["clothes_id"]
    )


def test_celeb_light_every_image_is_its_own_outfit(root):
    base = make_celeb(root)
    df = build_manifest("celeb-light", root)
    _check_common(df, base, "celeb-light")
    assert df["split"].value_counts().to_dict() == {"train": 5, "query": 2, "gallery": 4}
    assert (df["camid"] == 0).all()
    assert df["clothes_key"].nunique() == len(df)
    rows = _rows(df)
    assert [rows[f"train/{n}"]["pid"] for n in ("1_1_0.jpg", "7_3_0.jpg", "30_1_0.jpg")] == [0, 1, 2]
    assert rows["gallery/102_1_0.jpg"]["raw_pid"] == 102


def test_ccvid_frames_cameras_session3_offset_and_clothes(root):
    base = make_ccvid(root)
    df = build_manifest("ccvid", root)
    _check_common(df, base, "ccvid")
    assert df["split"].value_counts().to_dict() == {"train": 7, "query": 3, "gallery": 7}
    rows = _rows(df)
    f = rows["session1/001_01/00003.jpg"]
    assert (f["pid"], f["raw_pid"], f["camid"], f["track_id"], f["frame"]) == (0, 1, 0, "session1/001_01", 2)
    assert f["clothes_key"] == "1_u1_l1_s1_c1_b1"
    s3 = rows["session3/001_02/00001.jpg"]
    assert (s3["camid"], s3["frame"], s3["clothes_key"]) == (1 + 12, 0, "1_u2_l1_s1_c1_b1")
    assert rows["session2/004_12/00002.jpg"]["camid"] == 11 and rows["session2/004_12/00002.jpg"]["pid"] == 1
    assert rows["session3/011_01/00001.jpg"]["camid"] == 12
    assert rows["session3/010_04/00002.jpg"]["camid"] == 15
    tracks = df.groupby("track_id")["frame"].apply(list).to_dict()
    assert tracks["session1/011_07"] == [0, 1, 2] and len(tracks) == 8
    assert (df.groupby("track_id")[["raw_pid", "camid", "clothes_id", "split"]].nunique() == 1).all().all()
    s = split_summary(df)
    assert s["tracklets"].to_dict() == {"train": 3, "query": 2, "gallery": 3, "total": 8}
    nested = root / "dl"
    make_ccvid(nested / "CCVID")  # the nesting DIFFER's code expects: <root>/CCVID/CCVID/
    cols = ["image_id", "split", "pid", "camid", "clothes_id", "track_id", "frame"]
    pd.testing.assert_frame_equal(build_manifest("ccvid", nested)[cols], df[cols])


def test_custom_csv_resolves_paths_against_its_folder(root):
    csv = make_custom(root)
    df = build_manifest("custom", csv)
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert df["split"].value_counts().to_dict() == {"train": 3, "query": 2, "gallery": 2}
    rows = _rows(df)
    a = rows["images/a_c1.png"]
    assert (a["pid"], a["raw_pid"], a["camid"], a["clothes_id"], a["clothes_key"]) == (1, 40, 0, 7, "7")
    assert rows["images/b.png"]["pid"] == 0
    assert a["path"] == str(csv.parent / "images" / "a_c1.png")
    outside = rows["../elsewhere/q2.png"]
    assert (outside["split"], outside["raw_pid"], outside["camid"], outside["clothes_id"]) == (
        "query",
        501,
        1,
        23,
    )
    assert outside["path"] == str(root / "elsewhere" / "q2.png")
    # the folder holding the one CSV works as --root too
    pd.testing.assert_frame_equal(df, build_manifest("custom", csv.parent))


@pytest.mark.parametrize("dataset", ["ltcc", "prcc", "celeb-light", "ccvid", "custom"])
def test_manifests_round_trip_through_parquet(dataset, root, tmp_path):
    from data_manifests.registry import make_manifest
    from data_manifests.schema import load_manifest

    maker = {"ltcc": make_ltcc, "prcc": make_prcc, "celeb-light": make_celeb, "ccvid": make_ccvid}
    target = make_custom(root) if dataset == "custom" else (maker[dataset](root), root)[1]
    out = make_manifest(tmp_path / "w", dataset, target)
    assert out == tmp_path / "w" / "manifests" / f"{dataset}.parquet"
    back = pd.read_parquet(out)
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    pd.testing.assert_frame_equal(load_manifest(tmp_path / "w", dataset), build_manifest(dataset, target))
