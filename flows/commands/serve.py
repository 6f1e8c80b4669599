"""`differ serve`: serve every differ deployment from this process (Prefect's own server and UI)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=None, help="maximum concurrent flow runs")


def run(args: argparse.Namespace) -> int:
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults(quiet=False)
    from prefect import serve

    from flows.deployments import runner_deployments

    serve(*runner_deployments(), limit=args.limit)
    return 0
