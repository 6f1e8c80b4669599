"""Evaluation and extraction read one batch of images at a time, from the shared image cache or the files, and
give the same features and metrics either way (docs/design.md §10)."""

from __future__ import annotations

import numpy as np

from differ_core.config import DataConfig


def _loaded(tiny_work):
    from data_manifests.schema import load_manifest
    from differ_core.model import load_model_for_inference

    model, cfg, info = load_model_for_inference(tiny_work / "runs" / "r1" / "checkpoints" / "best.pt")
    return model, cfg, info, load_manifest(tiny_work, "synthcc")


def _evaluate(tiny_work, data_cfg, workdir):
    from differ_core.evaluation.runner import evaluate_loaded

    model, _cfg, info, man = _loaded(tiny_work)
    ev = evaluate_loaded(model, info, man, dataset="synthcc", run="r1", selection="val-best", checkpoint="c",
                         out_dir=None, batch_size=5, progress=False, workdir=workdir, data_cfg=data_cfg)  # fmt: skip
    return ev.metrics["protocols"]


def test_evaluation_from_the_cache_gives_the_metrics_of_per_batch_decoding(tiny_work, tmp_path):
    decoded = _evaluate(tiny_work, DataConfig(image_cache="off"), tmp_path)
    assert not (tmp_path / "cache").exists()  # off: nothing written, decoded per batch
    cached = _evaluate(tiny_work, DataConfig(), tmp_path)
    assert len(list((tmp_path / "cache" / "images").glob("synthcc-eval-*.npy"))) == 1
    assert cached == decoded and decoded  # every protocol, every number


class _Recording:
    """An image source that records the rows of each read."""

    def __init__(self, inner) -> None:
        self.inner, self.size, self.reads = inner, inner.size, []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, idx):
        out = self.inner[idx]
        self.reads.append(len(out))
        return out


def test_extraction_reads_one_batch_at_a_time_and_matches_the_files(tiny_work, tmp_path):
    from differ_core.extract import extract_with_model
    from differ_core.images import open_images

    model, _cfg, info, man = _loaded(tiny_work)
    rows = man[man["split"].isin(["query", "gallery"])]
    paths, cams = rows["path"].tolist(), rows["camid"].to_numpy(np.int64)
    src = _Recording(open_images(tmp_path, "ev", paths, rows["image_id"].tolist(), info["img_size"]))
    from_cache = extract_with_model(model, info, paths, cams, batch_size=7, progress=False, images=src)
    from_files = extract_with_model(model, info, paths, cams, batch_size=7, progress=False)
    assert np.array_equal(from_cache, from_files)
    assert max(src.reads) <= 7 and sum(src.reads) == len(paths)  # features accumulate, images do not
