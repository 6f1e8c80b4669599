"""`differ run --config F`: the full pipeline flow for a training config (plus pipeline options)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training config YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="training overrides key=value")
    p.add_argument("--pipeline", default=None, help="YAML of pipeline options (flows.config.PipelineConfig)")
    p.add_argument("--root", default=None, help="dataset root (not needed for synthcc)")
    p.add_argument("--captioner", default=None, help="attributes | hf:<dir> | vllm:<dir>")
    p.add_argument("--prompts", default=None, help="prompts YAML")
    p.add_argument("--summarizer", default=None, help="extractive | hf:<local causal LM dir>")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the VLM's own code to run")
    p.add_argument("--device", default=None, help="captioning device (default: auto-detect)")
    p.add_argument("--processes", type=int, default=None, help="training processes (GPUs)")
    p.add_argument("--num-machines", type=int, default=None)
    p.add_argument("--machine-rank", type=int, default=None)
    p.add_argument("--main-process-ip", default=None)
    p.add_argument("--refresh", default="", help="comma-separated stages to recompute")
    p.add_argument("--task-runner", choices=["threads", "dask"], default=None)
    p.add_argument("--dask-address", default=None)
    p.add_argument("--no-evaluate", action="store_true")


def run(args: argparse.Namespace) -> int:
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    from flows.config import load_pipeline_config
    from flows.pipeline import differ_pipeline
    from flows.report import print_result, run_flow
    from flows.stage_calls import pipeline_fields_from_training

    cfg = load_pipeline_config(
        args.pipeline,
        **pipeline_fields_from_training(args.config),
        train_config=args.config,
        train_overrides=list(args.overrides) or None,
        workdir=str(args.workdir),
        root=args.root,
        captioner=args.captioner,
        prompts=args.prompts,
        summarizer=args.summarizer,
        trust_remote_code=args.trust_remote_code or None,
        device=args.device,
        processes=args.processes,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        main_process_ip=args.main_process_ip,
        refresh=[s for s in args.refresh.split(",") if s] or None,
        task_runner=args.task_runner,
        dask_address=args.dask_address,
        evaluate=False if args.no_evaluate else None,
    )
    result = run_flow(differ_pipeline, cfg)
    print_result(result, f"differ run {cfg.dataset}")
    return 0
