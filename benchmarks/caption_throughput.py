"""Caption throughput: one-image-at-a-time ``generate`` (the naive reference) vs batched generation with left
padding, through the same ``hf:<dir>`` backend the caption writer uses, measured in the same run.

    python benchmarks/caption_throughput.py                      # tiny random LLaVA built offline, CPU, ~1 min
    python benchmarks/caption_throughput.py --model /models/llava-1.5-7b-hf --images 64 --batch-size 16
    python benchmarks/caption_throughput.py --smoke              # seconds: 4 images, batches of 2, 4 new tokens

Prints images/s of both paths (best of ``--repeats`` interleaved runs), then last their ratio and whether greedy
outputs agree: ``speed-up batched / per-image: X.XXx; greedy outputs agree on A/N images``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _images(n: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default=None, help="local VLM folder (default: build the tiny LLaVA in a temp dir)"
    )
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument(
        "--repeats", type=int, default=2, help="interleaved repeats; the best time of each is kept"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--perspective", default="clothing")
    ap.add_argument("--device", default=None)
    ap.add_argument("--smoke", action="store_true", help="seconds, for the test suite: 4 images, 1 repeat")
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.batch_size, args.max_new_tokens, args.repeats = 4, 2, 4, 1

    import torch

    from captions.backends.hf import HFCaptioner
    from captions.prompts import load_prompts

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from captions.testing import build_tiny_llava

            model_dir = str(build_tiny_llava(Path(tmp) / "tiny-llava"))
        cap = HFCaptioner(model_dir, device=args.device)
        spec = replace(load_prompts()[args.perspective], max_new_tokens=args.max_new_tokens)
        images = _images(args.images)
        cap.caption(images[:2], spec)  # load + warm up both paths
        cap.caption(images[:1], spec)

        # interleaved repeats, best time of each path: robust to other load on a shared machine
        t_naive = t_batched = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            naive = [cap.caption([im], spec)[0] for im in images]
            t_naive = min(t_naive, time.perf_counter() - t0)

            t0 = time.perf_counter()
            batched: list[str] = []
            for s in range(0, len(images), args.batch_size):
                batched += cap.caption(images[s : s + args.batch_size], spec)
            t_batched = min(t_batched, time.perf_counter() - t0)

        _, model = cap.load()
        agree = sum(a == b for a, b in zip(naive, batched, strict=True))
        print(
            f"model {cap.name} on {model.device} ({model.dtype}), {args.images} images, "
            f"prompt '{args.perspective}', max_new_tokens {args.max_new_tokens}, threads {torch.get_num_threads()}"
        )
        print(f"per-image generate : {args.images / t_naive:8.2f} images/s  ({t_naive:.2f} s)")
        print(
            f"batched (bs={args.batch_size:<3d})   : {args.images / t_batched:8.2f} images/s  ({t_batched:.2f} s)"
        )
        print(
            f"speed-up batched / per-image: {t_naive / t_batched:.2f}x; greedy outputs agree on "
            f"{agree}/{len(images)} images"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
