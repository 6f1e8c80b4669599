"""The training-side reader, the official-release import/export, the 2-D plot and the `differ encode` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from feature_helpers import manifest, write_captions, write_manifest, write_summaries

from captions.features.interop import export_keys, export_official, import_official
from captions.features.reader import load_text_features
from captions.features.tables import encode_dataset
from differ_common.errors import ConfigError, DataError
from differ_common.perspectives import PERSPECTIVES

DS = "toy"
IDS = [f"train/{i:03d}_c{1 + i % 3}.png" for i in range(18)]
PIDS = [i // 6 for i in range(18)]
CLOTHES = [p * 2 + (i % 6) // 3 for i, p in enumerate(PIDS)]  # two outfits per person
COLOURS = ["red", "blue", "green", "black", "white", "yellow"]


def _captions():
    caps = {}
    for p in PERSPECTIVES:
        if p == "clothing":
            caps[p] = {
                img: f"a {COLOURS[CLOTHES[i]]} coat and {COLOURS[CLOTHES[i]]} shoes"
                for i, img in enumerate(IDS)
            }
        else:
            caps[p] = {img: f"{p} of person {PIDS[i]} in view {i % 2}" for i, img in enumerate(IDS)}
    return caps


@pytest.fixture(scope="module")
def ws(tmp_path_factory, minilm):
    w = tmp_path_factory.mktemp("reader") / "work"
    write_manifest(w, DS, manifest(IDS, PIDS, clothes=CLOTHES))
    write_captions(w, DS, _captions())
    write_summaries(w, DS, {0: "a short man", 1: "a tall woman", 2: "an old man"})
    encode_dataset(w, DS, encoder=minilm, progress=False)
    return w


def test_reader_aligns_to_manifest_order(ws, minilm):
    m = manifest(IDS, PIDS, clothes=CLOTHES).sample(frac=1.0, random_state=3).reset_index(drop=True)
    persp = ["biometrics", "clothing", "pose"]
    t = load_text_features(ws, DS, "minilm", m, persp)
    assert tuple(t.shape) == (18, 3, 384) and str(t.dtype) == "torch.float32"
    caps = _captions()
    for slot, p in enumerate(persp):
        ref = minilm.encode([caps[p][img] for img in m["image_id"]])
        np.testing.assert_allclose(t[:, slot].numpy(), ref, atol=1e-5)
    s = load_text_features(ws, DS, "minilm", m, persp, bio_source="summary")
    summ = {0: "a short man", 1: "a tall woman", 2: "an old man"}
    np.testing.assert_allclose(s[:, 0].numpy(), minilm.encode([summ[p] for p in m["pid"]]), atol=1e-5)
    np.testing.assert_array_equal(s[:, 1:].numpy(), t[:, 1:].numpy())


def test_reader_errors_name_missing_images_and_the_fix(ws):
    m = manifest([*IDS, "query/999_c1.png", "query/998_c2.png"], [*PIDS, 999, 998])
    with pytest.raises(DataError) as info:
        load_text_features(ws, DS, "minilm", m, ["biometrics", "pose"])
    msg = str(info.value)
    assert (
        "2 of 20 images" in msg and "query/999_c1.png" in msg and "differ encode" in msg and "\n" not in msg
    )
    with pytest.raises(DataError, match=r"1 of 4 identities.*999.*differ summarize"):
        load_text_features(
            ws,
            DS,
            "minilm",
            manifest([IDS[0], IDS[6], IDS[12], "x.png"], [0, 1, 2, 999]),
            ["biometrics"],
            bio_source="summary",
        )
    with pytest.raises(DataError, match="differ encode --dataset toy --encoder hf-clip:/nope"):
        load_text_features(ws, DS, "hf-clip:/nope", manifest(IDS, PIDS), ["biometrics"])
    with pytest.raises(ConfigError):
        load_text_features(ws, DS, "minilm", manifest(IDS, PIDS), ["biometrics"], bio_source="caption")


def test_official_round_trip(ws, tmp_path):
    m = manifest(IDS, PIDS, clothes=CLOTHES)
    written = export_official(ws, DS, "minilm", tmp_path / "release", manifest=m, name="MiniLM-test")
    with np.load(written["npz"]) as z:
        assert z["data"].shape == (18 * 6, 384)
        assert z["metadata"].tolist()[:2] == ["000_c1", "001_c2"]  # file stems, as the release keys LTCC
    summ = json.loads(written["summary"].read_text())
    assert sorted(summ) == ["0", "1", "2"] and len(summ["0"]["ft_MiniLM-test"]) == 384
    rep = import_official(ws, DS, tmp_path / "release", manifest=m)
    assert (
        rep.encoder == "official:MiniLM-test" and rep.unmatched_keys == 0 and rep.images_without_feature == 0
    )
    for bio in ("image", "summary"):
        ours = load_text_features(ws, DS, "minilm", m, list(PERSPECTIVES), bio_source=bio)
        theirs = load_text_features(ws, DS, rep.encoder, m, list(PERSPECTIVES), bio_source=bio)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # release keys relative to another depth still match (PRCC-style "<pid>/<file>")
    assert export_keys(["rgb/train/A/001/x.jpg", "rgb/train/B/001/x.jpg"]) == ["A/001/x", "B/001/x"]


def _npz(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_malformed_release_files_are_named(ws, tmp_path):
    m = manifest(IDS, PIDS)
    keys = np.array([i.split("/")[1][:-4] for i in IDS])
    good = np.zeros((18 * 6, 8), np.float32)
    cases = [
        (_npz(tmp_path / "a" / "v" / "train.npz", data=good), "'metadata'"),
        (_npz(tmp_path / "b" / "v" / "train.npz", data=good[:-1], metadata=keys), "expected 18 x 6"),
        (_npz(tmp_path / "c" / "v" / "train.npz", data=good[:, 0], metadata=keys), "'data' has shape"),
    ]
    bad_zip = tmp_path / "d" / "v" / "train.npz"
    bad_zip.parent.mkdir(parents=True)
    bad_zip.write_bytes(b"not a zip")
    cases.append((bad_zip, "not a readable .npz"))
    for path, needle in cases:
        with pytest.raises(DataError) as info:
            import_official(ws, DS, path.parent.parent, manifest=m)
        msg = str(info.value)
        assert str(path) in msg and needle in msg and "'data' [N_images*P, D]" in msg, msg
    ok = _npz(tmp_path / "e" / "v" / "train.npz", data=good, metadata=keys)
    (ok.parent / "train_caption_summary_biometric.json").write_text(json.dumps({"0": {"ft_v": [0.0] * 5}}))
    with pytest.raises(DataError, match=r"train_caption_summary_biometric.json.*shape \(5,\).*ft_<encoder>"):
        import_official(ws, DS, tmp_path / "e", manifest=m)
    (ok.parent / "train_caption_summary_biometric.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="ft_<encoder>"):
        import_official(ws, DS, tmp_path / "e", manifest=m)
    unrelated = _npz(
        tmp_path / "f" / "v" / "train.npz", data=good, metadata=np.array([f"k{i}" for i in range(18)])
    )
    with pytest.raises(DataError, match="match"):
        import_official(ws, DS, unrelated.parent, manifest=m)


def test_import_of_another_dimension_is_refused(ws, tmp_path):
    m = manifest(IDS, PIDS)
    keys = np.array([i.split("/")[1][:-4] for i in IDS])
    _npz(tmp_path / "r" / "MiniLM-dim" / "train.npz", data=np.ones((108, 384), np.float32), metadata=keys)
    import_official(ws, DS, tmp_path / "r", manifest=m)
    _npz(tmp_path / "r2" / "MiniLM-dim" / "train.npz", data=np.ones((108, 32), np.float32), metadata=keys)
    with pytest.raises(DataError, match="384-d.*32-d.*never mixed"):
        import_official(ws, DS, tmp_path / "r2", manifest=m)


def test_plot_is_written(ws, tmp_path):
    from captions.features.plot import plot_features

    m = manifest(IDS, PIDS, clothes=CLOTHES)
    out = plot_features(ws, DS, "minilm", "clothing", color_by="outfit", out=tmp_path / "c.png", manifest=m)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    out2 = plot_features(ws, DS, "minilm", "biometrics", color_by="identity", method="tsne", manifest=m)
    assert out2.is_file() and out2.name == "biometrics_identity_tsne.png"
    with pytest.raises(ConfigError):
        plot_features(ws, DS, "minilm", "clothing", method="umap", manifest=m)


def test_differ_encode_command(ws, tmp_path, capsys):
    import shutil

    from flows.cli import main

    ws = shutil.copytree(ws, tmp_path / "work")
    assert main(["--workdir", str(ws), "encode", "--dataset", DS, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "encoded" in out and "reused" in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("clothing"))
    assert row[1:4] == ["0", "18", "18"]
    assert (
        main(["--workdir", str(ws), "encode", "--dataset", DS, "--export-official", str(tmp_path / "x")]) == 0
    )
    assert (tmp_path / "x" / "minilm" / "train.npz").is_file()
    assert (
        main(["--workdir", str(ws), "encode", "--dataset", DS, "--import-official", str(tmp_path / "x")]) == 0
    )
    assert "official:minilm" in capsys.readouterr().out
    write_captions(ws, DS, {"pose": {IDS[0]: "jumping"}}, prompt_ids={"pose": "other"})
    code = main(["--workdir", str(ws), "encode", "--dataset", DS, "--encoder", "open_clip:NoSuchArch@/x.pt"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown open_clip architecture" in err


def test_imported_features_are_not_re_encoded(ws, tmp_path):
    m = manifest(IDS, PIDS)
    export_official(ws, DS, "minilm", tmp_path / "rel", manifest=m, name="MiniLM-again")
    rep = import_official(ws, DS, tmp_path / "rel", manifest=m)
    with pytest.raises(DataError, match="imported from the official release"):
        encode_dataset(ws, DS, encoder=rep.encoder, progress=False)
