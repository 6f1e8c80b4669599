"""Training data-path throughput: images decoded once (in memory, or in the shared memory-mapped cache) vs
decoded from disk per item.

The paths produce the same augmented, normalised batches (flip, pad + crop, random erasing) for the same P×K
batches of the identity sampler, in the same process:

* **in-memory** (``data.image_cache=memory``): every image decoded once at the training size into one uint8
  tensor of this process; a step gathers its batch by index and augments it as tensors;
* **memory-mapped cache** (the default, :mod:`differ_core.image_cache`): the same uint8 rows in one shared file
  written once (its writing is timed separately), mapped read-only; a step gathers its rows from the map (warm
  page cache: the state of every epoch after the first, and of every rank after the one that wrote it);
* **per-item disk** (the usual ``Dataset.__getitem__`` + torchvision transforms): each image is opened, decoded,
  resized and transformed for every use.

With ``--model`` the in-memory path also runs forward + backward of the configured model so the images/s of a
whole training step can be compared with the data path alone. Prints images/s and the ratio.

    python benchmarks/train_speed.py                          # synthetic 128x64 PNGs in a temp folder
    python benchmarks/train_speed.py --workdir W --dataset synthcc --batches 30 --model
    python benchmarks/train_speed.py --smoke                  # seconds: 32 images, 2 batches of 4x4

The last line (without ``--model``): ``ratio memory-mapped / disk: X.Xx (memory-mapped / in-memory: Y.YY)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, from any directory


def _synthetic_images(folder: Path, n: int, size: tuple[int, int]) -> tuple[list[str], list[int]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, pids = [], []
    for i in range(n):
        arr = rng.integers(0, 255, (size[0] * 2, size[1] * 2, 3), dtype=np.uint8)  # stored at 2x, like crops
        p = folder / f"{i:05d}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
        pids.append(i // 8)
    return paths, pids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="workspace with a manifest (default: synthetic images)")
    ap.add_argument("--dataset", default="synthcc")
    ap.add_argument("--images", type=int, default=512, help="synthetic images to write (without --workdir)")
    ap.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads and decode threads")
    ap.add_argument("--model", action="store_true", help="also time forward+backward (configs/synthcc.yaml)")
    ap.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 32 images, 2 batches")
    ap.add_argument(
        "--config",
        default=str(Path(__file__).resolve().parents[1] / "differ_core" / "configs" / "synthcc.yaml"),
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.batches, args.P, args.K = 32, 2, 4, 4

    import torch
    from torchvision import transforms as T

    from differ_core.config import AugmentationConfig
    from differ_core.data import augment, decode_images
    from differ_core.images import open_images
    from differ_core.sampler import IdentityBatchSampler

    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    tmp = None
    if args.workdir:
        from data_manifests.schema import load_manifest

        m = load_manifest(args.workdir, args.dataset)
        m = m[m["split"] == "train"]
        paths, pids = m["path"].tolist(), m["pid"].tolist()
    else:
        tmp = tempfile.TemporaryDirectory()
        paths, pids = _synthetic_images(Path(tmp.name), args.images, size)
    aug = AugmentationConfig()
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    sampler = IdentityBatchSampler(pids, args.P, args.K, seed=0)
    batches = [b for e in range(100) for b in sampler.batches(e)][: args.batches]
    n_imgs = sum(len(b) for b in batches)

    # in memory: decode once (counted), then gather + tensor augmentation per step
    t0 = time.perf_counter()
    images = decode_images(paths, size, threads=args.threads or 4)
    t_decode = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    augment(images[torch.as_tensor(batches[0])], aug, mean, std, g)  # warm-up, not timed
    t0 = time.perf_counter()
    for b in batches:
        augment(images[torch.as_tensor(b)], aug, mean, std, g)
    t_mem = time.perf_counter() - t0

    # the shared memory-mapped cache: written once (counted), then gather rows from the map + augmentation
    cache_ws = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    mapped = open_images(
        cache_ws.name, "bench", paths, paths, size, threads=args.threads or 4, log=lambda _m: None
    )
    t_write = time.perf_counter() - t0
    assert mapped.kind == "mapped" and bool((mapped[batches[0]] == images[torch.as_tensor(batches[0])]).all())
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for b in batches:
        augment(mapped[b], aug, mean, std, g)
    t_map = time.perf_counter() - t0

    # per item from disk: PIL decode + torchvision transforms for every image of every batch
    from PIL import Image

    tf = T.Compose([
        T.Resize(size), T.RandomHorizontalFlip(aug.flip), T.Pad(aug.pad), T.RandomCrop(size), T.ToTensor(),
        T.Normalize(mean, std), T.RandomErasing(p=aug.erasing, value="random"),
    ])  # fmt: skip

    def load(i: int) -> torch.Tensor:
        with Image.open(paths[i]) as im:
            return tf(im.convert("RGB"))

    t0 = time.perf_counter()
    for b in batches:
        torch.stack([load(i) for i in b])
    t_disk = time.perf_counter() - t0

    mem_ips, map_ips, disk_ips = n_imgs / t_mem, n_imgs / t_map, n_imgs / t_disk
    print(f"{len(paths)} images at {size[0]}x{size[1]}, {len(batches)} batches of {args.P}x{args.K}")
    print(f"one-off decode into memory: {t_decode:.2f} s ({len(paths) / t_decode:.0f} images/s)")
    print(f"one-off cache write       : {t_write:.2f} s ({len(paths) / t_write:.0f} images/s)")
    print(f"in-memory data path : {mem_ips:8.0f} images/s")
    print(f"memory-mapped cache : {map_ips:8.0f} images/s")
    print(f"per-item disk path  : {disk_ips:8.0f} images/s")
    print(f"ratio in-memory / disk: {mem_ips / disk_ips:.1f}x")
    print(
        f"ratio memory-mapped / disk: {map_ips / disk_ips:.1f}x (memory-mapped / in-memory: {map_ips / mem_ips:.2f})"
    )

    if args.model:
        from differ_core.config import load_config
        from differ_core.losses import DifferLoss
        from differ_core.model import build_model

        cfg = load_config(args.config, [f"data.img_size=[{size[0]},{size[1]}]"])
        text_dim = 384
        model = build_model(cfg, max(pids) + 1, 8, text_dim).train()
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        crit = DifferLoss(cfg.losses, cfg.text.non_bio)
        texts = torch.randn(len(paths), len(cfg.text.perspectives), text_dim)
        labels = torch.as_tensor(pids)
        steps = batches[: max(3, len(batches) // 2)]
        t0 = time.perf_counter()
        for i, b in enumerate(steps):
            if i == 1:
                t0 = time.perf_counter()  # the first step warms up
            idx = torch.as_tensor(b)
            x = augment(images[idx], aug, mean, std, g)
            out = model(x, torch.zeros(len(b), dtype=torch.long))
            loss, _ = crit(out, labels[idx], texts[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        step_ips = sum(len(b) for b in steps[1:]) / (time.perf_counter() - t0)
        print(f"training step ({cfg.model.backbone}, forward+backward): {step_ips:.1f} images/s "
              f"(data path share {100 * step_ips / mem_ips:.1f}%)")  # fmt: skip
    if tmp is not None:
        tmp.cleanup()
    del mapped
    cache_ws.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
