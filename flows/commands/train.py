"""`differ train --config F [key=value ...] [--processes N] [--num-machines M --machine-rank R --main-process-ip IP]`.

One process trains in this process; more go through ``accelerate launch`` (gloo on CPU, NCCL on GPUs). On several
machines run the same command on each with its ``--machine-rank``. A run folder whose saved ``config.yaml`` differs
from the requested config is refused, naming the keys, unless ``--resume-anyway`` (docs/design.md §4).
"""

from __future__ import annotations

import argparse

from flows.commands import workdir_option


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", default="configs/synthcc.yaml", help="training YAML (default configs/synthcc.yaml)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4")
    p.add_argument("--processes", type=int, default=1, help="processes per machine (GPUs; CPU runs use gloo)")
    p.add_argument("--num-machines", type=int, default=1, help="machines taking part")
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank (0 = main)")
    p.add_argument("--main-process-ip", default=None, help="address of the rank-0 machine")
    p.add_argument("--main-process-port", type=int, default=None, help="port of the rank-0 machine")
    p.add_argument(
        "--resume-anyway",
        action="store_true",
        help="continue a run whose saved config.yaml differs from this config (config.yaml is kept; the new "
        "config is saved beside it as config.resumed-N.yaml)",
    )


def resolved_run(args: argparse.Namespace):
    """The run this command line asks for, resolved as `differ run` resolves it (``flows.run_config``: one read of
    the YAML, the same precedence)."""
    from flows.run_config import resolve_run

    return resolve_run(None, args.config, list(args.overrides), workdir=workdir_option(args))


def run(args: argparse.Namespace) -> int:
    from differ_common.workspace import RunLayout
    from flows.stages.pretrain import resolve_outside_flow

    run = resolve_outside_flow(resolved_run(args))
    cfg = run.train
    total = args.processes * args.num_machines
    if total <= 1:
        from differ_core.training import train

        run_dir = train(cfg, resume_anyway=args.resume_anyway)
    else:
        from differ_core.training import check_run_folder, run_dir_for
        from flows.launch import launch_training

        run_dir = run_dir_for(cfg)
        problem = cfg.pretrained_problem(str(args.config))
        if problem:
            from differ_common.errors import ConfigError

            raise ConfigError(problem)
        check_run_folder(run_dir, cfg, args.resume_anyway)  # refuse before launching anything
        launch = {
            "processes": args.processes,
            "num_machines": args.num_machines,
            "machine_rank": args.machine_rank,
            "main_process_ip": args.main_process_ip,
            "main_process_port": args.main_process_port,
        }
        entry = ("--resume-anyway",) if args.resume_anyway else ()
        launch_training(cfg.model_dump(mode="json"), run_dir, launch, log=lambda line: print(line, flush=True),
                        entry_args=entry)  # fmt: skip
    ckpt = RunLayout(run_dir).last
    print(f"run folder: {run_dir}")
    print(f"checkpoint: {ckpt if ckpt.exists() else 'none (stopped before the first checkpoint)'}")
    return 0
