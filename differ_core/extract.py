"""Identity features of images with a trained checkpoint (the inference model: image encoder only).

    from differ_core.extract import extract_features
    feats, ids = extract_features("W/runs/r/checkpoints/best.pt", manifest_df)        # ids = image_id
    feats, ids = extract_features(ckpt, ["a.jpg", "b.jpg"], camids=[0, 1], flip=True)  # ids = the paths

Images are resized to the checkpoint's ``img_size`` (H, W), scaled to [0, 1] and normalised with its mean/std
(the evaluation transform of training). ``flip=True`` adds the features of the horizontally flipped image
(flip test-time augmentation; the sum is L2-normalised by the distance anyway). The forward pass runs in fp32 on
every device (no autocast, as the official evaluation); features are returned as float32.

Images are read one batch at a time (features accumulate, images do not): decoded from the files by threads
while the previous batch runs, or gathered from the shared image cache (``workdir`` given and the checkpoint's
``data.image_cache`` is ``auto``/``disk``; :mod:`differ_core.images`), which holds the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from differ_common.device import pick_device
from differ_common.errors import DataError


def load_image(path: str, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
    """One image as a normalised float tensor [3, H, W] (bilinear resize to ``size`` = (H, W))."""
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((int(size[1]), int(size[0])), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read the image ({exc}); fix or remove it and rebuild the manifest"
        ) from None
    t = torch.from_numpy(arr).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (t - m) / s


def _inputs(images: Any, camids: Any) -> tuple[list[str], list[str], np.ndarray | None]:
    """(paths, ids, camids) from a manifest DataFrame or a list of paths."""
    if hasattr(images, "columns"):  # a manifest DataFrame
        if "path" not in images.columns:
            raise DataError("images: a manifest DataFrame needs a 'path' column (see docs/design.md §5)")
        paths = images["path"].astype(str).tolist()
        ids = images["image_id"].astype(str).tolist() if "image_id" in images.columns else list(paths)
        if camids is None and "camid" in images.columns:
            camids = images["camid"].to_numpy()
    else:
        if isinstance(images, (str, Path)):
            images = [images]
        paths = [str(p) for p in images]
        ids = list(paths)
    cams = None
    if camids is not None:
        cams = np.asarray(camids).astype(np.int64).reshape(-1)
        if cams.shape[0] != len(paths):
            raise DataError(f"camids: {cams.shape[0]} camera ids for {len(paths)} images")
    return paths, ids, cams


def extract_with_model(
    model: Any,
    info: dict[str, Any],
    paths: Sequence[str],
    camids: np.ndarray | None = None,
    batch_size: int = 128,
    flip: bool = False,
    device: str | None = None,
    num_threads: int = 4,
    progress: bool | Callable[[float], None] = True,
    desc: str = "features",
    images: Any = None,
) -> np.ndarray:
    """Features [N, F] float32 of ``paths`` with an already loaded eval-mode ``model(images, camids)``;
    ``images``: an image source of ``paths`` at the model's size to gather the batches from (else decoded)."""
    import torch

    from differ_core.data import normalize

    if batch_size < 1:
        raise DataError(f"batch_size: must be >= 1, got {batch_size}")
    dev = torch.device(pick_device(device))
    model = model.to(dev).eval()
    size, mean, std = tuple(info["img_size"]), info["mean"], info["std"]
    num_cameras = info.get("num_cameras")
    uses_cams = getattr(model, "camera_embed", True) is not None
    if camids is not None and len(camids) and num_cameras is not None and uses_cams:
        if int(camids.min()) < 0 or int(camids.max()) >= int(num_cameras):
            raise DataError(
                f"camids: camera ids {int(camids.min())}..{int(camids.max())} outside the model's 0.."
                f"{int(num_cameras) - 1}; evaluate on the dataset the checkpoint was trained on"
            )
    n = len(paths)
    if images is not None and (len(images) != n or tuple(images.size) != tuple(int(v) for v in size)):
        raise DataError(f"images: a source of {len(images)} images at {images.size} for {n} paths at {size}")
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="img", leave=False)
    out: list[np.ndarray] = []
    load = lambda p: load_image(p, size, mean, std)  # noqa: E731
    with ThreadPoolExecutor(max(1, int(num_threads))) as pool, torch.inference_mode():
        batches = [range(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
        nxt = pool.map(load, [paths[i] for i in batches[0]]) if batches and images is None else None
        for bi, idx in enumerate(batches):
            if images is not None:  # gathered from the cache: the same bytes, normalised the same way
                imgs = normalize(images[idx.start : idx.stop].to(dev, non_blocking=True), mean, std)
            else:
                imgs = torch.stack(list(nxt))
                if bi + 1 < len(batches):  # decode the next batch while this one runs
                    nxt = pool.map(load, [paths[i] for i in batches[bi + 1]])
                imgs = imgs.to(dev, non_blocking=True)
            cams = None if camids is None else torch.tensor(camids[idx.start : idx.stop], device=dev)
            f = model(imgs, cams)  # fp32
            if flip:
                f = f + model(torch.flip(imgs, dims=[3]), cams)
            out.append(f.float().cpu().numpy())
            if bar is not None:
                bar.update(len(idx))
            elif callable(progress):
                progress(idx.stop / n)
    if bar is not None:
        bar.close()
    if not out:
        raise DataError("images: no image to extract features from")
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)


def extract_features(
    checkpoint: str | Path,
    images: Any,
    camids: Any = None,
    batch_size: int = 128,
    flip: bool = False,
    device: str | None = None,
    num_threads: int = 4,
    progress: bool = True,
    workdir: str | Path | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``(features [N, F] float32, ids)`` of a manifest DataFrame (ids = image_id, camids from the manifest) or
    of image paths (ids = the paths; ``camids`` optional: without them the camera embedding is left out).
    ``workdir``: read the images through that workspace's image cache (see the module doc)."""
    from differ_core.images import cached_source
    from differ_core.model import load_model_for_inference

    paths, ids, cams = _inputs(images, camids)
    model, cfg, info = load_model_for_inference(checkpoint, map_location="cpu")
    source = cached_source(cfg.data, workdir, "extract", paths, ids, tuple(info["img_size"]))
    feats = extract_with_model(
        model, info, paths, cams, batch_size=batch_size, flip=flip, device=device, num_threads=num_threads,
        progress=progress, images=source,
    )  # fmt: skip
    return feats, ids
