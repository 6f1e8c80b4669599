"""One image prefix, six perspectives: the shared prefix computed once per image (``HFCaptioner.caption_chunk``)
vs recomputed for every perspective (``HFCaptioner.caption``, the naive reference), same model, same run.

    python benchmarks/caption_prefix.py            # LLaVA of random weights in realistic proportions, CPU
    python benchmarks/caption_prefix.py --smoke    # a few seconds: checks it runs and prints its last line
    python benchmarks/caption_prefix.py --model /models/llava-1.5-7b-hf --images 16

The default model: 576 image tokens (CLIP 336 px / 14), a 512-wide 4-layer Llama with LLaVA's 32k vocabulary,
six perspectives, 32 new tokens, a batch of 8 images. Prints the token counts of one image (prefix, questions,
answers), both times (best of ``--repeats`` interleaved runs), whether the captions are identical, and last
``speed-up prefix reuse / recompute: X.XXx``.
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
    return [Image.fromarray(rng.integers(0, 255, (128 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default=None, help="local LLaVA-style folder (default: build one in a temp dir)"
    )
    ap.add_argument("--images", type=int, default=8, help="images in the batch")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument(
        "--repeats", type=int, default=2, help="interleaved repeats; the best time of each is kept"
    )
    ap.add_argument(
        "--smoke",
        "--quick",
        dest="smoke",
        action="store_true",
        help="a small model and batch: seconds, for the test suite (--quick: the former name)",
    )
    args = ap.parse_args(argv)

    from captions.backends.hf import HFCaptioner
    from captions.backends.prefix import plan_prefix
    from captions.prompts import load_prompts
    from captions.tiny_vlms import build_llava_sized

    if args.smoke:
        args.images, args.new_tokens, args.repeats = 2, 4, 1
    specs = {p: replace(s, max_new_tokens=args.new_tokens) for p, s in load_prompts().items()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir = args.model
        elif args.smoke:
            model_dir = str(build_llava_sized(Path(tmp) / "llava", image_size=112, hidden=64, layers=2,
                                              vision_hidden=64, vision_layers=2, vocab_size=512))  # fmt: skip
        else:
            model_dir = str(build_llava_sized(Path(tmp) / "llava"))
        cap = HFCaptioner(model_dir)
        processor, model = cap.load()
        images = _images(args.images)
        ids = [f"img{k}" for k in range(len(images))]
        wanted = {p: ids for p in specs}
        from captions.backends.hf import image_token_ids

        enc = {p: cap._encode(processor, images[:1], s.prompt) for p, s in specs.items()}
        plan = plan_prefix(enc, image_token_ids(model.config, processor))
        if plan is None:
            print(f"{model_dir}: the prompts do not share an image prefix; nothing to reuse")
            return 1
        n_image = sum(int(t in image_token_ids(model.config, processor)) for t in plan.prefixes[0])
        prefix = len(plan.prefixes[0])
        question = sum(len(s) for s in plan.suffixes.values()) / len(plan.suffixes)
        print(f"model {Path(model_dir).name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
              f"{len(images)} images x {len(specs)} perspectives, {args.new_tokens} new tokens")  # fmt: skip
        print(f"tokens per image and perspective: prefix {prefix} (image {n_image}), question {question:.0f}, "
              f"answer {args.new_tokens}")  # fmt: skip
        cap.caption(images[:1], replace(specs["pose"], max_new_tokens=2))  # warm-up
        best = {"recompute": float("inf"), "reuse": float("inf")}
        out = {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out["recompute"] = {p: cap.caption(images, s) for p, s in specs.items()}
            best["recompute"] = min(best["recompute"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            out["reuse"] = cap.caption_chunk(images, specs, ids, wanted, batch_size=len(images))
            best["reuse"] = min(best["reuse"], time.perf_counter() - t0)
        same = out["recompute"] == out["reuse"]
        print(f"recompute (every perspective re-reads the image): {best['recompute']:.2f}s")
        print(f"prefix reuse (once per image, then the questions): {best['reuse']:.2f}s")
        print(f"captions identical: {'yes' if same else 'NO'}")
        print(f"speed-up prefix reuse / recompute: {best['recompute'] / best['reuse']:.2f}x")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
