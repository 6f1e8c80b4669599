"""`differ evaluate --run R | --checkpoint C --dataset D [--rerank] [--flip] [--plots N] [--compare RUN2]`."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", help="run name under W/runs, or a run folder (uses checkpoints/best.pt, else last.pt)"
    )
    p.add_argument(
        "--checkpoint",
        help="a checkpoint file (needs --dataset); with --run: which of its checkpoints (e.g. last, last.pt)",
    )
    p.add_argument("--dataset", help="dataset whose manifest to evaluate on (with --checkpoint alone)")
    p.add_argument("--out", default=None, help="with --checkpoint: output folder (default: its run folder)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    p.add_argument("--k1", type=int, default=20, help="re-ranking k1 (default 20)")
    p.add_argument("--k2", type=int, default=6, help="re-ranking k2 (default 6)")
    p.add_argument("--lambda", dest="lam", type=float, default=0.3, help="re-ranking lambda (default 0.3)")
    p.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    p.add_argument(
        "--single-shot", action="store_true", help="also the 10-trial single-shot protocols (PRCC)"
    )
    p.add_argument("--plots", type=int, default=0, metavar="N", help="ranked lists of N random queries + CMC")
    p.add_argument(
        "--query", action="append", default=None, help="image/track id of a query to draw (repeatable)"
    )
    p.add_argument(
        "--compare", default=None, metavar="RUN2", help="a second run: both tables + side-by-side plots"
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: auto)")
    p.add_argument(
        "--seed", type=int, default=0, help="with --checkpoint: seed of single-shot trials and plots"
    )


def _cell(v: dict, k: str) -> str:
    """A metric in %, with ``± std`` over the draws for single-shot variants."""
    s = f"{100 * v[k]:.1f}"
    if f"{k}_std" in v:
        s += f" ± {100 * v[f'{k}_std']:.1f}"
    return s


def _variant(v: dict) -> str:
    return f"single-shot ×{v['trials']}" if v.get("trials") else "multi-shot"


def _table(metrics: dict, title: str):
    from rich.table import Table

    t = Table(title=title)
    t.add_column("protocol")
    t.add_column("variant")
    for col in ("Rank-1", "Rank-5", "Rank-10", "mAP", "queries"):
        t.add_column(col, justify="right")
    for name, v in metrics["protocols"].items():
        cells = [_cell(v, k) for k in ("rank1", "rank5", "rank10", "mAP")]
        t.add_row(name, _variant(v), *cells, f"{v['num_valid_query']}/{v['num_query']}")
    for name in metrics.get("skipped") or {}:
        t.add_row(name, "", "—", "—", "—", "—", "skipped")
    return t


def _compare_table(a: dict, b: dict, title: str):
    """Both runs side by side, every protocol variant either has (multi-shot and single-shot), with B − A."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("protocol")
    t.add_column("variant")
    for metric in ("Rank-1", "mAP"):
        for who in ("A", "B", "Δ"):
            t.add_column(f"{metric} {who}", justify="right")
    for name in dict.fromkeys([*a["protocols"], *b["protocols"]]):
        va, vb = a["protocols"].get(name), b["protocols"].get(name)
        cells = []
        for k in ("rank1", "mAP"):
            d = f"{100 * (vb[k] - va[k]):+.1f}" if va and vb else "—"
            cells += [_cell(va, k) if va else "—", _cell(vb, k) if vb else "—", d]
        t.add_row(name, _variant(va or vb), *cells)
    return t


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from differ_common.errors import DifferError
    from differ_core.evaluation.runner import compare_pictures, evaluate_checkpoint, evaluate_run, resolve_run

    common = dict(
        rerank=args.rerank, flip=args.flip, plots=args.plots, single_shot=args.single_shot, rerank_k1=args.k1,
        rerank_k2=args.k2, rerank_lambda=args.lam, device=args.device, plot_queries=args.query,
        return_evaluation=True,
    )  # fmt: skip
    if args.run:
        if args.dataset or args.out:
            raise DifferError(
                "--dataset/--out go with --checkpoint alone; a run knows its dataset and folder"
            )
        run_dir = resolve_run(args.run, args.workdir)
        ev = evaluate_run(run_dir, checkpoint=args.checkpoint, batch_size=args.batch_size, **common)
    else:
        if not args.checkpoint:
            raise DifferError("give --run R, or --checkpoint C --dataset D")
        if not args.dataset:
            raise DifferError("--checkpoint needs --dataset (e.g. --dataset ltcc)")
        ev = evaluate_checkpoint(
            args.checkpoint, args.dataset, args.workdir, out_dir=args.out, batch_size=args.batch_size or 128,
            seed=args.seed, **common,
        )  # fmt: skip
    m = ev.metrics
    console = Console(width=130) if args.compare else Console()
    other = None
    if args.compare:
        run2 = resolve_run(args.compare, args.workdir)
        common2 = {**common, "plots": 0, "plot_queries": None}
        other_ev = evaluate_run(run2, batch_size=args.batch_size, write=False, **common2)
        other = other_ev.metrics
        files = compare_pictures(other_ev, ev, ev.out_dir / "plots", n=args.plots or 4, seed=m["seed"],
                                 labels=(other["run"], m["run"]))  # fmt: skip
        ev.files.update(files)
    extras = [s for s, on in (("flip", m["flip"]), ("re-ranking", bool(m["rerank"]))) if on]
    title = f"{m['dataset']} — {m['run']} ({m['selection']}, epoch {m['epoch']}{', ' + ', '.join(extras) if extras else ''})"
    console.print(_table(m, title))
    if other is not None:
        title = f"{m['dataset']}: A = {other['run']}, B = {m['run']} (Δ = B − A)"
        console.print(_compare_table(other, m, title))
    for name, path in ev.files.items():
        console.print(f"[bold]{name}[/bold]: {path}")
    return 0
