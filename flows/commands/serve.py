"""`differ serve`: serve every differ deployment from this process (Prefect's own server and UI)."""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=None, help="maximum concurrent flow runs")
    p.add_argument(
        "--gpu-slots",
        type=int,
        default=None,
        help="concurrent task runs tagged gpu (a tag concurrency limit; default: keep the existing one, "
        "else one per visible GPU; each GPU's own tag gpu:<id> gets a limit of 1; 0: leave the limits alone)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let submitted runs that ask for trust_remote_code run a VLM's own code (refused otherwise)",
    )


def stop_on_sigterm() -> None:
    """SIGTERM stops serving as Ctrl-C does (Prefect's own handler leaves the process hanging in its shutdown)."""
    from prefect.runner.runner import Runner

    def handle_sigterm(self: Runner, *args: object) -> None:
        raise KeyboardInterrupt

    Runner.handle_sigterm = handle_sigterm  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults(quiet=False)
    from prefect import serve

    from flows.deployments import ensure_gpu_limits, runner_deployments

    if args.gpu_slots is not None and args.gpu_slots < 0:
        from differ_common.errors import ConfigError

        raise ConfigError(f"--gpu-slots {args.gpu_slots}: give a number >= 0")
    from flows.trust import ALLOW_ENV

    os.environ[ALLOW_ENV] = "1" if args.trust_remote_code else "0"
    if args.trust_remote_code:
        print("differ serve: runs that ask for trust_remote_code may run a model's own code", flush=True)
    limits = ensure_gpu_limits(args.gpu_slots)
    if limits is not None:
        per_gpu = sorted(t for t in limits if ":" in t)
        print(
            f"differ serve: at most {limits['gpu']} task run(s) tagged gpu at a time (--gpu-slots)"
            + (f", one at a time on each of {', '.join(per_gpu)}" if per_gpu else ""),
            flush=True,
        )
    stop_on_sigterm()
    serve(*runner_deployments(), limit=args.limit)
    return 0
