"""`differ summarize --dataset D [--summarizer extractive|hf:<dir>]`: per-identity biometric summaries."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset whose biometric captions to summarize")
    p.add_argument(
        "--summarizer",
        default="extractive",
        help="extractive (default, deterministic) | hf:<local causal LM dir>",
    )
    p.add_argument("--device", default=None, help="cuda, cpu ... for hf:<dir> (default: auto)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from captions.summaries import summarize_dataset

    path = summarize_dataset(args.workdir, args.dataset, summarizer=args.summarizer, device=args.device)
    df = pd.read_parquet(path, columns=["pid", "summary", "n_captions"])
    print(f"{len(df)} identity summaries ({args.summarizer}) -> {path}")
    for r in df.head(3).itertuples(index=False):
        print(f"  pid {r.pid} ({r.n_captions} captions): {r.summary}")
    return 0
