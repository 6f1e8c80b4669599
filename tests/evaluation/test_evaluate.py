"""evaluate_run / evaluate_checkpoint / `differ evaluate` on a tiny workspace; feature extraction; ONNX export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from differ_common.errors import DataError, DifferError

MODES = ("general", "clothes_changing", "same_clothes")


def _reference_metrics(ckpt, man: pd.DataFrame) -> dict[str, dict[str, float | int]]:
    """The §5 metrics of ``man``'s query/gallery rows without the code under test: a direct forward of the loaded
    model on the image files, Euclidean distances of L2-normalised features, the loop-style reference evaluator.
    A mode without a valid query is left out."""
    import torch

    from differ_core.model import load_model_for_inference
    from differ_core.testing import evaluate_loop

    model, _cfg, info = load_model_for_inference(ckpt)
    mean, std = np.array(info["mean"], np.float32), np.array(info["std"], np.float32)
    images = []
    for path in man["path"]:
        with Image.open(path) as im:
            assert im.size == tuple(info["img_size"][::-1])  # no resize needed
            images.append((np.asarray(im.convert("RGB"), np.float32) / 255 - mean) / std)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        f = model(x, torch.tensor(man["camid"].to_numpy())).numpy().astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    q, g = (man["split"] == "query").to_numpy(), (man["split"] == "gallery").to_numpy()
    dist = np.linalg.norm(f[q][:, None] - f[g][None], axis=2)
    col = {c: man[c].to_numpy() for c in ("pid", "camid", "clothes_key")}
    out = {}
    for mode in MODES:
        try:
            cmc, m_ap, n_valid = evaluate_loop(dist, col["pid"][q], col["pid"][g], col["camid"][q], col["camid"][g],
                                               col["clothes_key"][q], col["clothes_key"][g], mode=mode)  # fmt: skip
        except ValueError:  # no valid query
            continue
        out[mode] = {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": m_ap, "num_query": int(q.sum()),
                     "num_valid_query": n_valid}  # fmt: skip
    return out


def _assert_metrics(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == (v if isinstance(v, int) else pytest.approx(v, abs=1e-6)), k


def test_evaluate_run_writes_the_contract(tiny_work):
    from differ_core.evaluation.runner import evaluate_run

    run = tiny_work / "runs" / "r1"
    m = evaluate_run(run, plots=2, progress=False)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert {"dataset", "run", "epoch", "protocols", "seed", "selection"} <= set(m)
    assert (m["dataset"], m["run"], m["epoch"], m["selection"], m["seed"]) == (
        "synthcc",
        "r1",
        1,
        "val-best",
        0,
    )
    assert set(m["protocols"]) == {"general", "clothes_changing", "same_clothes"}
    for v in m["protocols"].values():
        assert set(v) == {"rank1", "rank5", "rank10", "mAP", "num_query", "num_valid_query"}
        assert 0 <= v["rank1"] <= v["rank5"] <= v["rank10"] <= 1 and 0 < v["mAP"] <= 1
        assert v["num_query"] == 12 and v["num_valid_query"] == 12
    table = pd.read_parquet(run / "metrics.parquet")
    assert table["protocol"].tolist() == list(m["protocols"]) and len(table["cmc"].iloc[0]) == 50
    assert table.set_index("protocol").loc["general", "mAP"] == m["protocols"]["general"]["mAP"]
    for name in ("ranked_general", "ranked_clothes_changing", "ranked_same_clothes", "cmc"):
        with Image.open(run / "plots" / f"{name}.png") as im:
            assert im.size[0] > 400 and im.size[1] > 200

    # the same numbers without extract_features / evaluate_ranking (see _reference_metrics)
    from data_manifests.schema import load_manifest

    man = load_manifest(tiny_work, "synthcc")
    ref = _reference_metrics(run / "checkpoints" / "best.pt", man[man.split.isin(["query", "gallery"])])
    assert set(ref) == set(MODES)
    for mode in MODES:
        _assert_metrics(m["protocols"][mode], ref[mode])


def test_extract_features_paths_flip_and_errors(tiny_work):
    import torch

    from differ_core.extract import extract_features
    from differ_core.model import load_model_for_inference

    ckpt = tiny_work / "runs" / "r1" / "checkpoints" / "last.pt"
    paths = sorted(str(p) for p in (tiny_work / "data" / "synthcc" / "query").glob("*.png"))[:3]
    f, ids = extract_features(ckpt, paths, camids=[0, 1, 2], batch_size=2, progress=False)
    assert ids == paths and f.shape == (3, 32)
    # equals the model on the checkpoint's own preprocessing (resize, /255, mean/std)
    model, _cfg, info = load_model_for_inference(ckpt)
    with Image.open(paths[1]) as im:
        a = np.asarray(im.convert("RGB").resize(info["img_size"][::-1], Image.BILINEAR), np.float32) / 255
    x = (torch.from_numpy(a).permute(2, 0, 1) - torch.tensor(info["mean"])[:, None, None]) / torch.tensor(
        info["std"]
    )[:, None, None]
    with torch.no_grad():
        ref = model(x[None], torch.tensor([1]))[0].numpy()
        ref_flip = ref + model(torch.flip(x[None], dims=[3]), torch.tensor([1]))[0].numpy()
    np.testing.assert_allclose(f[1], ref, atol=1e-5)
    ff, _ = extract_features(ckpt, paths, camids=[0, 1, 2], flip=True, progress=False)
    np.testing.assert_allclose(ff[1], ref_flip, atol=1e-5)
    with pytest.raises(DataError, match="camids"):
        extract_features(ckpt, paths, camids=[0, 1], progress=False)
    with pytest.raises(DataError, match="camids: camera ids 0..7 outside"):
        extract_features(ckpt, paths, camids=[0, 7, 1], progress=False)
    with pytest.raises(DataError, match="cannot read the image"):
        extract_features(ckpt, [str(tiny_work / "missing.png")], progress=False)


def test_selection_checkpoint_and_out_dir(tiny_work, tmp_path):
    from differ_core.evaluation.runner import (
        evaluate_checkpoint,
        evaluate_run,
        resolve_run,
        select_checkpoint,
    )

    run = tmp_path / "work" / "runs" / "copy"
    shutil.copytree(tiny_work / "runs" / "r2", run)
    shutil.copytree(tiny_work / "manifests", tmp_path / "work" / "manifests")
    assert select_checkpoint(run) == (run / "checkpoints" / "last.pt", "last")
    m = evaluate_run(run, progress=False, rerank=True, flip=True)
    assert m["selection"] == "last" and m["flip"] is True and m["rerank"]["k1"] == 20
    assert not (run / "plots").exists()
    assert resolve_run("copy", tmp_path / "work") == run
    with pytest.raises(DifferError, match="no such run folder"):
        resolve_run("nope", tmp_path / "work")
    with pytest.raises(DifferError, match="no checkpoints/best.pt or checkpoints/last.pt"):
        select_checkpoint(tmp_path)
    out = tmp_path / "ev"
    m2 = evaluate_checkpoint(run / "checkpoints" / "last.pt", "synthcc", tmp_path / "work", out_dir=out,
                             progress=False, single_shot=True, seed=3)  # fmt: skip
    assert (out / "metrics.json").exists() and m2["seed"] == 3
    # every single-shot trial has a valid query for every mode here: all six protocols run
    assert set(m2["protocols"]) == {*MODES, *(f"{p}_single_shot" for p in MODES)} and m2["skipped"] == {}
    single = m2["protocols"]["general_single_shot"]
    assert single["num_valid_query"] == 12 and single["rank10"] == 1.0  # 6 gallery images, one per identity
    # each trial's gallery shows one outfit per identity: one of its two queries (outfits 0, 1) keeps its clothes
    for mode in ("clothes_changing", "same_clothes"):
        assert m2["protocols"][mode]["num_valid_query"] == 12
        assert m2["protocols"][f"{mode}_single_shot"]["num_valid_query"] == 6
    with pytest.raises(DataError, match="manifest not found"):
        evaluate_checkpoint(run / "checkpoints" / "last.pt", "ltcc", tmp_path / "work", progress=False)


def _workspace_with(tiny_work, work, keep) -> pd.DataFrame:
    """``work`` with a manifest of the tiny set's query/gallery rows for which ``keep(row)`` is true."""
    from data_manifests.schema import MANIFEST_COLUMNS, finalize_manifest, load_manifest, write_manifest

    man = load_manifest(tiny_work, "synthcc")
    cols = ["image_id", "path", "dataset", "split", "raw_pid", "camid", "clothes_key"]
    rows = [r for r in man[cols].to_dict("records") if r["split"] != "train" and keep(r)]
    write_manifest(finalize_manifest(rows), work / "manifests" / "synthcc.parquet")
    out = load_manifest(work, "synthcc")
    assert list(out.columns) == list(MANIFEST_COLUMNS)
    return out


def test_single_shot_with_one_gallery_image_per_identity_equals_multi_shot(tiny_work, tmp_path):
    from differ_core.evaluation.runner import evaluate_checkpoint

    # query: both outfits at camera 0; gallery: outfit 0 at camera 1 only, so every trial draws the same gallery
    def keep(r: dict) -> bool:
        return r["split"] == "query" or r["image_id"].endswith("_0_c1_0.png")

    man = _workspace_with(tiny_work, tmp_path / "w", keep)
    gallery = man[man.split == "gallery"]
    assert (man.split == "query").sum() == 12 and len(gallery) == gallery["pid"].nunique() == 6
    ckpt = tiny_work / "runs" / "r1" / "checkpoints" / "best.pt"
    out = tmp_path / "ev"
    m = evaluate_checkpoint(ckpt, "synthcc", tmp_path / "w", out_dir=out, single_shot=True, progress=False)
    assert m["single_shot"] is True and m["skipped"] == {}
    ref = _reference_metrics(ckpt, man)
    # outfit 1 queries change clothes, outfit 0 queries keep them
    assert [ref[p]["num_valid_query"] for p in MODES] == [12, 6, 6]
    for mode in MODES:
        _assert_metrics(m["protocols"][mode], ref[mode])
        single = dict(m["protocols"][f"{mode}_single_shot"])
        assert single.pop("trials") == 10  # every draw is the same gallery here: no spread
        assert [single.pop(f"{k}_std") for k in ("rank1", "rank5", "rank10", "mAP")] == pytest.approx(
            [0.0] * 4
        )
        _assert_metrics(single, ref[mode])
    trials = pd.read_parquet(out / "metrics.parquet").set_index("protocol")["single_shot_trials"]
    assert trials["general_single_shot"] == 10 and trials["general"] == 0


def test_single_shot_without_a_same_clothes_match_is_skipped_with_the_reason(tiny_work, tmp_path):
    from differ_core.evaluation.runner import evaluate_checkpoint

    # queries wear outfit 1, the gallery only outfit 0: no query has a same-clothes match, in any trial
    def keep(r: dict) -> bool:
        return r["clothes_key"].endswith("_1" if r["split"] == "query" else "_0")

    man = _workspace_with(tiny_work, tmp_path / "w", keep)
    ckpt = tiny_work / "runs" / "r1" / "checkpoints" / "best.pt"
    m = evaluate_checkpoint(ckpt, "synthcc", tmp_path / "w", single_shot=True, progress=False, write=False)
    assert set(m["skipped"]) == {"same_clothes", "same_clothes_single_shot"}
    assert "no query has a good gallery match" in m["skipped"]["same_clothes_single_shot"]
    ran = {"general", "clothes_changing", "general_single_shot", "clothes_changing_single_shot"}
    assert set(m["protocols"]) == ran
    ref = _reference_metrics(ckpt, man)
    assert set(ref) == {"general", "clothes_changing"}  # the reference has no valid same-clothes query either
    for p in ("general_single_shot", "clothes_changing_single_shot"):
        assert m["protocols"][p]["num_valid_query"] == 6 and m["protocols"][p]["rank10"] == 1.0


def test_cli_table_and_compare(tiny_work, capsys):
    from flows.cli import main

    rc = main(["--workdir", str(tiny_work), "evaluate", "--run", "r1", "--plots", "1", "--compare", "r2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Rank-1" in out and "clothes_changing" in out and "mAP" in out and "A = r2, B = r1" in out
    m = json.loads((tiny_work / "runs" / "r1" / "metrics.json").read_text())
    assert f"{100 * m['protocols']['general']['mAP']:.1f}" in out
    assert (tiny_work / "runs" / "r1" / "plots" / "compare_clothes_changing.png").exists()
    assert not (tiny_work / "runs" / "r2" / "metrics.json").exists()  # --compare does not write into RUN2


def test_compare_shows_both_runs_and_every_protocol_variant_side_by_side(tiny_work, tmp_path, capsys):
    from differ_core.evaluation.runner import evaluate_run
    from flows.cli import main

    run = tmp_path / "r1"
    shutil.copytree(tiny_work / "runs" / "r1", run)
    common = ["--single-shot", "--compare", str(tiny_work / "runs" / "r2")]
    assert main(["--workdir", str(tiny_work), "evaluate", "--run", str(run), *common]) == 0
    out = capsys.readouterr().out
    a = evaluate_run(tiny_work / "runs" / "r2", single_shot=True, write=False, progress=False)["protocols"]
    b = json.loads((run / "metrics.json").read_text())["protocols"]
    for name in ("general", "general_single_shot"):
        line = next(x for x in out.splitlines() if x.strip("│ ").startswith(name + " ") and "Δ" not in x and
                    x.count("│") > 8)  # fmt: skip
        va, vb = a[name], b[name]
        std = (lambda v: f" ± {100 * v['mAP_std']:.1f}") if name.endswith("single_shot") else (lambda v: "")
        want = [f"{100 * va['mAP']:.1f}{std(va)}", f"{100 * vb['mAP']:.1f}{std(vb)}",
                f"{100 * (vb['mAP'] - va['mAP']):+.1f}"]  # fmt: skip
        cells = [c.strip() for c in line.split("│")]
        assert cells[-4:-1] == want, line
        assert ("single-shot ×10" if name.endswith("single_shot") else "multi-shot") in line
    assert main(["--workdir", str(tiny_work), "evaluate", "--checkpoint", "x.pt"]) == 2
    assert "needs --dataset" in capsys.readouterr().err
    assert main(["--workdir", str(tiny_work), "evaluate"]) == 2
    assert "give --run R, or --checkpoint C --dataset D" in capsys.readouterr().err
    assert main(["--workdir", str(tiny_work), "evaluate", "--run", "r1", "--checkpoint", "nope"]) == 2
    assert "nope.pt: checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("lambda_cam", [3.0, 0.0])
def test_onnx_export_matches_torch(tiny_work, tmp_path, lambda_cam):
    import onnxruntime as ort
    import torch

    from differ_core.export_onnx import export_onnx
    from differ_core.model import load_model_for_inference

    from .conftest import make_checkpoint

    ckpt = tiny_work / "runs" / "r1" / "checkpoints" / "best.pt"
    if lambda_cam == 0:  # no camera embedding: camids stays an input of the graph
        ckpt = (
            make_checkpoint(tmp_path / "nocam", names=("last",), lambda_cam=0.0) / "checkpoints" / "last.pt"
        )
    path = export_onnx(ckpt, tmp_path / "m.onnx")
    model, _cfg, info = load_model_for_inference(ckpt)
    x = torch.randn(5, 3, *info["img_size"])  # another batch size than the export's
    cams = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        ref = model(x, cams).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images", "camids"]
    (got,) = sess.run(["features"], {"images": x.numpy(), "camids": cams.numpy()})
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["img_size"]) == list(info["img_size"])


def test_an_evaluation_outside_its_run_records_its_command_checkpoint_and_protocol_variants(tiny_work, tmp_path,
                                                                                             capsys):  # fmt: skip
    import os

    import torch

    from differ_core.reproducibility import record_sha256, weights_sha256
    from flows.cli import main

    ckpt = tiny_work / "runs" / "r2" / "checkpoints" / "last.pt"
    out = tmp_path / "ev"
    argv = ["--workdir", str(tiny_work), "evaluate", "--checkpoint", str(ckpt), "--dataset", "synthcc",
            "--out", str(out), "--single-shot", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert "DIFFER_COMMAND" not in os.environ  # handed down for the command only
    record = json.loads((out / "reproduce.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reproduce"] == record
    assert set(pd.read_parquet(out / "metrics.parquet")["reproduce_sha256"]) == {record_sha256(record)}
    ev = record["evaluation"]
    assert ev["command"] == ["differ", *argv]
    assert ev["checkpoint"]["weights_sha256"] == weights_sha256(torch.load(ckpt, weights_only=True)["model"])
    assert ev["checkpoint"]["weights_sha256"] != weights_sha256(
        torch.load(tiny_work / "runs" / "r1" / "checkpoints" / "last.pt", weights_only=True)["model"]
    )  # other weights, another hash
    single = {p["name"]: p for p in ev["protocols"]}["clothes_changing_single_shot"]
    assert single["single_shot_trials"] == 10 and single["seed"] == 3 and single["mode"] == "clothes_changing"
    assert {p["name"]: p for p in ev["protocols"]}["general"]["variant"] == "multi-shot"
    assert ev["environment"]["versions"]["numpy"] == np.__version__ and ev["single_shot"] is True
