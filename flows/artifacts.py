"""Prefect UI artifacts: metric table, run summary, ranked-list pictures, caption progress."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any


def _key(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:100]


def metrics_table(metrics_json: str | Path, run: str) -> None:
    from prefect.artifacts import create_table_artifact

    m = json.loads(Path(metrics_json).read_text())
    rows = [
        {
            "protocol": name,
            "rank1": round(100 * v["rank1"], 2),
            "rank5": round(100 * v["rank5"], 2),
            "rank10": round(100 * v["rank10"], 2),
            "mAP": round(100 * v["mAP"], 2),
            "valid queries": f"{v.get('num_valid_query')}/{v.get('num_query')}",
        }
        for name, v in m.get("protocols", {}).items()
    ]
    create_table_artifact(
        key=_key(f"metrics-{m.get('dataset', '')}"),
        table=rows,
        description=f"{run}: metrics ({m.get('selection', '')}, epoch {m.get('epoch', '')}), in %",
    )


def run_summary(title: str, stages: list[dict[str, Any]], paths: dict[str, str]) -> None:
    """Markdown: which stage was recomputed or reused, row counts, where the files are."""
    from prefect.artifacts import create_markdown_artifact

    lines = [f"# {title}", "", "| stage | status | details |", "|---|---|---|"]
    for s in stages:
        lines.append(f"| {s['stage']} | {s['status']} | {s.get('details', '')} |")
    lines += ["", "## Files", ""] + [f"- **{k}**: `{v}`" for k, v in paths.items()]
    create_markdown_artifact(key=_key(f"summary-{title}"), markdown="\n".join(lines), description=title)


def picture(png: str | Path, title: str, max_bytes: int = 1_500_000) -> None:
    """A PNG embedded in a markdown artifact (local files are not reachable from the UI otherwise)."""
    from prefect.artifacts import create_markdown_artifact

    png = Path(png)
    if not png.exists():
        return
    data = png.read_bytes()
    body = f"`{png}`\n\n"
    if len(data) <= max_bytes:
        body += f"![{title}](data:image/png;base64,{base64.b64encode(data).decode()})"
    create_markdown_artifact(key=_key(f"picture-{title}"), markdown=body, description=title)


def markdown_file(path: str | Path, title: str) -> None:
    """A markdown file (e.g. a study's summary table) as a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=_key(title), markdown=Path(path).read_text(), description=title)


class CaptionProgress:
    """A progress artifact updated as caption batches complete (callable with a fraction 0..1)."""

    def __init__(self, perspective: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self._id = create_progress_artifact(
            progress=0.0, key=_key(f"caption-progress-{perspective}"), description=f"captioning {perspective}"
        )
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        from prefect.artifacts import update_progress_artifact

        pct = round(100.0 * max(0.0, min(1.0, fraction)), 1)
        if pct - self._last >= 1.0 or pct >= 100.0:
            self._last = pct
            update_progress_artifact(artifact_id=self._id, progress=pct)
