"""`differ demo`: the whole pipeline on SynthCC with the embedded defaults.

The default size trains DIFFER from the shipped start (``configs/synthcc.yaml``: ``pretrain:synthcc_start``,
package data, nothing is pre-trained); ``--compare`` also trains the ID + triplet baseline from the same start and
prints both. ``--size tiny`` is the seconds-long smoke run (random weights).
"""

from __future__ import annotations

import argparse

from flows.commands import workdir_option

BASELINE_OVERLAY = "ablations/baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=["tiny", "small", "default"], default=None, help="SynthCC size")
    p.add_argument("--refresh", default="", help="comma-separated stages to recompute")
    p.add_argument(
        "--compare", action="store_true", help="also train the ID + triplet baseline and print both tables"
    )


def demo_run(args: argparse.Namespace, train_config: str) -> object:
    """The demo's run of ``train_config``, resolved once (``flows.run_config.resolve_run``)."""
    from flows.run_config import resolve_run

    opts = {"size": args.size} if args.size else {}
    return resolve_run(
        None,
        train_config,
        [],
        workdir=workdir_option(args),
        manifest_options=opts,
        refresh=[s for s in args.refresh.split(",") if s] or None,
    )


def run(args: argparse.Namespace) -> int:
    import time

    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    from flows.pipeline import differ_pipeline
    from flows.report import print_comparison, print_result, run_flow

    train_config = "configs/synthcc_tiny.yaml" if args.size == "tiny" else "configs/synthcc.yaml"
    t0 = time.time()
    run = demo_run(args, train_config)
    result = run_flow(differ_pipeline, run.pipeline, train=run.train.model_dump(mode="json"))
    print_result(result, "differ demo")
    if args.compare:
        from differ_core.config_files import resolve_config

        base = demo_run(args, str(resolve_config(BASELINE_OVERLAY)))
        baseline = run_flow(differ_pipeline, base.pipeline, train=base.train.model_dump(mode="json"))
        print_comparison({"DIFFER": result, "baseline (ID + triplet)": baseline})
    print(f"done in {time.time() - t0:.0f} s")
    return 0
