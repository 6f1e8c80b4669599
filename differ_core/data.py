"""Training data: images decoded once at the training size, text features aligned to the rows, gathered per batch.

docs/design.md §10: a training step gathers its images (``uint8 [B, 3, H, W]``) from an image source
(:mod:`differ_core.images`: by default the shared memory-mapped cache of decoded images, one file for every
rank and run) and its text features (``[B, 1+K, D]``) from per-perspective memory-mapped arrays
(:class:`captions.features.reader.TextFeatures`), then augments the batch as tensors (flip, random crop, random
erasing: the SynthCC variants or the official ones, ``data.augmentation``) with a generator seeded from
``(seed, rank, step)``, so a resumed run draws exactly the same augmentation as an uninterrupted one. Whatever
the source, a batch holds the same bytes.

Validation: ``run.val_ids`` of the train identities (drawn with ``run.seed``) are held out of training; their
images are split into query and gallery (alternating within each identity) and ranked with
:func:`differ_core.evaluation.evaluate_ranking` under ``run.select_protocol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from differ_common.errors import DataError
from differ_core.config import AugmentationConfig, TrainConfig
from differ_core.decode import decode_image, decode_images  # noqa: F401  (their former home)


# --------------------------------------------------------------------------- transforms
def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``uint8 [B, 3, H, W]`` → float, ``(x / 255 - mean) / std``."""
    x = images.float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def resize_crop(images: torch.Tensor, p: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """The official ``RandomCroping``: with probability ``p`` enlarge to ``round(scale * size)`` (bilinear) and crop
    back at offsets ``round(uniform(0, extra))``; ``uint8 [B, 3, H, W]`` in and out.

    The enlargement is torchvision's bilinear resize on uint8 tensors (the PIL-compatible kernel); the draw of the
    offsets is the official one, which no library transform has.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    B, _, H, W = images.shape
    g = generator
    do = torch.rand(B, generator=g) < p
    nh, nw = int(round(H * scale)), int(round(W * scale))
    oy = torch.round(torch.rand(B, generator=g, dtype=torch.float64) * (nh - H)).long()
    ox = torch.round(torch.rand(B, generator=g, dtype=torch.float64) * (nw - W)).long()
    if not bool(do.any()):
        return images
    out = images.clone()
    sel = torch.nonzero(do).flatten()
    big = TF.resize(
        images[sel.to(images.device)], [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    for j, i in enumerate(sel.tolist()):
        y, x = int(oy[i]), int(ox[i])
        out[i] = big[j, :, y : y + H, x : x + W]
    return out


# the official RandomErasing defaults (data/img_transforms.py): area 2-40 %, aspect uniform in (0.3, 1/0.3), 100 tries
ERASE_AREA = (0.02, 0.4)
ERASE_R1 = 0.3
ERASE_TRIES = 100


def official_erasing_boxes(
    area_u: torch.Tensor, aspect_u: torch.Tensor, H: int, W: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, w, ok)`` per image of the official erasing given its uniforms ``[B, tries]`` in [0, 1): try ``t`` has
    area ``uniform(0.02, 0.4) * H * W`` and aspect ``uniform(0.3, 1 / 0.3)``, ``h = round(sqrt(area * aspect))``,
    ``w = round(sqrt(area / aspect))``; the first try with ``h < H`` and ``w < W`` is taken (``ok`` False: none)."""
    lo, hi = ERASE_AREA
    area = (lo + (hi - lo) * area_u.double()) * (H * W)
    aspect = ERASE_R1 + (1 / ERASE_R1 - ERASE_R1) * aspect_u.double()
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < H) & (w < W)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    return h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1), fits.any(1)


def official_erasing(
    x: torch.Tensor, p: float, fill: tuple[float, ...], generator: torch.Generator
) -> torch.Tensor:
    """The official ``RandomErasing`` (Zhong et al.) on a normalised float batch, in place: with probability
    ``p`` one rectangle (:func:`official_erasing_boxes`) at ``randint(0, H - h)``, ``randint(0, W - w)`` is set to
    the constant ``fill`` per channel. torchvision's and timm's erasing draw the aspect log-uniformly with 10
    tries, so this is written out."""
    B, C, H, W = x.shape
    g = generator
    erase = torch.rand(B, generator=g) < p
    area_u = torch.rand(B, ERASE_TRIES, generator=g, dtype=torch.float64)
    aspect_u = torch.rand(B, ERASE_TRIES, generator=g, dtype=torch.float64)
    h, w, ok = official_erasing_boxes(area_u, aspect_u, H, W)
    top = (torch.rand(B, generator=g, dtype=torch.float64) * (H - h + 1).clamp_min(1)).long()
    left = (torch.rand(B, generator=g, dtype=torch.float64) * (W - w + 1).clamp_min(1)).long()
    value = torch.tensor(fill, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    for i in torch.nonzero(erase & ok).flatten().tolist():
        hi, wi, yi, xi = int(h[i]), int(w[i]), int(top[i]), int(left[i])
        x[i, :, yi : yi + hi, xi : xi + wi] = value[:C]
    return x


def _noise_erasing(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing with N(0, 1) noise (timm's ``mode='pixel'``): area 2-40 %, aspect log-uniform in 0.3-3.3,
    the first of 10 draws that fits."""
    B, C, H, W = x.shape
    g, dev = generator, x.device
    tries = 10
    erase = torch.rand(B, generator=g) < p
    area = H * W * torch.empty(B, tries).uniform_(0.02, 0.4, generator=g)
    ratio = torch.exp(torch.empty(B, tries).uniform_(float(np.log(0.3)), float(np.log(1 / 0.3)), generator=g))
    h = torch.sqrt(area * ratio).round().long()
    w = torch.sqrt(area / ratio).round().long()
    fits = (h > 0) & (h < H) & (w > 0) & (w < W)
    first = fits.float().argmax(1)  # the first draw that fits
    ok = erase & fits.any(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    w = w.gather(1, first[:, None]).squeeze(1)
    y0 = (torch.rand(B, generator=g) * (H - h + 1).clamp_min(1)).long()
    x0 = (torch.rand(B, generator=g) * (W - w + 1).clamp_min(1)).long()
    for i in torch.nonzero(ok).flatten().tolist():
        hi, wi, yi, xi = int(h[i]), int(w[i]), int(y0[i]), int(x0[i])
        x[i, :, yi : yi + hi, xi : xi + wi] = torch.randn((C, hi, wi), generator=g).to(dev, x.dtype)
    return x


def _flip(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    B = x.shape[0]
    flip = (torch.rand(B, generator=generator) < p).to(x.device)
    return torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)


def _grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, every channel set to the luma ``0.299 R + 0.587 G + 0.114 B``."""
    B = x.shape[0]
    grey = (torch.rand(B, generator=generator) < p).to(x.device)
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    luma = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(x.dtype).expand_as(x)
    return torch.where(grey.view(B, 1, 1, 1), luma, x)


def _pad_crop(x: torch.Tensor, pad: int, p: float, generator: torch.Generator) -> torch.Tensor:
    B, _, H, W = x.shape
    g = generator
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    do = torch.rand(B, generator=g) < p
    oy = torch.where(do, torch.randint(0, 2 * pad + 1, (B,), generator=g), pad)
    ox = torch.where(do, torch.randint(0, 2 * pad + 1, (B,), generator=g), pad)
    out = torch.empty_like(x)
    for i, (y, z) in enumerate(zip(oy.tolist(), ox.tolist(), strict=True)):
        out[i] = padded[i, :, y : y + H, z : z + W]
    return out


def augment(
    images: torch.Tensor,
    aug: AugmentationConfig,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    generator: torch.Generator,
) -> torch.Tensor:
    """Training transform of a ``uint8 [B, 3, H, W]`` batch, then normalised.

    ``crop_style=pad``: flip, zero pad + random crop, normalise, erasing. ``crop_style=resize`` (the official
    order): :func:`resize_crop`, flip, normalise, erasing. ``grayscale`` > 0 greys images just before normalising
    (off in every shipped config). Erasing is :func:`official_erasing` or the N(0, 1) noise variant
    (``erasing_style``). Draws are batched; every draw comes from ``generator`` (a CPU generator),
    so the result is a function of the generator's seed.
    """
    g = generator
    x = images
    if aug.crop_style == "resize":
        if aug.crop > 0:
            x = resize_crop(x, aug.crop, aug.crop_scale, g)
        if aug.flip > 0:
            x = _flip(x, aug.flip, g)
    else:
        if aug.flip > 0:
            x = _flip(x, aug.flip, g)
        if aug.pad > 0 and aug.crop > 0:
            x = _pad_crop(x, aug.pad, aug.crop, g)
    if aug.grayscale > 0:
        x = _grayscale(x, aug.grayscale, g)
    x = normalize(x, mean, std)
    if aug.erasing > 0:
        if aug.erasing_style == "official":
            x = official_erasing(x, aug.erasing, aug.erasing_fill, g)
        else:
            x = _noise_erasing(x, aug.erasing, g)
    return x


# --------------------------------------------------------------------------- text features
def _features_from_file(path: str, image_ids: list[str], n_slots: int) -> torch.Tensor:
    """The ``[N, 1+K, D]`` rows of a ``text.features_file`` for ``image_ids`` (held in memory)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: text.features_file not found")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{p}: cannot read text features with weights_only=True ({exc})") from None
    if not isinstance(blob, dict) or "image_ids" not in blob or "features" not in blob:
        raise DataError(f"{p}: expected a dict with 'image_ids' (list of str) and 'features' [N, 1+K, D]")
    feats = torch.as_tensor(blob["features"]).float()
    ids = [str(i) for i in blob["image_ids"]]
    if feats.ndim != 3 or feats.shape[0] != len(ids):
        raise DataError(
            f"{p}: features must be [N, 1+K, D] with N = len(image_ids); got {tuple(feats.shape)}"
        )
    if feats.shape[1] != n_slots:
        raise DataError(
            f"{p}: features have {feats.shape[1]} perspective slots but text.perspectives lists {n_slots}"
        )
    pos = {iid: i for i, iid in enumerate(ids)}
    missing = [iid for iid in image_ids if iid not in pos]
    if missing:
        raise DataError(
            f"{p}: {len(missing)} training images have no text feature, e.g. {missing[:5]}; "
            "regenerate the features file for this manifest"
        )
    return feats[torch.as_tensor([pos[i] for i in image_ids], dtype=torch.long)].contiguous()


def load_features(cfg: TrainConfig, workdir: str | Path, rows: pd.DataFrame, log: Any = print) -> Any:
    """The text features of ``rows`` (``[len(rows), len(text.perspectives), D]``, gathered per batch as float32):
    the workspace's shared memory-mapped perspectives, or a ``text.features_file`` held in memory; stored as
    ``text.feature_dtype``. Each row reads the features of its caption target (``text.caption_targets``,
    :mod:`captions.targets`: itself, or the captioned frame of its tracklet)."""
    from captions.features.reader import TextFeatures, open_text_features
    from captions.targets import caption_keys

    perspectives = list(cfg.text.perspectives)
    rows = rows.reset_index(drop=True)
    keys = caption_keys(rows, cfg.text.caption_targets, cfg.text.caption_every_k, cfg.data.dataset)
    if cfg.text.features_file:
        dense = _features_from_file(cfg.text.features_file, keys.tolist(), len(perspectives))
        return TextFeatures.from_dense(dense, cfg.text.feature_dtype)
    feats = open_text_features(
        workdir, cfg.data.dataset, cfg.text.encoder, rows, perspectives, cfg.text.bio_source,
        cfg.text.feature_dtype, log, caption_ids=keys,
    )  # fmt: skip
    if feats.shape[:2] != (len(rows), len(perspectives)):
        raise DataError(
            f"text features for {cfg.data.dataset}/{cfg.text.encoder} have shape {feats.shape}; expected "
            f"[{len(rows)}, {len(perspectives)}, D]"
        )
    return feats


# --------------------------------------------------------------------------- the training set
@dataclass
class TrainData:
    """Everything a training run reads: ``images[idx]`` and ``texts[idx]`` gather one batch."""

    images: Any  # differ_core.images.ImageSource, uint8 [N, 3, H, W] (training identities)
    labels: torch.Tensor  # int64 [N] 0..num_classes-1
    camids: torch.Tensor  # int64 [N]
    texts: Any  # captions.features.reader.TextFeatures [N, 1+K, D] (float32 batches), or None
    image_ids: list[str]
    num_classes: int
    num_cameras: int
    val: dict[str, Any] = field(
        default_factory=dict
    )  # images (an ImageSource), pids, camids, clothes, is_query
    tracks: np.ndarray | None = None  # int64 [N] tracklet code per row (video manifests), else None
    frames: np.ndarray | None = None  # int64 [N] frame index within the tracklet

    @property
    def text_dim(self) -> int | None:
        return None if self.texts is None else int(self.texts.shape[-1])


def split_val_ids(pids: list[int], fraction: float, seed: int) -> set[int]:
    """The held-out identities: ``round(fraction * n)`` of the sorted train pids, drawn with ``seed``."""
    uniq = sorted(set(int(p) for p in pids))
    n = int(round(fraction * len(uniq)))
    if fraction > 0:
        n = max(n, 2)
    if n >= len(uniq) - 1:
        raise DataError(
            f"run.val_ids={fraction} would hold out {n} of {len(uniq)} train identities; lower it"
        )
    rng = np.random.default_rng([seed, 0xA1])
    return set(int(p) for p in rng.choice(uniq, n, replace=False)) if n else set()


def prepare_data(cfg: TrainConfig, workdir: str | Path, rank_log: Any = print) -> TrainData:
    """Read the manifest, hold out validation identities, open the images (``data.image_cache``: one cache of the
    train split for training and validation) and the text features."""
    from data_manifests.schema import load_manifest
    from differ_core.images import open_images

    manifest = load_manifest(workdir, cfg.data.dataset)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise DataError(f"{workdir}: the {cfg.data.dataset} manifest has no train rows")
    num_cameras = int(manifest["camid"].max()) + 1
    held = split_val_ids(train["pid"].tolist(), cfg.run.val_ids, cfg.run.seed)
    is_val = train["pid"].isin(held)
    tr = train[~is_val].reset_index(drop=True)
    va = train[is_val].reset_index(drop=True)
    relabel = {p: i for i, p in enumerate(sorted(tr["pid"].unique().tolist()))}
    size = tuple(cfg.data.img_size)
    texts = load_features(cfg, workdir, tr, rank_log) if cfg.needs_text else None
    d = cfg.data
    rank_log(
        f"{len(tr)} train + {len(va)} validation images at {size[0]}x{size[1]} (data.image_cache={d.image_cache})"
    )
    source = open_images(
        workdir, f"{cfg.data.dataset}-train", train["path"].tolist(), train["image_id"].tolist(), size,
        mode=d.image_cache, max_gb=d.image_cache_max_gb, threads=d.decode_threads, num_workers=d.num_workers,
        log=rank_log,
    )  # fmt: skip
    images = source.subset(np.flatnonzero(~is_val.to_numpy()))
    val: dict[str, Any] = {}
    if len(va):
        rng = np.random.default_rng([cfg.run.seed, 0xB2])
        is_query = np.zeros(len(va), dtype=bool)
        for _, idx in va.groupby("pid").indices.items():
            order = rng.permutation(idx)
            is_query[order[::2]] = True
        val = {
            "images": source.subset(np.flatnonzero(is_val.to_numpy())),
            "pids": va["pid"].to_numpy(np.int64),
            "camids": va["camid"].to_numpy(np.int64),
            "clothes": va["clothes_id"].to_numpy(np.int64),
            "is_query": is_query,
            "image_ids": va["image_id"].tolist(),
        }
    tracks = frames = None
    if "track_id" in tr.columns and len(tr) and tr["track_id"].notna().all():
        tracks = pd.factorize(tr["track_id"].astype(str), sort=True)[0].astype(np.int64)
        has_frame = "frame" in tr.columns
        frames = tr["frame"].fillna(0).to_numpy(np.int64) if has_frame else np.zeros(len(tr), np.int64)
    return TrainData(
        images=images,
        labels=torch.tensor(tr["pid"].map(relabel).to_numpy(np.int64)),
        camids=torch.tensor(tr["camid"].to_numpy(np.int64)),
        texts=texts,
        image_ids=tr["image_id"].tolist(),
        num_classes=len(relabel),
        num_cameras=num_cameras,
        val=val,
        tracks=tracks,
        frames=frames,
    )
