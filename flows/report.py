"""Console output of a pipeline run: stage table, metric table, paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def metric_rows(metrics_json: str | Path) -> list[dict[str, Any]]:
    m = json.loads(Path(metrics_json).read_text())
    return [
        {"protocol": k, "rank1": v["rank1"], "rank5": v["rank5"], "rank10": v["rank10"], "mAP": v["mAP"]}
        for k, v in m.get("protocols", {}).items()
    ]


def print_result(result: dict[str, Any], title: str = "differ") -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    stages = Table(title=f"{title}: stages")
    for col in ("stage", "status", "details"):
        stages.add_column(col)
    for s in result.get("stages", []):
        stages.add_row(s["stage"], s["status"], str(s.get("details", "")))
    console.print(stages)
    metrics = result.get("metrics")
    if metrics and Path(metrics).exists():
        m = json.loads(Path(metrics).read_text())
        t = Table(
            title=f"{m.get('dataset', '')} metrics ({m.get('selection', '')}, epoch {m.get('epoch', '')})"
        )
        for col in ("protocol", "Rank-1", "Rank-5", "Rank-10", "mAP"):
            t.add_column(col, justify="right" if col != "protocol" else "left")
        for r in metric_rows(metrics):
            t.add_row(r["protocol"], *(f"{100 * r[k]:.1f}" for k in ("rank1", "rank5", "rank10", "mAP")))
        console.print(t)
    for key in ("workdir", "manifest", "captions", "features", "run_dir", "checkpoint", "metrics"):
        if result.get(key):
            console.print(f"[bold]{key}[/bold]: {result[key]}")


def print_comparison(results: dict[str, dict[str, Any]]) -> None:
    """One table of Rank-1 and mAP per protocol, a column pair per named pipeline result."""
    from rich.console import Console
    from rich.table import Table

    rows = {name: {r["protocol"]: r for r in metric_rows(res["metrics"])} for name, res in results.items()}
    protocols = list(dict.fromkeys(p for by in rows.values() for p in by))
    t = Table(title="test split: Rank-1 / mAP (%)")
    t.add_column("protocol")
    for name in rows:
        t.add_column(name, justify="right")
    for p in protocols:
        cells = [
            f"{100 * by[p]['rank1']:.1f} / {100 * by[p]['mAP']:.1f}" if p in by else "-"
            for by in rows.values()
        ]
        t.add_row(p, *cells)
    Console().print(t)


def run_flow(flow: Any, cfg: Any, **parameters: Any) -> dict[str, Any]:
    """Run a differ flow locally; a failed stage becomes a DifferError with its one-line message."""
    from differ_common.errors import DifferError

    state = flow(cfg, **parameters, return_state=True)
    if not state.is_completed():
        raise DifferError(state.message or f"{flow.name} ended {state.name}")
    return state.result()
