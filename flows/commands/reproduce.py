"""`differ reproduce RUN [--workdir W] [--tolerance X]`: rebuild, retrain and re-evaluate a run from its record."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run folder to reproduce (W0/runs/<run>, holding reproduce.json)")
    p.add_argument(
        "--tolerance", type=float, default=0.0,
        help="largest metric difference (fraction, e.g. 0.005) that still agrees; default 0: exact",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    from flows.reproduce import reproduce

    return reproduce(args.run, args.workdir, tolerance=args.tolerance)
