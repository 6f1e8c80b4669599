"""CCVID at full size without the data: plan a training epoch and run a tracklet evaluation on a synthetic
CCVID-shaped manifest, and print the time and the memory each takes.

The manifest is a DataFrame of ~350k frame rows (``--frames``) in ~4,000 tracklets (``--tracklets``, 20 to 155
frames each) of 226 identities, split into train / query / gallery tracklets in CCVID's proportions (948 / 834 /
1,074), with the manifest's columns. Planning reads no pixel, so the paths name files that are never opened.

* **epoch plan**: :func:`differ_core.video_sampling.make_sampler` with the ``ccvid`` config's knobs (8 frames per
  64-frame piece, stride 4, P x K = 4 x 2, both sampler styles): building it (epoch 0 is planned for its length)
  and one more epoch's batches; the caption targets of the whole manifest (:func:`captions.targets.caption_keys`);
* **tracklet evaluation**: random ``float16`` frame features of the query and gallery frames (``--dim``, 512) in a
  memory-mapped ``.npy`` (as extraction could stream them to disk), then the ``ccvid`` protocols at tracklet
  level (:func:`differ_core.evaluation.protocols.evaluate_protocols`: per-tracklet means in blocks, ranking).

Each stage prints its seconds, the process's peak RSS so far (``ru_maxrss``) and its anonymous resident memory
(``RssAnon``: private, what the stage holds; the memory-mapped features are page cache and not counted there).
It runs in a fresh process so the peak is its own:

    python benchmarks/ccvid_plan.py                 # also a part of benchmarks/train_memory.py
    python benchmarks/ccvid_plan.py --frames 50000 --tracklets 600
    python benchmarks/ccvid_plan.py --smoke         # seconds: 3,000 frames in 60 tracklets, 64-d features

The last line is the tracklet evaluation's (``  tracklet evaluation  X.XX s   peak RSS ...``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's packages, from any working directory
CCVID_SPLIT = {"train": 948, "query": 834, "gallery": 1074}  # tracklets per split of the real set


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synthetic_manifest(frames: int = 350_000, tracklets: int = 4_000, ids: int = 226, seed: int = 0) -> Any:
    """A CCVID-shaped manifest DataFrame (module doc); train pids relabelled 0..n-1, as the schema does."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 156, tracklets)
    lengths = np.maximum(1, np.round(lengths * frames / lengths.sum())).astype(np.int64)
    total = sum(CCVID_SPLIT.values())
    n_train = round(tracklets * CCVID_SPLIT["train"] / total)
    n_query = round(tracklets * CCVID_SPLIT["query"] / total)
    split_of = np.array(
        ["train"] * n_train + ["query"] * n_query + ["gallery"] * (tracklets - n_train - n_query)
    )
    train_ids = max(4, ids // 3)
    pid_of = np.where(
        split_of == "train", rng.integers(0, train_ids, tracklets), rng.integers(train_ids, ids, tracklets)
    )
    cam_of = rng.integers(0, 15, tracklets)
    clothes_of = pid_of * 4 + rng.integers(0, 3, tracklets)
    t = np.repeat(np.arange(tracklets), lengths)
    frame = np.arange(len(t)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    track = pd.Series([f"session{1 + c % 3}/{p:03d}_{c + 1:02d}_{i}" for i, (p, c) in
                       enumerate(zip(pid_of, cam_of, strict=True))])  # fmt: skip
    track_id = track.to_numpy()[t]
    image_id = pd.Series(track_id) + "/" + pd.Series(frame).astype(str).str.zfill(5) + ".jpg"
    df = pd.DataFrame({
        "image_id": image_id, "path": "/nonexistent/CCVID/" + image_id, "dataset": "ccvid",
        "split": split_of[t], "raw_pid": pid_of[t], "pid": pid_of[t], "camid": cam_of[t],
        "clothes_id": clothes_of[t], "clothes_key": pd.Series(clothes_of[t]).astype(str),
        "track_id": track_id, "frame": frame,
    })  # fmt: skip
    return df


def _line(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:<34} {seconds:>7.2f} s   peak RSS {peak_rss() / 2**20:>7.0f} MiB   "
          f"anon {rss_anon() / 2**20:>7.0f} MiB   {note}")  # fmt: skip
    sys.stdout.flush()


def run(frames: int, tracklets: int, dim: int) -> None:
    import numpy as np

    from captions.targets import caption_keys
    from differ_core.config import load_config
    from differ_core.evaluation.protocols import evaluate_protocols, protocols_from_manifest
    from differ_core.video_sampling import make_sampler

    t0 = time.perf_counter()
    m = synthetic_manifest(frames, tracklets)
    print(f"CCVID-shaped manifest: {len(m)} frame rows, {m['track_id'].nunique()} tracklets "
          f"({', '.join(f'{s} {n}' for s, n in m.groupby('split')['track_id'].nunique().items())})")  # fmt: skip
    _line("synthetic manifest", time.perf_counter() - t0)

    cfg = load_config(str(REPO / "differ_core" / "configs" / "ccvid.yaml"))
    tr = m[m["split"] == "train"].reset_index(drop=True)
    codes = tr["track_id"].factorize(sort=True)[0]
    labels = tr["pid"].factorize(sort=True)[0].tolist()
    for style in ("distinct", "official"):
        cfg.sampler.style = style
        t = time.perf_counter()
        s = make_sampler(cfg, labels, codes, tr["frame"].to_numpy())
        built = time.perf_counter() - t
        t = time.perf_counter()
        batches = s.batches(1)
        _line(f"epoch plan ({style})", built + time.perf_counter() - t,
              f"{s.plan.num_pieces} pieces x {s.plan.F} of {len(tr)} train frames -> {len(batches)} steps "
              f"(set-up {built:.2f} s)")  # fmt: skip

    t = time.perf_counter()
    keys = caption_keys(m, cfg.text.caption_targets, cfg.text.caption_every_k, "ccvid")
    _line("caption targets (tracklet)", time.perf_counter() - t,
          f"{len(set(keys))} captioned frames for {len(m)} rows")  # fmt: skip

    ev = m[m["split"].isin(["query", "gallery"])].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = Path(tmp) / "features.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(ev), dim))
        rng = np.random.default_rng(0)
        for s0 in range(0, len(ev), 16384):  # streamed to disk, as an extraction would
            mm[s0 : s0 + 16384] = rng.standard_normal((min(16384, len(ev) - s0), dim), dtype=np.float32)
        mm.flush()
        del mm
        feats = np.load(path, mmap_mode="r")
        _line("random frame features (float16)", time.perf_counter() - t,
              f"{len(ev)} x {dim}, {path.stat().st_size / 2**20:.0f} MiB memory-mapped")  # fmt: skip
        t = time.perf_counter()
        results, _ = evaluate_protocols(ev, feats, protocols_from_manifest(ev))
        general = results["general"]
        _line("tracklet evaluation", time.perf_counter() - t,
              f"{len(general.query)} query x {len(general.gallery)} gallery tracklets, "
              f"{len(results)} protocols")  # fmt: skip
        del feats, results, general


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=350_000)
    ap.add_argument("--tracklets", type=int, default=4_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--smoke", action="store_true", help="seconds, for the test suite: a small manifest")
    args = ap.parse_args(argv)
    if args.smoke:
        args.frames, args.tracklets, args.dim = 3_000, 60, 64
    run(args.frames, args.tracklets, args.dim)
    return 0


def part(args: Any = None) -> None:
    """The CCVID part of ``benchmarks/train_memory.py``: this script in a fresh process (``--smoke`` when
    ``args.smoke``), its lines printed."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    smoke = ["--smoke"] if getattr(args, "smoke", False) else []
    res = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *smoke], env=env, capture_output=True, text=True
    )
    print(res.stdout, end="")
    if res.returncode != 0:
        raise SystemExit(f"benchmarks/ccvid_plan.py failed:\n{res.stderr[-3000:]}")


if __name__ == "__main__":
    raise SystemExit(main())
