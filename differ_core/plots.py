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
    """The top-``top_k`` of query ``qi`` (``query``/``gallery``: :class:`~differ_core.evaluation.protocols.EvalSet`)."""
    from differ_core.evaluation.metrics import classify_gallery

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


def _hex(colour: str) -> np.ndarray:
    c = colour.lstrip("#")
    return np.array([int(c[i : i + 2], 16) for i in (0, 2, 4)], np.float32) / 255.0


def _save(fig: Any, out: str | Path, dpi: int) -> Path:
    from differ_common.io import atomic_path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 2})
    return out


def _draw_rows(
    rows: Sequence[RankedRow], out: str | Path, title: str | None, row_titles: Sequence[str] | None
):
    """All thumbnails pasted into one canvas (one Axes: fast to draw), text placed in pixel coordinates."""
    plt = _plt()
    dpi, border, gap = 100, 4, 22
    th, tw = THUMB
    cw, ch = tw + 2 * border, th + 2 * border
    top, above, below, left = (34 if title else 8), 16, 30, 26
    k = max(len(r.paths) for r in rows)
    pitch_x, pitch_y = cw + gap, above + ch + below
    width = left + (k + 1) * pitch_x + 12  # the query, a gap, then the ranked list
    height = top + len(rows) * pitch_y
    canvas = np.ones((height, width, 3), np.float32)
    texts: list[tuple[float, float, str, dict[str, Any]]] = []

    def paste(x0: int, y0: int, img: np.ndarray, colour: str) -> None:
        canvas[y0 : y0 + ch, x0 : x0 + cw] = _hex(colour)
        canvas[y0 + border : y0 + border + th, x0 + border : x0 + border + tw] = img

    for ri, r in enumerate(rows):
        y0 = top + ri * pitch_y + above
        paste(left, y0, _thumb(r.query_path), "#1f3b8f")
        head = "query" if not row_titles else row_titles[ri]
        texts.append((left + cw / 2, y0 - 3, head, dict(va="bottom", fontsize=7, fontweight="bold")))
        texts.append((left + cw / 2, y0 + ch + 3, r.query_label, dict(va="top", fontsize=5.5)))
        if r.caption:
            texts.append((left - 6, y0 + ch / 2, r.caption, dict(va="center", fontsize=6.5, rotation=90)))
        for j in range(len(r.paths)):
            x0 = left + (j + 1) * pitch_x + 12
            lab = int(r.labels[j])
            colour = GOOD if lab == 1 else WRONG if lab == -1 else JUNK
            paste(x0, y0, _thumb(r.paths[j], faded=lab == 0), colour)
            texts.append((x0 + cw / 2, y0 - 3, f"{j + 1}" + (" junk" if lab == 0 else ""),
                          dict(va="bottom", fontsize=6.5, color=colour)))  # fmt: skip
            texts.append((x0 + cw / 2, y0 + ch + 3, f"{r.names[j]}\n{r.distances[j]:.3f}",
                          dict(va="top", fontsize=5.5, linespacing=1.1)))  # fmt: skip
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for x, y, txt, kw in texts:
        ax.text(x, y, txt, ha="center", **kw)
    if title:
        ax.text(width / 2, 8, title, ha="center", va="top", fontsize=9)
    try:
        return _save(fig, out, dpi)
    finally:
        plt.close(fig)


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
    curves: dict[str, Sequence[float]],
    out: str | Path,
    max_rank: int = 20,
    title: str | None = None,
    styles: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """CMC curves (fractions) of several protocols or runs, ranks 1..max_rank, as percentages.

    ``styles``: optional matplotlib line keywords per label (e.g. a colour per protocol, dashes per run).
    """
    if not curves:
        raise ValueError("curves: nothing to draw")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, cmc in curves.items():
        c = np.asarray(cmc, dtype=float)[:max_rank]
        kw = {"marker": "o", "ms": 3, "lw": 1.5, **((styles or {}).get(label, {}))}
        ax.plot(np.arange(1, len(c) + 1), 100 * c, label=f"{label} (R1 {100 * c[0]:.1f})", **kw)
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
    try:
        return _save(fig, out, 110)
    finally:
        plt.close(fig)
