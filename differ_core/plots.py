"""Pictures of an evaluation (matplotlib, Agg backend, PNG).

* :func:`plot_ranked_lists`: per query, the query image and its top-k gallery items in ranking order (stable by
  distance, as the metrics), framed green (correct: counts as a match under the protocol), red (another
  identity) or grey and faded (junk: same identity excluded by the protocol, e.g. same camera or, in the
  clothes-changing protocol, same clothes); the file name under each image.
* :func:`plot_ranked_compare`: the same queries ranked by several runs, one row per run (baseline vs DIFFER, as in
  the paper's Fig. 4).
* :func:`plot_cmc`: CMC curves (rank-k accuracy) of one or more protocols/runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GOOD, JUNK, WRONG = "#1a9b3c", "#9a9a9a", "#d62728"
THUMB = (128, 64)  # (H, W) of the thumbnails


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class RankedRow:
    """One ranked list: the query and its top-k gallery items with their labels (1 good, 0 junk, -1 wrong)."""

    query_path: str
    query_label: str
    paths: list[str]
    names: list[str]
    labels: np.ndarray
    distances: np.ndarray
    caption: str = ""


def ranked_row(query: Any, gallery: Any, dist_row: np.ndarray, qi: int, mode: str, ignore_camera: bool,
               top_k: int = 10, caption: str = "") -> RankedRow:  # fmt: skip
    """The top-``top_k`` of query ``qi`` (``query``/``gallery``: :class:`~differ_core.protocols.EvalSet`)."""
    from differ_core.evaluation import classify_gallery

    row = np.asarray(dist_row, dtype=np.float64).reshape(-1)
    order = np.argsort(row, kind="stable")[:top_k]
    lab = classify_gallery(
        query.pids[qi], query.camids[qi], query.clothes[qi], gallery.pids[order], gallery.camids[order],
        gallery.clothes[order], mode, ignore_camera,
    )  # fmt: skip
    return RankedRow(
        query_path=query.paths[qi],
        query_label=_short(query.ids[qi]),
        paths=[gallery.paths[j] for j in order],
        names=[_short(gallery.ids[j]) for j in order],
        labels=lab,
        distances=row[order],
        caption=caption,
    )


def _short(name: str, width: int = 18) -> str:
    """A file's name, or the last two parts of a tracklet key, cut to ``width`` characters."""
    p = Path(str(name))
    base = p.name if p.suffix else "/".join(str(name).split("/")[-2:])
    return base if len(base) <= width else "…" + base[-(width - 1) :]


def _thumb(path: str, faded: bool = False) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((THUMB[1], THUMB[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError):  # a missing image must not stop the picture: draw a grey placeholder
        a = np.full((*THUMB, 3), 0.8, np.float32)
    if faded:
        g = a.mean(axis=2, keepdims=True)
        a = 0.55 * np.repeat(g, 3, axis=2) + 0.4
    return a


def _frame(ax: Any, colour: str, width: float = 4.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_edgecolor(colour)
        sp.set_linewidth(width)


def _draw_rows(
    rows: Sequence[RankedRow], out: str | Path, title: str | None, row_titles: Sequence[str] | None
):
    plt = _plt()
    k = max(len(r.paths) for r in rows)
    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=(1.05 * (k + 1) + 0.6, 2.35 * len(rows)), squeeze=False
    )
    for ri, r in enumerate(rows):
        ax = axes[ri, 0]
        ax.imshow(_thumb(r.query_path))
        _frame(ax, "#1f3b8f", 3.0)
        head = "query" if not row_titles else row_titles[ri]
        ax.set_title(head, fontsize=7, fontweight="bold")
        ax.set_xlabel(r.query_label, fontsize=5.5)
        if r.caption:
            ax.set_ylabel(r.caption, fontsize=6.5)
        for j in range(k):
            ax = axes[ri, j + 1]
            if j >= len(r.paths):
                ax.axis("off")
                continue
            lab = int(r.labels[j])
            ax.imshow(_thumb(r.paths[j], faded=lab == 0))
            _frame(ax, GOOD if lab == 1 else WRONG if lab == -1 else JUNK, 4.0 if lab != 0 else 2.5)
            ax.set_title(f"{j + 1}" + (" junk" if lab == 0 else ""), fontsize=6.5,
                         color=GOOD if lab == 1 else WRONG if lab == -1 else JUNK)  # fmt: skip
            ax.set_xlabel(f"{r.names[j]}\n{r.distances[j]:.3f}", fontsize=5.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from differ_core.io import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def plot_ranked_lists(rows: Sequence[RankedRow], out: str | Path, title: str | None = None) -> Path:
    """One picture: a line per query (query + its ranked top-k)."""
    if not rows:
        raise ValueError("rows: no ranked list to draw")
    return _draw_rows(rows, out, title, None)


def plot_ranked_compare(
    runs: Sequence[tuple[str, Sequence[RankedRow]]], out: str | Path, title: str | None = None
) -> Path:
    """Several runs on the same queries: for each query, one line per run (``runs``: (label, rows))."""
    if len(runs) < 1 or any(len(r[1]) != len(runs[0][1]) for r in runs):
        raise ValueError("runs: every run needs a ranked list for the same queries")
    rows, names = [], []
    for qi in range(len(runs[0][1])):
        for label, rr in runs:
            rows.append(rr[qi])
            names.append(label)
    return _draw_rows(rows, out, title, names)


def plot_cmc(
    curves: dict[str, Sequence[float]], out: str | Path, max_rank: int = 20, title: str | None = None
) -> Path:
    """CMC curves (fractions) of several protocols or runs, ranks 1..max_rank, as percentages."""
    if not curves:
        raise ValueError("curves: nothing to draw")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, cmc in curves.items():
        c = np.asarray(cmc, dtype=float)[:max_rank]
        ax.plot(
            np.arange(1, len(c) + 1),
            100 * c,
            marker="o",
            ms=3,
            lw=1.5,
            label=f"{label} (R1 {100 * c[0]:.1f})",
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, max_rank)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from differ_core.io import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
