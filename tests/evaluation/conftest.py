"""A tiny SynthCC-like workspace: coloured 32x16 images, a manifest, and a run with a random tiny ViT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NUM_TEST_IDS, NUM_TRAIN_IDS, NUM_CAMS = 6, 4, 3
IMG = (32, 16)


def _image(path: Path, pid: int, outfit: int, cam: int, k: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(pid * 1000 + outfit * 100 + cam * 10 + k)
    a = np.zeros((*IMG, 3), np.uint8)
    a[:] = (40 + 30 * cam, 40, 60)  # background per camera
    skin = np.array([(pid * 53) % 255, (pid * 97) % 255, (pid * 31) % 255])
    top = np.array([(outfit * 120 + pid * 7) % 255, (200 - outfit * 90) % 255, 90])
    a[2:10, 4:12] = skin
    a[10:22, 3:13] = top
    a[22:30, 4:12] = 255 - skin
    a = np.clip(a.astype(int) + rng.integers(-12, 12, a.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_tiny_workspace(work: Path, dataset: str = "synthcc") -> Path:
    """W/manifests/<dataset>.parquet over images in W/data/; returns the manifest path."""
    from data_manifests.schema import finalize_manifest, write_manifest

    root = work / "data" / dataset
    rows = []

    def add(split: str, pid: int, outfit: int, cam: int, k: int) -> None:
        rel = f"{split}/{pid:03d}_{outfit}_c{cam}_{k}.png"
        _image(root / rel, pid, outfit, cam, k)
        rows.append({"image_id": rel, "path": str(root / rel), "dataset": dataset, "split": split,
                     "raw_pid": pid, "camid": cam, "clothes_key": f"{pid}_{outfit}"})  # fmt: skip

    for pid in range(100, 100 + NUM_TRAIN_IDS):
        for outfit in range(2):
            for cam in range(2):
                add("train", pid, outfit, cam, 0)
    for pid in range(NUM_TEST_IDS):
        for outfit in range(2):
            add("query", pid, outfit, 0, 0)
            for cam in (1, 2):
                add("gallery", pid, outfit, cam, 0)
    return write_manifest(finalize_manifest(rows), work / "manifests" / f"{dataset}.parquet")


def make_checkpoint(
    run_dir: Path, names=("best", "last"), seed: int = 0, dataset: str = "synthcc", lambda_cam: float = 3.0
) -> Path:
    import torch

    from differ_core.checkpoint import save_checkpoint
    from differ_core.config import config_from_dict
    from differ_core.model import build_model, model_mean_std

    cfg = config_from_dict({
        "data": {"dataset": dataset, "img_size": list(IMG)},
        "model": {"backbone": "vit_tiny_patch16_224", "drop_path": 0.0, "lambda_cam": lambda_cam,
                  "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}},
        "losses": ["id", "triplet"],
        "run": {"name": run_dir.name, "seed": seed, "eval_batch_size": 16},
    })  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(
        cfg, num_classes=NUM_TRAIN_IDS, num_cameras=NUM_CAMS, text_dim=None, load_pretrained=False
    )
    mean, std = model_mean_std(cfg, model)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    for epoch, name in enumerate(names, start=1):
        save_checkpoint(run_dir / "checkpoints" / f"{name}.pt", {
            "model": model.state_dict(), "config": cfg.model_dump(mode="json"), "epoch": epoch, "step": 10 * epoch,
            "num_classes": NUM_TRAIN_IDS, "num_cameras": NUM_CAMS, "text_dim": None, "img_size": list(IMG),
            "mean": list(mean), "std": list(std), "dataset": dataset, "backbone": cfg.model.backbone,
        })  # fmt: skip
    return run_dir


@pytest.fixture(scope="session")
def tiny_work(tmp_path_factory) -> Path:
    """A workspace with the tiny manifest and two runs (r1: best+last, r2: last only, other weights)."""
    work = tmp_path_factory.mktemp("evalwork")
    make_tiny_workspace(work)
    make_checkpoint(work / "runs" / "r1")
    make_checkpoint(work / "runs" / "r2", names=("last",), seed=1)
    return work
