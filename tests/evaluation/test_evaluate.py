"""evaluate_run / evaluate_checkpoint / `differ evaluate` on a tiny workspace; feature extraction; ONNX export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from differ_common.errors import DataError, DifferError


def test_evaluate_run_writes_the_contract(tiny_work):
    from differ_core.evaluation.metrics import evaluate_ranking, pairwise_distance
    from differ_core.evaluation.runner import evaluate_run
    from differ_core.extract import extract_features

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

    # the same numbers from the public extraction API + evaluate_ranking
    from data_manifests.schema import load_manifest

    man = load_manifest(tiny_work, "synthcc")
    man = man[man.split.isin(["query", "gallery"])].reset_index(drop=True)
    feats, ids = extract_features(run / "checkpoints" / "best.pt", man, batch_size=5, progress=False)
    assert ids == man.image_id.tolist() and feats.shape == (36, 32) and feats.dtype == np.float32
    q, g = (man.split == "query").to_numpy(), (man.split == "gallery").to_numpy()
    r = evaluate_ranking(pairwise_distance(feats[q], feats[g]), man.pid[q], man.pid[g], man.camid[q],
                         man.camid[g], man.clothes_id[q], man.clothes_id[g], mode="clothes_changing")  # fmt: skip
    assert r.mAP == pytest.approx(m["protocols"]["clothes_changing"]["mAP"], abs=1e-6)


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
    assert "general_single_shot" in m2["protocols"] or "general_single_shot" in m2["skipped"]
    with pytest.raises(DataError, match="manifest not found"):
        evaluate_checkpoint(run / "checkpoints" / "last.pt", "ltcc", tmp_path / "work", progress=False)


def test_cli_table_and_compare(tiny_work, capsys):
    from flows.cli import main

    rc = main(["--workdir", str(tiny_work), "evaluate", "--run", "r1", "--plots", "1", "--compare", "r2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Rank-1" in out and "clothes_changing" in out and "mAP" in out and "vs r2" in out
    m = json.loads((tiny_work / "runs" / "r1" / "metrics.json").read_text())
    assert f"{100 * m['protocols']['general']['mAP']:.1f}" in out
    assert (tiny_work / "runs" / "r1" / "plots" / "compare_clothes_changing.png").exists()
    assert not (tiny_work / "runs" / "r2" / "metrics.json").exists()  # --compare does not write into RUN2
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
