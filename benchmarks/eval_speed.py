"""Speed and memory of ``evaluate_ranking`` against a per-query loop and a bare row-wise argsort.

    python benchmarks/eval_speed.py                      # LTCC, PRCC and the large gallery
    python benchmarks/eval_speed.py --sizes ltcc,prcc --repeat 5
    python benchmarks/eval_speed.py --smoke               # seconds: one small size (40 x 300), one run each

Three ways to get the metrics of the same [Q, G] float32 distance matrix (features: an identity centre + noise,
L2-normalised, Euclidean distance; cameras and outfits random):

* ``ours``: :func:`differ_core.evaluation.evaluate_ranking` (chunked; exact);
* ``loop``: the per-query style of the reference CC-ReID codebases (CAL's ``evaluate`` /
  ``evaluate_with_clothes``: an argsort of the whole matrix, then set operations per query),
  :func:`differ_core.testing.evaluate_loop`;
* ``argsort``: a bare row-wise ``np.argsort`` of the matrix, no metric at all (the floor of exact ranking).

Sizes: LTCC (493 x 7,050, 75 ids), PRCC clothes-changing (3,873 x 3,384, 71 ids), and a large gallery
(20,000 x 100,000, 5,000 ids) whose distance matrix (7.5 GiB) is never built: ``ours`` reads it chunk by chunk
from :class:`~differ_core.evaluation.FeatureDistance`, ``argsort`` argsorts the same chunks, and the loop is
skipped with the memory it would need printed. Every (size, method) runs in a fresh child process so its peak
memory is its own: ``peak`` is max(tracemalloc peak, growth of the peak RSS) while the method runs.
Times are the best of ``--repeat`` runs (the large size: one run). ``max |diff|`` is the largest difference of
any CMC value or mAP from the loop's (LTCC, PRCC; large: on its first 1,000 queries against the whole gallery).

Recorded 2026-11-25 on the project's shared 2-core, 24 GiB machine while other jobs ran (load average 3-9, so
absolute times are inflated and noisy; the ratios are the point). LTCC/PRCC (load ~3.5)::

    size                         mode              method      time   vs ours     peak  max |diff|
    ltcc (493 x 7,050)           general           ours       0.047s    1.00x   30 MiB
                                                   loop       1.187s   25.20x   27 MiB    0.00e+00
                                                   argsort    0.078s    1.66x   27 MiB
    ltcc                         clothes_changing  ours       0.039s    1.00x   30 MiB
                                                   loop       1.239s   31.53x   27 MiB    1.11e-16
    prcc (3,873 x 3,384)         general           ours       0.185s    1.00x  103 MiB
                                                   loop       5.752s   31.09x  102 MiB    0.00e+00
                                                   argsort    0.286s    1.54x  102 MiB
    prcc                         clothes_changing  ours       0.181s    1.00x  103 MiB
                                                   loop       7.131s   39.37x  102 MiB    0.00e+00

Large gallery (load ~3.7)::

    large (20,000 x 100,000)     general           ours      59.4s      1.00x  109 MiB   (1,000-query check
                                                   argsort   99.9s      1.68x  193 MiB    vs loop: 4.4e-16)
                                                   distance  37.1s      0.62x  137 MiB
                                                   loop     skipped: needs 22.35 GiB
    large                        clothes_changing  ours      59.6s      1.00x  147 MiB   (check: 0.0)

ours / bare argsort: LTCC 0.60 (general) and 0.50 (CC), PRCC 0.65 and 0.63, large 0.59 and 0.60 (argsort of the
same chunks, distance computation included: 37 s of it). The loop is 25-39x slower than ours.

The last line of a size without the large one: ``ours / argsort = X.XX, loop / ours = Y.Y`` (indented).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {  # name: (num_query, num_gallery, num_ids, feature dim)
    "ltcc": (493, 7050, 75, 256),
    "prcc": (3873, 3384, 71, 256),
    "large": (20000, 100000, 5000, 64),
    "smoke": (40, 300, 10, 16),  # --smoke: the test suite's
}
MODES = ("general", "clothes_changing")
SUBSET = 1000  # large: queries on which ours is checked against the loop


def make_problem(name: str, seed: int = 0):
    nq, ng, nid, dim = SIZES[name]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((nid, dim)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, nid, nq), rng.integers(0, nid, ng)
    qf = centres[q_pids] + 1.1 * rng.standard_normal((nq, dim)).astype(np.float32)
    gf = centres[g_pids] + 1.1 * rng.standard_normal((ng, dim)).astype(np.float32)
    ids = {
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": rng.integers(0, 6, nq),
        "g_camids": rng.integers(0, 6, ng),
        "q_clothes": q_pids * 4 + rng.integers(0, 4, nq),
        "g_clothes": g_pids * 4 + rng.integers(0, 4, ng),
    }
    return qf, gf, ids


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(name: str, method: str, mode: str, repeat: int, chunk: int) -> dict:
    """One (size, method, mode) measurement in this process; returns times, peak memory and metrics."""
    import gc
    import tracemalloc

    import torch

    from differ_core.evaluation.metrics import FeatureDistance, evaluate_ranking, pairwise_distance
    from differ_core.testing import evaluate_loop

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    qf, gf, ids = make_problem(name)
    large = name == "large"
    dist = FeatureDistance(qf, gf) if large else pairwise_distance(qf, gf)
    del qf, gf
    gc.collect()
    times, out = [], {}
    for _ in range(1 if large else repeat):
        gc.collect()
        rss0 = _rss()
        tracemalloc.start()
        t0 = time.perf_counter()
        if method == "ours":
            r = evaluate_ranking(dist, **ids, mode=mode, chunk_elements=chunk)
            out = {"cmc": r.cmc.tolist(), "mAP": r.mAP, "valid": r.num_valid_query}
        elif method == "loop":
            cmc, m_ap, valid = evaluate_loop(dist, **ids, mode=mode)
            out = {"cmc": cmc.tolist(), "mAP": m_ap, "valid": valid}
        elif method == "argsort":
            if large:  # the same chunks as ours, argsorted and dropped
                step = max(1, chunk // dist.shape[1])
                for s in range(0, dist.shape[0], step):
                    np.argsort(dist.rows(s, min(dist.shape[0], s + step)), axis=1)
            else:
                np.argsort(dist, axis=1)
        elif (
            method == "subset"
        ):  # large only: ours and the loop on the first SUBSET queries, the whole gallery
            sub = dist.rows(0, SUBSET)
            sids = {k: (v[:SUBSET] if k.startswith("q_") else v) for k, v in ids.items()}
            r = evaluate_ranking(sub, **sids, mode=mode, chunk_elements=chunk)
            t1 = time.perf_counter()
            cmc, m_ap, valid = evaluate_loop(sub, **sids, mode=mode)
            loop_time = time.perf_counter() - t1
            diff = max(float(np.max(np.abs(cmc - r.cmc))), abs(m_ap - r.mAP))
            out = {"cmc": cmc.tolist(), "mAP": m_ap, "valid": valid, "diff": diff, "loop_time": loop_time,
                   "ours_time": t1 - t0}  # fmt: skip
        elif method == "distance":  # large only: producing the chunks, nothing else
            step = max(1, chunk // dist.shape[1])
            for s in range(0, dist.shape[0], step):
                dist.rows(s, min(dist.shape[0], s + step))
        times.append(time.perf_counter() - t0)
        _, peak_tm = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak = max(peak_tm, _maxrss() - rss0)
    return {"time": min(times), "peak": peak, **out}


def run_child(args: argparse.Namespace, name: str, method: str, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", name, method, mode, "--repeat", str(args.repeat),
           "--chunk", str(args.chunk)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{name}/{method}/{mode} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(a["cmc"]) - np.asarray(b["cmc"])))), abs(a["mAP"] - b["mAP"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="ltcc,prcc,large")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1 << 22, help="elements per distance chunk (ours, large)")
    ap.add_argument("--child", nargs=3, metavar=("SIZE", "METHOD", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--smoke", action="store_true", help="seconds, for the test suite: --sizes smoke --repeat 1"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeat = "smoke", 1
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.child:
        print(json.dumps(child(*args.child, repeat=args.repeat, chunk=args.chunk)))
        return 0
    print(f"cpu cores: {os.cpu_count()}, numpy {np.__version__}; best of {args.repeat} (large: 1 run)")
    header = (
        f"{'size':<34} {'mode':<17} {'method':<9} {'time':>9} {'vs ours':>8} {'peak':>10} {'max |diff|':>11}"
    )
    print(header)
    print("-" * len(header))
    cache: dict[tuple[str, str], dict] = {}

    def once(name: str, method: str) -> dict:  # mode-independent measurements run once per size
        if (name, method) not in cache:
            cache[name, method] = run_child(args, name, method, MODES[0])
        return cache[name, method]

    for name in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        nq, ng, nid, dim = SIZES[name]
        label = f"{name} ({nq:,} x {ng:,}, {nid:,} ids)"
        for mode in MODES:
            ours = run_child(args, name, "ours", mode)
            rows = [("ours", ours, "")]
            if name == "large":
                base = once(name, "argsort")
                dist_only = once(name, "distance")
                rows.append(("argsort", base, "-"))
                rows.append(("distance", dist_only, "-"))
                sub = run_child(args, name, "subset", mode)
                print(f"{label:<34} {mode:<17} check: first {SUBSET} queries x {ng:,}: ours {sub['ours_time']:.2f}s, "
                      f"loop {sub['loop_time']:.2f}s, max |diff| {sub['diff']:.2e}")  # fmt: skip
                need = nq * ng * (4 + 8)
                rows.append(("loop", None, f"skipped: needs {_gib(need)} (float32 matrix + int64 argsort)"))
            else:
                loop = run_child(args, name, "loop", mode)
                base = once(name, "argsort")
                rows.append(("loop", loop, f"{_diff(ours, loop):.2e}"))
                rows.append(("argsort", base, "-"))
            for method, r, note in rows:
                if r is None:
                    print(f"{label:<34} {mode:<17} {method:<9} {note}")
                    continue
                ratio = r["time"] / ours["time"]
                diff = note if method != "ours" else f"valid {ours['valid']}"
                print(f"{label:<34} {mode:<17} {method:<9} {r['time']:>8.3f}s {ratio:>7.2f}x {_gib(r['peak']):>10} "
                      f"{diff:>11}")  # fmt: skip
            if name != "large":
                print(f"{'':<34} {'':<17} ours / argsort = {ours['time'] / base['time']:.2f}, "
                      f"loop / ours = {loop['time'] / ours['time']:.1f}")  # fmt: skip
            else:
                print(f"{'':<34} {'':<17} ours / (argsort of the same chunks) = {ours['time'] / base['time']:.2f}, "
                      f"R1 {100 * ours['cmc'][0]:.2f} mAP {100 * ours['mAP']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
