"""A killed first build of the decoded-image cache leaves nothing behind once the cache is opened again
(issue 28, item 5)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from differ_core.image_cache import open_image_cache

from .kill_helpers import run_until

SLOW_BUILD = """
import sys, time
import differ_core.image_cache as ic
real = ic.decode_blocks
def slow(*args, **kwargs):
    for block in real(*args, **{**kwargs, "block": 2}):
        yield block
        print("block", flush=True)
        time.sleep(0.2)
ic.decode_blocks = slow
paths = sys.argv[2].split(",")
ic.open_image_cache(sys.argv[1], "toy-train", paths, [p[-9:] for p in paths], (32, 16), threads=1, log=lambda m: None)
"""


def _images(folder, n=12):
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.png"
        Image.fromarray(np.full((40, 20, 3), i * 20, np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_a_killed_first_build_leaves_no_partial_file(tmp_path):
    paths = _images(tmp_path / "img")
    w = tmp_path / "w"
    run_until(SLOW_BUILD, "block", str(w), ",".join(paths))
    cache = w / "cache" / "images"
    leftovers = list(cache.glob(".tmp-*"))
    assert len(leftovers) == 1  # what the killed writer left (its buffered blocks never reached the disk)
    lines: list[str] = []
    mm = open_image_cache(
        w, "toy-train", paths, [p[-9:] for p in paths], (32, 16), threads=1, log=lines.append
    )
    assert mm.shape == (12, 3, 32, 16) and int(mm[3].mean()) == 60
    assert not list(cache.glob(".tmp-*")), list(cache.iterdir())
    assert any("killed writer" in line for line in lines), lines


def test_a_leftover_of_another_cache_is_removed_by_any_later_open(tmp_path):
    paths = _images(tmp_path / "img")
    w = tmp_path / "w"
    run_until(SLOW_BUILD, "block", str(w), ",".join(paths))
    open_image_cache(w, "toy-eval", paths[:4], [p[-9:] for p in paths[:4]], (32, 16), threads=1, log=print)
    assert not list((w / "cache" / "images").glob(".tmp-*"))
