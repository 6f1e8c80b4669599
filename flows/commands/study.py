"""`differ study --config F --seeds 0,1,2`: baseline vs DIFFER vs ablations over seeds, one table."""

from __future__ import annotations

import argparse

from flows.commands import workdir_option


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _variant_seeds(items: list[str]) -> dict[str, list[int]]:
    from differ_common.errors import ConfigError

    out: dict[str, list[int]] = {}
    for item in items:
        variant, sep, seeds = item.partition("=")
        if not sep or not variant.strip():
            raise ConfigError(f"--variant-seeds {item!r}: expected VARIANT=SEEDS, e.g. differ=0,1,2,3,4")
        try:
            out[variant.strip()] = _ints(seeds)
        except ValueError:
            raise ConfigError(f"--variant-seeds {item!r}: seeds must be comma-separated integers") from None
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the DIFFER training config every variant starts from")
    p.add_argument("overrides", nargs="*", help="training overrides key=value applied to every run")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: all; see --list)")
    p.add_argument(
        "--variant-seeds",
        action="append",
        default=[],
        metavar="VARIANT=SEEDS",
        help="other seeds for one variant, e.g. differ=0,1,2,3,4 (repeatable; the others run --seeds)",
    )
    p.add_argument(
        "--noise", type=_floats, default=[0.0], help="attributes-captioner noise levels, e.g. 0,0.2,0.4"
    )
    p.add_argument("--name", default="study", help="output folder W/studies/<name>")
    p.add_argument("--pipeline", default=None, help="YAML of pipeline options (flows.config.PipelineConfig)")
    p.add_argument("--root", default=None, help="dataset root (not needed for synthcc)")
    p.add_argument("--list", action="store_true", help="list the available variants and exit")


def run(args: argparse.Namespace) -> int:
    from flows.prefect_env import apply_offline_defaults

    apply_offline_defaults()
    from flows.study import available_variants

    if args.list:
        print("\n".join(available_variants()))
        return 0
    from pydantic import ValidationError
    from rich.console import Console
    from rich.markdown import Markdown

    from differ_common.errors import ConfigError
    from flows.pipeline import differ_study
    from flows.report import run_flow
    from flows.run_config import resolve_run
    from flows.study import StudyConfig

    run = resolve_run(
        args.pipeline, args.config, list(args.overrides), workdir=workdir_option(args), root=args.root
    )
    from flows.preflight import check_pipeline

    check_pipeline(run, source=args.config)  # every problem before the first run writes anything
    pipeline = run.pipeline  # each run resolves its own config (its variant's and seed's overrides)
    try:
        study = StudyConfig(
            name=args.name,
            pipeline=pipeline,
            seeds=args.seeds,
            variant_seeds=_variant_seeds(args.variant_seeds),
            noise_levels=args.noise,
            **({"variants": [v for v in args.variants.split(",") if v]} if args.variants else {}),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"study {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    out = run_flow(differ_study, study)
    console = Console()
    console.print(Markdown(open(out["markdown"]).read()))
    for key in ("out_dir", "results", "summary", "markdown", "plot"):
        console.print(f"[bold]{key}[/bold]: {out[key]}")
    return 0
