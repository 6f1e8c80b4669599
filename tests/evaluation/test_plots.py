"""Ranked-list labels (good / junk / wrong) and the pictures' files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from differ_core.evaluation.metrics import classify_gallery
from differ_core.evaluation.protocols import EvalSet
from differ_core.plots import plot_cmc, plot_ranked_compare, plot_ranked_lists, ranked_row


def _set(pids, cams, clothes, paths):
    n = len(pids)
    return EvalSet(np.zeros((n, 2), np.float32), np.array(pids), np.array(cams), np.array(clothes),
                   [f"x/{i}.png" for i in range(n)], paths)  # fmt: skip


def test_labels_follow_the_protocol():
    g = dict(g_pids=np.array([1, 1, 1, 2]), g_camids=np.array([0, 1, 1, 1]), g_clothes=np.array([0, 0, 1, 0]))
    assert classify_gallery(1, 0, 0, **g).tolist() == [0, 1, 1, -1]
    assert classify_gallery(1, 0, 0, **g, mode="clothes_changing").tolist() == [0, 0, 1, -1]
    assert classify_gallery(1, 0, 0, **g, mode="same_clothes").tolist() == [0, 1, 0, -1]
    assert classify_gallery(1, 0, 0, **g, ignore_camera=True).tolist() == [1, 1, 1, -1]


def test_pictures(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.full((40, 20, 3), 120, np.uint8)).save(img)
    q = _set([1], [0], [0], [str(img)])
    g = _set([1, 2, 1, 1], [0, 1, 1, 1], [0, 0, 1, 0], [str(img)] * 3 + [str(tmp_path / "missing.png")])
    row = ranked_row(q, g, np.array([0.3, 0.1, 0.2, 0.1]), 0, "clothes_changing", False, top_k=3)
    # stable order by distance: 1, 3 (tie at 0.1, lower index first), 2
    assert row.names == ["1.png", "3.png", "2.png"] and row.labels.tolist() == [-1, 0, 1]
    out = plot_ranked_lists([row, row], tmp_path / "p" / "ranked.png", title="t")
    with Image.open(out) as im:
        w, h = im.size
        assert w > 300 and h > 300
    out = plot_ranked_compare([("base", [row]), ("differ", [row])], tmp_path / "cmp.png")
    assert out.stat().st_size > 1000
    out = plot_cmc({"a": np.linspace(0.2, 1, 50)}, tmp_path / "cmc.png")
    assert out.exists() and not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ValueError, match="curves"):
        plot_cmc({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="same queries"):
        plot_ranked_compare([("a", [row]), ("b", [])], tmp_path / "y.png")
