"""`differ status [--dataset D]`: what each stage holds and what is stale."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="one dataset (default: every manifest in the workspace)")
    p.add_argument("--encoder", default="minilm", help="encoder whose features to report")


def run(args: argparse.Namespace) -> int:
    from flows.status import print_status

    print_status(args.workdir, args.dataset, args.encoder)
    return 0
