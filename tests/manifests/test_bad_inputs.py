"""Bad inputs: one-line errors naming the path and the fix; nothing written when validation fails."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from manifest_trees import (
    LTCC_FILES,
    corrupt,
    img,
    make_ccvid,
    make_custom,
    make_ltcc,
    make_prcc,
)

from data_manifests import build_manifest
from data_manifests.registry import make_manifest
from differ_common.errors import ConfigError, DataError
from flows.cli import main


def _error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def _nothing_written(workdir) -> None:
    manifests = workdir / "manifests"
    assert not manifests.exists() or not any(manifests.iterdir())


def test_missing_root(tmp_path):
    with pytest.raises(DataError) as e:
        build_manifest("ltcc", tmp_path / "nope_c2")
    assert str(tmp_path / "nope_c2") in _error(e) and "LTCC_ReID" in _error(e)
    with pytest.raises(DataError) as e:
        build_manifest("prcc", None)
    assert "--root" in _error(e)


def test_missing_split_folder(root, tmp_path):
    base = make_ltcc(root)
    shutil.rmtree(base / "test")
    with pytest.raises(DataError) as e:
        make_manifest(tmp_path / "w", "ltcc", root)
    assert str(base / "test") in _error(e) and "not found" in _error(e)
    _nothing_written(tmp_path / "w")
    pbase = make_prcc(root)
    shutil.rmtree(pbase / "rgb" / "test" / "C")
    with pytest.raises(DataError) as e:
        build_manifest("prcc", root)
    assert str(pbase / "rgb" / "test" / "C") in _error(e)


def test_bad_file_names_list_the_first_offenders(root, tmp_path):
    files = {k: list(v) for k, v in LTCC_FILES.items()}
    files["train"] += [f"frame_{i:02d}.png" for i in range(7)] + ["x1_c2.png"]
    base = make_ltcc(root, files)
    with pytest.raises(DataError) as e:
        make_manifest(tmp_path / "w", "ltcc", root)
    msg = _error(e)
    assert msg.startswith(str(base / "train"))
    assert "8 file name(s) do not match" in msg and "frame_00.png" in msg and "(8 in all)" in msg
    assert "x1_c2.png" not in msg  # only the first few are listed
    _nothing_written(tmp_path / "w")


def test_corrupt_image_error_or_skip(root, tmp_path, capsys):
    base = make_ltcc(root)
    bad = corrupt(base / "train" / "012_1_c1_000009.png")
    with pytest.raises(DataError) as e:
        make_manifest(tmp_path / "w", "ltcc", root)
    assert str(bad) in _error(e) and "--on-bad-image skip" in _error(e)
    _nothing_written(tmp_path / "w")

    df = build_manifest("ltcc", root, on_bad_image="skip")
    assert df.attrs["skipped_images"] == ["train/012_1_c1_000009.png"]
    assert "train/012_1_c1_000009.png" not in set(df["image_id"]) and len(df) == 13

    rc = main(
        ["--workdir", str(tmp_path / "w"), "manifest", "ltcc", "--root", str(root), "--on-bad-image", "skip"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipped 1 unreadable image(s): train/012_1_c1_000009.png" in out
    assert len(pd.read_parquet(tmp_path / "w" / "manifests" / "ltcc.parquet")) == 13


def test_empty_split(root, tmp_path):
    files = {k: list(v) for k, v in LTCC_FILES.items()}
    files["query"] = []
    base = make_ltcc(root, files)
    with pytest.raises(DataError) as e:
        make_manifest(tmp_path / "w", "ltcc", root)
    assert str(base / "query") in _error(e) and "'query' has no images" in _error(e)
    _nothing_written(tmp_path / "w")


def test_split_empty_after_skipping_corrupt_images(root):
    files = {k: list(v) for k, v in LTCC_FILES.items()}
    files["query"] = []
    base = make_ltcc(root, files)
    corrupt(base / "query" / "020_1_c2_000100.png")
    with pytest.raises(DataError) as e:
        build_manifest("ltcc", root, on_bad_image="skip")
    assert "'query' has no images" in _error(e)


def test_query_identity_absent_from_gallery(root, tmp_path):
    files = {k: list(v) for k, v in LTCC_FILES.items()}
    files["query"].append("077_1_c3_000555.png")
    base = make_ltcc(root, files)
    with pytest.raises(DataError) as e:
        make_manifest(tmp_path / "w", "ltcc", root)
    msg = _error(e)
    assert msg.startswith(str(base / "query")) and "absent from the gallery: pid 77" in msg
    _nothing_written(tmp_path / "w")


def test_ccvid_bad_inputs(root):
    base = make_ccvid(root)
    with open(base / "query.txt", "a") as fh:
        fh.write("session1/012_02 012\n")
    with pytest.raises(DataError) as e:
        build_manifest("ccvid", root)
    assert _error(e).startswith(f"{base / 'query.txt'}:3:")
    base = make_ccvid(root)  # rewrites the lists
    with open(base / "gallery.txt", "a") as fh:
        fh.write("session2/099_03 099 u1_l1\n")
    with pytest.raises(DataError) as e:
        build_manifest("ccvid", root)
    assert str(base / "gallery.txt") in _error(e) and "session2/099_03" in _error(e)
    base = make_ccvid(root)
    with open(base / "train.txt", "a") as fh:
        fh.write("session1/badname 001 u1\n")
    with pytest.raises(DataError) as e:
        build_manifest("ccvid", root)
    assert f"{base / 'train.txt'}:4:" in _error(e) and "<pid>_<camera>" in _error(e)
    (base / "train.txt").unlink()
    with pytest.raises(DataError) as e:
        build_manifest("ccvid", root)
    assert str(base / "train.txt") in _error(e)


def test_ccvid_skipped_frames_keep_their_indices(root):
    base = make_ccvid(root)
    corrupt(base / "session1" / "011_07" / "00002.jpg")
    df = build_manifest("ccvid", root, on_bad_image="skip")
    assert df.attrs["skipped_images"] == ["session1/011_07/00002.jpg"]
    assert df.loc[df["track_id"] == "session1/011_07", "frame"].tolist() == [0, 2]


def test_custom_csv_errors_name_the_csv_line_and_fix(root):
    csv = make_custom(root)
    text = csv.read_text().splitlines()

    def write(lines):
        csv.write_text("\n".join(lines) + "\n")

    write([text[0]] + text[1:3] + ["images/b.png,train,twelve,0,1,x"] + text[3:])
    with pytest.raises(DataError) as e:
        build_manifest("custom", csv)
    assert _error(e).startswith(f"{csv}:4: pid='twelve'") and "integer" in _error(e)

    write([text[0]] + text[1:] + ["images/b.png,test,1,0,1,x"])
    with pytest.raises(DataError) as e:
        build_manifest("custom", csv)
    assert f"{csv}:{len(text) + 1}: split='test'" in _error(e)

    write([text[0]] + text[1:] + ["images/missing_1.png,train,1,0,1,x"])
    with pytest.raises(DataError) as e:
        build_manifest("custom", csv)
    assert f"{csv}:{len(text) + 1}:" in _error(e) and "images/missing_1.png" in _error(e)

    write(["path,split,pid,camid"] + [",".join(t.split(",")[:4]) for t in text[1:]])
    with pytest.raises(DataError) as e:
        build_manifest("custom", csv)
    assert _error(e).startswith(f"{csv}:1: header lacks column(s) ['clothes_id']")

    write(text + [text[2]])
    with pytest.raises(DataError) as e:
        build_manifest("custom", csv)
    assert f"{csv}:{len(text) + 1}:" in _error(e) and "listed again (first on line 3)" in _error(e)

    write([t for t in text if ",gallery," not in t])
    with pytest.raises(DataError) as e:
        build_manifest("custom", csv)
    assert "'gallery' has no images" in _error(e)

    with pytest.raises(DataError) as e:
        build_manifest("custom", root / "nope.csv")
    assert str(root / "nope.csv") in _error(e)


def test_cli_one_line_error_and_exit_code_2(tmp_path, capsys):
    rc = main(["--workdir", str(tmp_path / "w"), "manifest", "prcc", "--root", str(tmp_path / "missing_c3")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("differ manifest: error: ") and str(tmp_path / "missing_c3") in err
    rc = main(["--workdir", str(tmp_path / "w"), "manifest", "market1501", "--root", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown dataset 'market1501'" in err and "ltcc" in err
    rc = main(
        ["--workdir", str(tmp_path / "w"), "manifest", "ltcc", "--root", str(tmp_path), "--size", "tiny"]
    )
    assert rc == 2 and "synthcc only" in capsys.readouterr().err
    _nothing_written(tmp_path / "w")


def test_registry_rejects_unknown_options(root):
    make_ltcc(root)
    with pytest.raises(ConfigError) as e:
        build_manifest("ltcc", root, num_cameras=3)
    assert "num_cameras" in _error(e)
    with pytest.raises(ConfigError) as e:
        build_manifest("ltcc", root, on_bad_image="ignore")
    assert "--on-bad-image 'ignore'" in _error(e)


def test_cli_writes_to_out_and_prints_the_summary(root, tmp_path, capsys):
    make_ltcc(root)
    img(root / "LTCC_ReID" / "query" / "notes.txt", fmt="PNG")  # other extensions are ignored
    out = tmp_path / "elsewhere" / "m.parquet"
    rc = main(["--workdir", str(tmp_path / "w"), "manifest", "ltcc", "--root", str(root), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and not (tmp_path / "w" / "manifests" / "ltcc.parquet").exists()
    for word in ("train", "query", "gallery", "total", "# ids", "# images", "# outfits", "# cameras"):
        assert word in text
    assert len(pd.read_parquet(out)) == 13
