"""Training memory per rank: images decoded into every process (the naive reference) vs the shared memory-mapped
image cache, with 1 and 2 training processes on SynthCC default (CPU, gloo, through ``accelerate launch`` as
``differ train --processes N`` does).

Each configuration runs a few real training steps (``run.stop_after_steps``) of ``configs/synthcc.yaml`` with the
baseline losses (``losses.use=[id,triplet]``: no text features needed) in fresh processes; every rank reports:

* **peak RSS** (``ru_maxrss``): everything the rank ever had resident, model and batches included; file pages of
  the mapped cache count in every rank that touched them;
* **image memory** (the ratio's numerator): the growth of the rank's *anonymous* resident memory (``RssAnon`` of
  ``/proc/self/status``, private and not reclaimable) while the rank opens its image source
  (:func:`differ_core.images.open_images`: the whole train split, training and validation rows). For
  ``data.image_cache=memory`` that is the decoded copy each rank holds (~1.0 of the decoded size per rank); for
  the cache it is what the rank adds besides the shared file: the key, the header, and for the one rank that
  writes the file a block of decoded images (the other ranks wait for it). The file fresh before each run, so
  one rank of each cache run is its writer;
* **cache PSS / RSS**: the rank's resident pages of the cache file at the end (psutil ``memory_maps``). These are
  clean page-cache pages: one copy per machine shared by every rank and run, dropped under memory pressure and
  re-read from the file, never duplicated per rank. PSS splits each page between the processes mapping it, so
  after a full epoch it approaches (file size / ranks); after these few steps it counts the touched rows and
  their read-ahead. They are printed, not counted as the rank's own memory.

The decoded size is the train split at the training size (``N × 3 × H × W`` bytes). The last line is the largest
image memory of any rank of the cache runs over the decoded size (goal <= 0.10); the line before it is the same
for the in-memory reference measured in this run.

Then the CCVID part (``benchmarks/ccvid_plan.py``, in its own process): an epoch plan and a tracklet evaluation on
a synthetic CCVID-shaped manifest of ~350k frame rows, with their seconds and peak memory.

The config names the shipped pre-trained start (``pretrain:synthcc_start``); as ``differ train`` does, the driver
resolves it into its files (:func:`differ_core.clip_pretrain.shipped.resolve_start`) and passes them to the ranks.

    python benchmarks/train_memory.py                      # generates SynthCC default in a temp workspace
    python benchmarks/train_memory.py --workdir W --steps 4  # reuses W's synthcc manifest
    python benchmarks/train_memory.py --smoke              # seconds: 48 random images, 1 step, 1 process, small CCVID
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's packages, from any working directory
CONFIG = REPO / "differ_core" / "configs" / "synthcc.yaml"


# ---------------------------------------------------------------------------------------------- in each rank
def rss_anon() -> int:
    """Anonymous resident bytes of this process (``RssAnon``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def _mapped(path: str | None) -> dict[str, int]:
    import psutil

    out = {"pss": 0, "rss": 0}
    if path:
        for m in psutil.Process().memory_maps(grouped=True):
            if os.path.realpath(m.path) == os.path.realpath(path):
                out = {"pss": int(m.pss), "rss": int(m.rss)}
    return out


def worker(report: Path, config: str, overrides: list[str]) -> int:
    """One training rank: train with ``overrides``, measuring its image source; writes ``rank<r>.json``."""
    import resource

    from differ_core import images as images_mod
    from differ_core.config import load_config
    from differ_core.training import Trainer

    measured: dict[str, Any] = {}
    real_open = images_mod.open_images

    def measuring_open(*args: Any, **kwargs: Any) -> Any:
        before = rss_anon()
        src = real_open(*args, **kwargs)
        measured.update(image_anon=rss_anon() - before, kind=src.kind, n=len(src))
        return src

    images_mod.open_images = measuring_open

    class MeasuredTrainer(Trainer):
        def fit(self) -> Path:
            out = super().fit()
            arr = getattr(self.data.images, "array", None)
            path = str(arr.filename) if self.data.images.kind == "mapped" else None
            measured.update(rank=self.rank, world=self.world, steps=self.step, cache=path, **_mapped(path))
            return out

    with MeasuredTrainer(load_config(config, overrides)) as trainer:
        trainer.fit()
    measured["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report.mkdir(parents=True, exist_ok=True)
    (report / f"rank{measured['rank']}.json").write_text(json.dumps(measured))
    return 0


# ---------------------------------------------------------------------------------------------- the driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, report: Path, overrides: list[str]) -> list[dict[str, Any]]:
    """Run ``processes`` ranks on the CPU through ``accelerate launch``; their reports."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if processes > 1:
        cmd += ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(_free_port())]
    else:
        cmd += ["--num_processes", "1"]
    cmd += ["--dynamo_backend", "no", str(Path(__file__).resolve()), "--worker", str(report), "--config",
            str(CONFIG), *overrides]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(
            f"training with {processes} process(es) failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return [json.loads((report / f"rank{r}.json").read_text()) for r in range(processes)]


def synthcc_workspace(workdir: Path) -> Path:
    """``W/manifests/synthcc.parquet`` of SynthCC default (generated under ``W/data`` unless present)."""
    from data_manifests.registry import make_manifest
    from differ_common.workspace import Workspace

    ws = Workspace.at(workdir)
    if not ws.manifest("synthcc").is_file():
        make_manifest(ws.root, "synthcc", None, size="default")
    return ws.manifest("synthcc")


def smoke_workspace(workdir: Path, ids: int = 12, per_id: int = 4) -> Path:
    """A SynthCC-named manifest of ``ids`` x ``per_id`` random 96x48 PNGs (the smoke mode's: seconds to write);
    an existing ``W/manifests/synthcc.parquet`` is used as it is, never replaced."""
    import numpy as np
    from PIL import Image

    from data_manifests.schema import finalize_manifest, write_manifest
    from differ_common.workspace import Workspace

    ws = Workspace.at(workdir)
    if ws.manifest("synthcc").is_file():
        return ws.manifest("synthcc")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(ids * per_id):
        path = ws.root / "data" / f"{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (96, 48, 3), dtype=np.uint8)).save(path)
        rows.append(dict(image_id=path.name, path=str(path), dataset="synthcc", split="train",
                         raw_pid=k // per_id + 1, camid=k % 2, clothes_key=f"{k // per_id}_{k % 2}"))  # fmt: skip
    write_manifest(finalize_manifest(rows), ws.manifest("synthcc"))
    return ws.manifest("synthcc")


def start_overrides(config: str | Path, workdir: Path) -> list[str]:
    """``key=file`` overrides for the config's ``pretrain:<name>`` values (the shipped start's files, else the
    workspace's pre-training), as ``differ train`` passes them; the trainer itself takes files only."""
    from differ_core.clip_pretrain.shipped import resolve_start
    from differ_core.config import load_config

    cfg = load_config(str(config))
    out: list[str] = []
    for key, value in (("text.encoder", cfg.text.encoder), ("model.pretrained", cfg.model.pretrained)):
        if isinstance(value, str) and value.startswith("pretrain:"):
            start = resolve_start(value.removeprefix("pretrain:"), workdir, log=lambda _m: None)
            out.append(f"{key}={start.text_encoder if key == 'text.encoder' else start.trunk}")
    return out


def main(argv: list[str] | None = None, parts: Sequence[Callable[[argparse.Namespace], None]] = ()) -> int:
    """Measure and print; ``parts`` run after the measurements, before the last line (which they must not
    follow with output of their own)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="workspace (default: a temporary one with SynthCC default)")
    ap.add_argument("--steps", type=int, default=4, help="training steps per run")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, for the test suite: 48 random images, 1 step, 1 process, P x K = 4 x 4",
    )
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=str(CONFIG), help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.config, rest)

    import pandas as pd

    from differ_core.config import load_config
    from differ_core.image_cache import cache_bytes

    if args.smoke:
        args.steps, args.processes = 1, [1]
    tmp = tempfile.TemporaryDirectory() if not args.workdir else None
    work = Path(args.workdir or tmp.name).resolve()  # type: ignore[union-attr]
    t0 = time.perf_counter()
    manifest = smoke_workspace(work) if args.smoke else synthcc_workspace(work)
    starts = start_overrides(CONFIG, work)
    m = pd.read_parquet(manifest, columns=["split"])
    sampler = ["sampler.P=4", "sampler.K=4"] if args.smoke else []
    cfg = load_config(str(CONFIG), sampler)
    size = tuple(cfg.data.img_size)
    n_train = int((m["split"] == "train").sum())
    decoded = cache_bytes(n_train, size)
    print(f"{'smoke (random images)' if args.smoke else 'SynthCC default'}: {n_train} train images at "
          f"{size[0]}x{size[1]}, decoded {decoded / 2**20:.1f} MiB (workspace ready in {time.perf_counter() - t0:.0f} s); "
          f"{args.steps} steps of P x K = {cfg.sampler.P} x {cfg.sampler.K} per rank")  # fmt: skip
    print(f"{'path':<8} {'procs':>5} {'rank':>4} {'peak RSS':>9} {'image mem':>10} {'share':>6} "
          f"{'cache PSS':>10} {'cache RSS':>10}")  # fmt: skip
    worst: dict[str, float] = {}
    for mode in ("memory", "auto"):
        for n in args.processes:
            shutil.rmtree(work / "cache", ignore_errors=True)  # a fresh cache: one rank of this run writes it
            overrides = [
                f"data.workdir={work}", f"data.image_cache={mode}", "losses.use=[id,triplet]",
                f"run.stop_after_steps={args.steps}", f"run.output={work / 'runs' / f'{mode}-{n}'}",
                "run.progress=false", "run.log_with=[]", "run.threads=1", "data.decode_threads=2", *starts, *sampler,
            ]  # fmt: skip
            shutil.rmtree(work / "runs" / f"{mode}-{n}", ignore_errors=True)
            for r in launch(n, work / "reports" / f"{mode}-{n}", overrides):
                share = r["image_anon"] / decoded
                label = "mapped" if r["kind"] == "mapped" else r["kind"]
                worst[label] = max(worst.get(label, 0.0), share)
                print(f"{label:<8} {n:>5} {r['rank']:>4} {r['peak_rss'] / 2**20:>8.0f}M "
                      f"{r['image_anon'] / 2**20:>9.1f}M {share:>6.2f} {r['pss'] / 2**20:>9.1f}M "
                      f"{r['rss'] / 2**20:>9.1f}M")  # fmt: skip
    for part in parts:  # e.g. the CCVID-shaped planning part (benchmarks/ccvid_plan.py)
        part(args)
    if tmp is not None:
        tmp.cleanup()
    if set(worst) != {"memory", "mapped"}:
        raise SystemExit(f"expected the in-memory and the cache paths, measured {sorted(worst)}")
    print(f"naive in-memory per-rank image memory / decoded size: {worst['memory']:.2f}")
    print(f"per-rank image memory / decoded size: {worst['mapped']:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ccvid_plan import part as ccvid_part  # the CCVID-shaped epoch plan and tracklet evaluation

    raise SystemExit(main(parts=[ccvid_part]))
