"""Workspace status: manifests, caption rows (current / stale / missing), features, runs and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from differ_common.workspace import Workspace


def gather_status(workdir: str | Path, dataset: str | None = None, encoder: str = "minilm") -> dict[str, Any]:
    """A plain dict of what each stage holds (used by `differ status` and tests)."""
    import pandas as pd

    import captions

    ws = Workspace.at(workdir)
    manifests = sorted(ws.root.glob("manifests/*.parquet"))
    names = [dataset] if dataset else [p.stem for p in manifests if not p.stem.endswith(".attributes")]
    out: dict[str, Any] = {"workdir": str(ws.root), "datasets": {}}
    for ds in names:
        info: dict[str, Any] = {}
        mp = ws.manifest(ds)
        if mp.exists():
            m = pd.read_parquet(mp, columns=["split"])
            info["manifest"] = {
                "path": str(mp),
                "rows": len(m),
                "splits": m["split"].value_counts().to_dict(),
            }
        else:
            info["manifest"] = None
        info["captions"] = _safe(lambda ds=ds: _records(captions.caption_status(ws.root, ds)))
        info["features"] = _safe(lambda ds=ds: _records(captions.feature_status(ws.root, ds, encoder)))
        out["datasets"][ds] = info
    runs = []
    for rd in sorted(ws.root.glob("runs/*")):
        metrics = rd / "metrics.json"
        entry: dict[str, Any] = {
            "run": rd.name,
            "checkpoints": sorted(p.name for p in rd.glob("checkpoints/*")),
        }
        if metrics.exists():
            m = json.loads(metrics.read_text())
            entry["metrics"] = {
                k: {"rank1": v["rank1"], "mAP": v["mAP"]} for k, v in m.get("protocols", {}).items()
            }
        runs.append(entry)
    out["runs"] = runs
    return out


def _records(df: Any) -> list[dict[str, Any]]:
    return df.to_dict(orient="records") if hasattr(df, "to_dict") else df


def _safe(fn: Any) -> Any:
    from differ_common.errors import DifferError

    try:
        return fn()
    except (DifferError, FileNotFoundError, KeyError, AttributeError) as exc:
        return f"unavailable: {exc}"


def print_status(workdir: str | Path, dataset: str | None = None, encoder: str = "minilm") -> None:
    from rich.console import Console
    from rich.table import Table

    st = gather_status(workdir, dataset, encoder)
    c = Console()
    c.print(f"[bold]workspace[/bold] {st['workdir']}")
    if not st["datasets"]:
        c.print("no manifests yet: run `differ manifest DATASET --root R` or `differ demo`")
    for ds, info in st["datasets"].items():
        m = info["manifest"]
        c.print(f"\n[bold]{ds}[/bold] manifest: " + (f"{m['rows']} rows {m['splits']}" if m else "missing"))
        for section in ("captions", "features"):
            rows = info[section]
            if isinstance(rows, list) and rows:
                t = Table(title=f"{ds} {section}")
                for col in rows[0]:
                    t.add_column(str(col))
                for r in rows:
                    t.add_row(*(str(v) for v in r.values()))
                c.print(t)
            else:
                c.print(f"{section}: {rows if rows else 'none'}")
    if st["runs"]:
        t = Table(title="runs")
        for col in ("run", "checkpoints", "metrics"):
            t.add_column(col)
        for r in st["runs"]:
            metrics = ", ".join(
                f"{k}: R1 {100 * v['rank1']:.1f} mAP {100 * v['mAP']:.1f}"
                for k, v in r.get("metrics", {}).items()
            )
            t.add_row(r["run"], " ".join(r["checkpoints"]), metrics or "-")
        c.print(t)
