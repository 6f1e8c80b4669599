"""Caption scaling: 1 worker process vs N worker processes on the same images (model loading excluded), and the
bookkeeping cost of chunked captioning on a CCVID-size table, measured in one run.

    python benchmarks/caption_scaling.py                         # tiny LLaVA on the CPU, 1 vs 2 workers x 1 thread
    python benchmarks/caption_scaling.py --devices 0,0           # two workers on one GPU (benchmarks/gpu_check.sh)
    python benchmarks/caption_scaling.py --skip-bookkeeping --model /models/llava-1.5-7b-hf --images 64
    python benchmarks/caption_scaling.py --smoke                 # seconds: 8 images, a 2,000-image table

Part 1 captions ``--images`` SynthCC-style images x every perspective with ``hf:<model>`` twice, in fresh
workspaces, both times through worker processes set up the same way (``captions.workers.run_workers``: one
process per device label, ``--threads`` torch threads each on a CPU, timed from the moment every model is loaded
to the last worker's end): one worker, then ``--workers`` workers; so the ratio measures scaling, not the cost of
a process. It checks the greedy captions are identical. Part 2 plans, claims, writes parts, compacts and resolves
current rows (the bookkeeping) of ``--big`` images x 3 perspectives with an instant stand-in captioner (defined
here, used only here), in this process, and compares that time with the model time of 8 GPUs at 50 images/s
each (goal <= 5%); reading the current captions back is timed and shown apart. The CPU seconds of this process
(``time.process_time``) are shown beside the wall time: on a shared machine the wall time also counts the waits. The last line is the speed-up
``speed-up N workers / 1 worker: X.XXx``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the worker processes (python -m captions.workers) import this checkout's packages too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def _workspace(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    from data_manifests.schema import finalize_manifest, write_manifest
    from differ_common.workspace import Workspace

    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        path = root / "data" / f"{k:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(path)
        rows.append(dict(image_id=path.name, path=str(path), dataset="synthcc", split="train",
                         raw_pid=k // 4 + 1, camid=k % 3, clothes_key=f"{k // 4}_0"))  # fmt: skip
    write_manifest(finalize_manifest(rows), Workspace.at(root).manifest("synthcc"))
    return root


class Instant:
    """A stand-in captioner for the bookkeeping measurement: no images, a constant-time answer."""

    name = "instant:bench"
    fingerprint = "instant"
    needs_images = False
    min_batch_size = 1

    def caption(self, images, spec, image_ids):
        return [f"{spec.name} of {i}" for i in image_ids]


def scaling(args: argparse.Namespace) -> float:
    """Part 1: the wall time of 1 worker process over that of ``args.workers`` (module doc)."""
    from captions import caption_dataset, read_current_captions
    from captions.workers import resolve_devices, run_workers
    from captions.writer import prepare_job
    from differ_common.errors import DifferError
    from differ_common.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from captions.testing import build_tiny_llava

            model = str(build_tiny_llava(Path(tmp) / "tiny-llava"))
        spec = f"hf:{model}"
        options = dict(captioner=spec, prompts=None, noise=0.0, seed=0, trust_remote_code=False,
                       batch_size=args.batch_size, threads=args.threads, engine_args={})  # fmt: skip
        times, tables = [], []
        for n in (1, args.workers):
            ws = Workspace.at(_workspace(Path(tmp) / f"w{n}", args.images))
            # one worker process per label for both runs (1 worker too: never this process)
            labels = ["cpu"] * n if args.devices is None else resolve_devices(spec, n, args.devices, None)
            job, _cap, claims = prepare_job(
                ws, "synthcc", None, spec, None, "train", chunk_size=args.chunk_size
            )
            run_workers(ws, job, claims, labels, options)
            r = job.report
            if r.worker_errors:
                raise DifferError("; ".join(r.worker_errors))
            # the writer's closing steps (compaction, the current table) in this process: nothing left to caption
            rest = caption_dataset(
                ws.root, "synthcc", captioner=spec, workers=1, show_progress=False, split="train"
            )
            if sum(rest.generated.values()):
                raise DifferError(f"{n} worker(s) left {sum(rest.generated.values())} captions undone")
            times.append(r.wall_seconds)
            tables.append(read_current_captions(ws.root, "synthcc")[["image_id", "perspective", "caption"]])
            print(f"{n} worker process(es): {sum(r.generated.values())} captions in {r.wall_seconds:.2f}s "
                  f"({sum(r.generated.values()) / r.wall_seconds:.1f}/s), workers {r.workers}")  # fmt: skip
        same = (
            tables[0]
            .sort_values(["perspective", "image_id"])
            .reset_index(drop=True)
            .equals(tables[1].sort_values(["perspective", "image_id"]).reset_index(drop=True))
        )
        print(f"identical greedy captions: {same}")
        if not same:
            raise DifferError("1 worker and N workers wrote different greedy captions")
        return times[0] / times[1]


def bookkeeping(n: int, chunk_size: int) -> None:
    """Part 2: the bookkeeping of ``n`` images x 3 perspectives with the instant captioner (module doc)."""
    import pandas as pd

    from captions import caption_dataset, read_current_captions
    from data_manifests.schema import finalize_manifest, write_manifest
    from differ_common.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.at(Path(tmp) / "w")
        rows = pd.DataFrame({"image_id": [f"s{k // 1000:04d}/{k:07d}.jpg" for k in range(n)], "dataset": "synthcc",
                             "split": "train", "raw_pid": [k // 300 + 1 for k in range(n)], "camid": 0})  # fmt: skip
        rows["path"] = "/nonexistent/" + rows["image_id"]
        rows["clothes_key"] = rows["raw_pid"].astype(str)
        write_manifest(finalize_manifest(rows.to_dict("records")), ws.manifest("synthcc"))
        t0, c0 = time.perf_counter(), time.process_time()
        r = caption_dataset(ws.root, "synthcc", "biometrics,hairstyle,clothing", backend=Instant(), batch_size=64,
                            chunk_size=chunk_size, show_progress=False)  # fmt: skip
        t_write, c_write = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        cur = read_current_captions(ws.root, "synthcc")
        t_read = time.perf_counter() - t1
        assert len(cur) == 3 * n and sum(r.generated.values()) == 3 * n
        model_s = n / (8 * 50)
        print(f"bookkeeping, {n} images x 3 perspectives, chunks of {chunk_size}: plan+claim+write+compact+current "
              f"{t_write:.1f}s (CPU {c_write:.1f}s) = {100 * t_write / model_s:.1f}% of the {model_s:.1f}s model time of 8 GPUs at "
              f"50 images/s (goal <= 5%); reading the current captions {t_read:.1f}s "
              f"({100 * t_read / model_s:.1f}%)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="local VLM folder (default: the tiny LLaVA, built here)")
    ap.add_argument(
        "--images",
        type=int,
        default=384,
        help="images of part 1 (384: some 12 s for 1 CPU worker, long enough to time)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per CPU worker")
    ap.add_argument("--devices", default=None, help="GPU ids, e.g. 0,0 (two workers on GPU 0) or 0,1")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--big", type=int, default=350_000, help="images of the bookkeeping table")
    ap.add_argument("--big-chunk-size", type=int, default=256)
    ap.add_argument("--skip-bookkeeping", action="store_true")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, for the test suite: 8 images, chunks of 4, a 2,000-image table",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.chunk_size, args.batch_size, args.big = 8, 4, 4, 2_000
    if not args.skip_bookkeeping:
        bookkeeping(args.big, args.big_chunk_size)
    ratio = scaling(args)
    print(f"speed-up {args.workers} workers / 1 worker: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
