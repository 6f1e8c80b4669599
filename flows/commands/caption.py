"""`differ caption --dataset D [--split train] [--perspectives a,b] [--captioner SPEC] ...`: missing rows only."""

from __future__ import annotations

import argparse

from captions.backends import CAPTIONERS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", required=True, help="dataset whose manifest to caption (W/manifests/<D>.parquet)"
    )
    p.add_argument("--split", default="train", help="split(s) to caption: a name, a comma list, or 'all'")
    p.add_argument("--perspectives", default=None, help="comma list (default: all six)")
    p.add_argument(
        "--captioner",
        default="attributes",
        help=f"registered captioners: {CAPTIONERS.usage()}",
    )
    p.add_argument(
        "--prompts", default=None, help="prompts YAML (default: the packaged captions/prompts.yaml)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per generation batch")
    p.add_argument(
        "--noise", type=float, default=0.0, help="attributes captioner: per-attribute noise rate 0..1"
    )
    p.add_argument("--seed", type=int, default=0, help="attributes captioner: template/noise seed")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: auto)")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow custom model code from the model folder"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, one model each (default: one per visible GPU for hf/vllm, else 1)",
    )
    p.add_argument(
        "--devices", default=None, help="GPU ids for the workers, e.g. 0,1,2,3 (or cpu; 0+1 = two GPUs)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads per CPU worker (default: cores / N)"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="images per claimed chunk (all pending perspectives); default: n/64, between 8 and 256",
    )
    p.add_argument(
        "--targets",
        choices=("auto", "frame", "tracklet", "every_k"),
        default="auto",
        help="which frames of a video manifest are captioned, shared by their tracklet: tracklet = its middle "
        "frame, every_k = every --every-k-th, frame = all; auto = tracklet for ccvid, else frame",
    )
    p.add_argument("--every-k", type=int, default=8, help="--targets every_k: one captioned frame in k")
    p.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="vLLM engine argument, repeatable (e.g. tensor_parallel_size=2, gpu_memory_utilization=0.85)",
    )
    p.add_argument(
        "--on-bad-image",
        choices=("error", "skip"),
        default="error",
        help="an image that fails to open: fail after captioning the rest (error) or only report it (skip)",
    )


def run(args: argparse.Namespace) -> int:
    from captions.backends import parse_engine_args
    from captions.writer import bad_image_error, caption_dataset

    report = caption_dataset(
        args.workdir,
        args.dataset,
        perspectives=args.perspectives,
        captioner=args.captioner,
        prompts=args.prompts,
        split=args.split,
        batch_size=args.batch_size,
        noise=args.noise,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
        device=args.device,
        on_bad_image="skip",  # print the counts first, then fail below when asked to
        workers=args.workers,
        devices=args.devices,
        threads=args.threads,
        chunk_size=args.chunk_size,
        engine_args=parse_engine_args(args.vllm_arg),
        targets=args.targets,
        every_k=args.every_k,
    )
    print(f"captions of {args.dataset} by {report.captioner} -> {args.workdir}/captions/{args.dataset}")
    for line in report.lines():
        print(line)
    if report.errors and args.on_bad_image == "error":
        raise bad_image_error(report)
    for path, reason in report.errors:
        print(f"skipped {path}: {reason}")
    return 0
