"""`differ run --config F [key=value ...]`: the full pipeline flow for a training config (plus pipeline options).

A training override of a key that other stages read too (``flows.config.SHARED_KEYS``: ``data.dataset``,
``data.workdir``, ``text.encoder``, ``text.perspectives``) reaches those stages. Before anything is written the
pre-flight (``flows.preflight``) checks every file and spec the run will need and lists every problem.
"""

from __future__ import annotations

import argparse

from flows.commands import workdir_option


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True, help="training config YAML (a path or a name of `differ configs`)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="training overrides; data.dataset, text.encoder and text.perspectives also set those stages",
    )
    p.add_argument("--pipeline", default=None, help="YAML of pipeline options (flows.config.PipelineConfig)")
    p.add_argument("--root", default=None, help="dataset root (not needed for synthcc)")
    p.add_argument(
        "--captioner", default=None, help="attributes | hf:<dir> | vllm:<dir> (default attributes)"
    )
    p.add_argument(
        "--caption-batch-size", type=int, default=None, help="images per captioning batch (default 8)"
    )
    p.add_argument("--prompts", default=None, help="prompts YAML (default: captions/prompts.yaml)")
    p.add_argument(
        "--summarizer", default=None, help="extractive | hf:<local causal LM dir> (default extractive)"
    )
    p.add_argument(
        "--encoder",
        default=None,
        help="text encoder spec, e.g. open_clip:EVA02-B-16@/ckpt/eva02_b16.bin (default: the config's "
        "text.encoder); used by the encode stage and training",
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow the VLM's own code to run")
    p.add_argument("--device", default=None, help="captioning/encoding device (default: auto-detect)")
    p.add_argument(
        "--processes", type=int, default=None, help="training processes (GPUs); >1 uses accelerate"
    )
    p.add_argument("--num-machines", type=int, default=None, help="machines taking part in training")
    p.add_argument("--machine-rank", type=int, default=None, help="this machine's rank (0 = main)")
    p.add_argument("--main-process-ip", default=None, help="address of the rank-0 machine")
    p.add_argument("--refresh", default="", help="comma-separated stages to recompute even if cached")
    p.add_argument(
        "--task-runner", choices=["threads", "dask"], default=None, help="how caption tasks are spread"
    )
    p.add_argument("--dask-address", default=None, help="Dask scheduler address (default: a local cluster)")
    p.add_argument(
        "--dask-workers", type=int, default=None, help="workers of the local Dask cluster (default 2)"
    )
    p.add_argument("--no-evaluate", action="store_true", help="stop after training")
    p.add_argument("--no-preflight", action="store_true", help="skip the pre-flight checks (not recommended)")


def resolved_run(args: argparse.Namespace):
    """The run this command line asks for, resolved once (``flows.run_config.resolve_run``)."""
    from flows.run_config import resolve_run

    return resolve_run(
        args.pipeline,
        args.config,
        list(args.overrides),
        workdir=workdir_option(args),
        root=args.root,
        captioner=args.captioner,
        caption_batch_size=args.caption_batch_size,
        prompts=args.prompts,
        summarizer=args.summarizer,
        encoder=args.encoder,
        trust_remote_code=args.trust_remote_code or None,
        device=args.device,
        processes=args.processes,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        main_process_ip=args.main_process_ip,
        refresh=[s for s in args.refresh.split(",") if s] or None,
        task_runner=args.task_runner,
        dask_address=args.dask_address,
        dask_workers=args.dask_workers,
        evaluate=False if args.no_evaluate else None,
    )


def run(args: argparse.Namespace) -> int:
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    run = resolved_run(args)
    if not args.no_preflight:
        from flows.preflight import check_pipeline

        check_pipeline(run, source=args.config)
    from flows.pipeline import differ_pipeline
    from flows.report import print_result, run_flow

    result = run_flow(differ_pipeline, run.pipeline, train=run.train.model_dump(mode="json"))
    print_result(result, f"differ run {run.pipeline.dataset}")
    return 0
