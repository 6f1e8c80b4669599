"""A toy CC-ReID workspace built in tmp: tiny PIL images, a validated manifest and a text-features file."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

PERSPECTIVES = ["biometrics", "hairstyle", "clothing"]
TEXT_DIM = 8


def make_toy_workspace(
    root: Path,
    num_ids: int = 8,
    outfits: int = 2,
    cams: int = 2,
    per: int = 2,
    size: tuple[int, int] = (32, 16),
) -> dict:
    """``num_ids`` train identities (+4 test ids in query/gallery) with ``outfits`` × ``cams`` × ``per`` images
    each. An image is a body of the identity's colour with an outfit-coloured band; returns paths and ids."""
    from PIL import Image

    from data_manifests.schema import finalize_manifest, write_manifest

    rng = np.random.default_rng(0)
    img_dir = root / "data"
    rows = []
    for split, pids in (("train", range(num_ids)), ("query", range(100, 102)), ("gallery", range(100, 104))):
        for pid in pids:
            body = rng.integers(0, 255, 3)
            for o in range(outfits):
                band = rng.integers(0, 255, 3)
                for c in range(cams):
                    for k in range(per if split != "query" else 1):
                        arr = np.zeros((size[0], size[1], 3), np.uint8)
                        arr[:] = body
                        arr[size[0] // 3 : 2 * size[0] // 3] = band
                        arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
                        iid = f"{split}/{pid:03d}_{o}_c{c}_{k}.png"
                        path = img_dir / iid
                        path.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(arr).save(path)
                        rows.append(dict(image_id=iid, path=str(path), dataset="toy", split=split, raw_pid=pid,
                                         camid=c, clothes_key=f"{pid}_{o}"))  # fmt: skip
    df = finalize_manifest(rows)
    work = root / "work"
    write_manifest(df, work / "manifests" / "toy.parquet")
    train = df[df["split"] == "train"]
    # text features: biometrics from the identity, the others from the outfit (+ noise)
    feats = np.zeros((len(train), len(PERSPECTIVES), TEXT_DIM), np.float32)
    for i, (pid, ck) in enumerate(zip(train["pid"], train["clothes_key"], strict=True)):
        feats[i, 0] = np.random.default_rng(int(pid)).normal(size=TEXT_DIM)
        feats[i, 1] = np.random.default_rng(1000 + int(pid)).normal(size=TEXT_DIM)
        feats[i, 2] = np.random.default_rng(zlib.crc32(str(ck).encode())).normal(size=TEXT_DIM)
    import torch

    feat_file = root / "features.pt"
    torch.save({"image_ids": train["image_id"].tolist(), "features": torch.from_numpy(feats)}, feat_file)
    return {"work": work, "features": feat_file, "manifest": df}


def toy_config(toy: dict, run_dir: Path, **sections) -> dict:
    """A tiny, fast training config dict for the toy workspace."""
    cfg = {
        "data": {"dataset": "toy", "workdir": str(toy["work"]), "img_size": [32, 16], "decode_threads": 1,
                 "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "text": {"perspectives": PERSPECTIVES, "features_file": str(toy["features"])},
        "model": {"backbone": "vit_tiny_patch16_224", "backbone_kwargs": {"depth": 2}, "drop_path": 0.1},
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
        "schedule": {"epochs": 2, "warmup_epochs": 0.5},
        "sampler": {"P": 2, "K": 2},
        "run": {"name": "toy", "output": str(run_dir), "val_ids": 0.25, "progress": False, "log_every": 1,
                "threads": 1},
    }  # fmt: skip
    for sec, vals in sections.items():
        cfg[sec] = {**cfg.get(sec, {}), **vals}
    return cfg


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> dict:
    return make_toy_workspace(tmp_path_factory.mktemp("toy"))
