"""Text-encoding throughput: naive (every caption row, batch 1) vs ours (distinct strings, large batches).

Captions: the current SynthCC captions of every perspective (attributes captioner; generated into a temporary
workspace unless ``--workdir``/``--dataset`` name existing ones). Both strategies run in the same process on the
same rows with the same encoder; the vectors are checked to agree.

    python benchmarks/encode_throughput.py                       # minilm, SynthCC "small", up to 2000 rows
    python benchmarks/encode_throughput.py --max-rows 0 --device cuda --encoder open_clip:EVA02-L-14@/w/eva02_l.pt
    python benchmarks/encode_throughput.py --smoke               # seconds: SynthCC "tiny", 64 rows, naive on 16

The last line: ``speed-up X.Xx   max |naive - ours| = D`` (exit status 1 when the vectors disagree).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def synthcc_captions(workdir: str | None, dataset: str, size: str) -> list[str]:
    """Caption strings of every current (image, perspective) row, building a SynthCC workspace if needed."""
    from captions.features.tables import current_caption_rows

    if workdir is None:
        from captions.writer import caption_dataset
        from data_manifests.registry import make_manifest

        workdir = tempfile.mkdtemp(prefix="differ-encode-bench-")
        make_manifest(workdir, "synthcc", None, size=size)
        caption_dataset(workdir, "synthcc")
        dataset = "synthcc"
    frames = current_caption_rows(workdir, dataset)
    return [c for p, df in frames.items() if p != "biometrics_summary" for c in df["caption"].tolist()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--workdir", default=None, help="use this workspace's captions instead of a fresh SynthCC"
    )
    ap.add_argument("--dataset", default="synthcc")
    ap.add_argument("--size", default="small", help="SynthCC size when generating (tiny, small, default)")
    ap.add_argument("--max-rows", type=int, default=0, help="random subset of caption rows (0 = all)")
    ap.add_argument(
        "--naive-rows",
        type=int,
        default=400,
        help="time the naive path on this many random rows and project its rate to all rows (0 = run all rows)",
    )
    ap.add_argument("--naive-batch", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="our batch size (default: sized for the device)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help='seconds, for the test suite: SynthCC "tiny", 64 rows, naive on 16',
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.max_rows, args.naive_rows = "tiny", 64, 16

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from captions.features.encoders import load_encoder
    from captions.features.tables import caption_sha

    texts = synthcc_captions(args.workdir, args.dataset, args.size)
    if args.max_rows and len(texts) > args.max_rows:
        rng = np.random.default_rng(args.seed)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), args.max_rows, replace=False))]
    enc = load_encoder(args.encoder, device=args.device)
    enc.encode(texts[:8])  # warm-up (lazy kernels, allocator) outside both timings

    def sync() -> None:
        if str(enc.device).startswith("cuda"):
            torch.cuda.synchronize()

    # naive: every row through the model, in row order, small batches (timed on a sample when asked)
    rng = np.random.default_rng(args.seed + 1)
    sample = list(range(len(texts)))
    if args.naive_rows and len(texts) > args.naive_rows:
        sample = sorted(rng.choice(len(texts), args.naive_rows, replace=False).tolist())
    sub = [texts[i] for i in sample]
    nb = args.naive_batch
    sync()
    t0 = time.perf_counter()
    naive = np.concatenate([enc.encode(sub[i : i + nb], batch_size=nb) for i in range(0, len(sub), nb)])
    sync()
    t_sample = time.perf_counter() - t0
    t_naive = t_sample * len(texts) / len(sub)

    # ours: hash, keep distinct strings, encode them longest-first in large batches, scatter back
    t0 = time.perf_counter()
    shas = [caption_sha(t) for t in texts]
    first: dict[str, int] = {}
    for i, s in enumerate(shas):
        first.setdefault(s, i)
    uniq_idx = list(first.values())
    vecs = enc.encode([texts[i] for i in uniq_idx], batch_size=args.batch)
    pos = {s: k for k, s in enumerate(first)}
    ours = vecs[[pos[s] for s in shas]]
    sync()
    t_ours = time.perf_counter() - t0

    diff = float(np.abs(naive - ours[sample]).max())
    n, u = len(texts), len(uniq_idx)
    print(f"encoder {enc.spec} ({enc.dim}-d) on {enc.device}, torch threads {torch.get_num_threads()}")
    print(f"caption rows {n}, unique strings {u} (x{n / u:.1f} repetition)")
    how = "measured" if len(sub) == n else f"{t_sample:.2f} s measured on {len(sub)} random rows, projected"
    print(f"naive  batch {nb:<5} {t_naive:8.2f} s  {n / t_naive:8.1f} rows/s  ({how})")
    print(
        f"ours   batch {args.batch or enc.batch_size:<5} {t_ours:8.2f} s  {n / t_ours:8.1f} rows/s  "
        f"({u / t_ours:.1f} unique strings/s)"
    )
    print(f"speed-up {t_naive / t_ours:.1f}x   max |naive - ours| = {diff:.2e}")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
