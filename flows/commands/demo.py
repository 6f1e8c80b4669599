"""`differ demo`: the whole pipeline on SynthCC with the embedded defaults."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=["tiny", "small", "default"], default=None, help="SynthCC size")
    p.add_argument("--refresh", default="", help="comma-separated stages to recompute")


def run(args: argparse.Namespace) -> int:
    import time

    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    from flows.config import load_pipeline_config
    from flows.pipeline import differ_pipeline
    from flows.report import print_result, run_flow

    opts = {"size": args.size} if args.size else {}
    cfg = load_pipeline_config(
        workdir=str(args.workdir),
        manifest_options=opts,
        refresh=[s for s in args.refresh.split(",") if s],
        **({"train_config": "configs/synthcc_tiny.yaml"} if args.size == "tiny" else {}),
    )
    t0 = time.time()
    result = run_flow(differ_pipeline, cfg)
    print_result(result, "differ demo")
    print(f"done in {time.time() - t0:.0f} s")
    return 0
