"""Every script of ``benchmarks/`` runs in its small mode (``--smoke``) to the end and prints its last line in the
documented format, so that a benchmark cannot rot unseen.

Each runs as a fresh process from a folder outside the checkout, as a user would run it; the numbers that the docs
quote come from the full modes (docs/testing.md, "Benchmarks"). ``caption_throughput.py`` and
``caption_scaling.py`` run inside ``gpu_check.sh --smoke``, whose summary carries their last lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

# the last line of each script, as its docstring documents it
LAST_LINE = {
    "caption_prefix.py": r"speed-up prefix reuse / recompute: \d+\.\d\dx",
    "caption_scaling.py": r"speed-up 2 workers / 1 worker: \d+\.\d\dx",
    "caption_throughput.py": r"speed-up batched / per-image: \d+\.\d\dx; greedy outputs agree on 4/4 images",
    "ccvid_plan.py": r"  tracklet evaluation +\d+\.\d\d s   peak RSS +\d+ MiB   anon +\d+ MiB   "
    r"\d+ query x \d+ gallery tracklets, \d protocols",
    "encode_throughput.py": r"speed-up \d+\.\dx   max \|naive - ours\| = \d\.\d\de[-+]\d\d",
    "eval_speed.py": r" +ours / argsort = \d+\.\d\d, loop / ours = \d+\.\d",
    "train_memory.py": r"per-rank image memory / decoded size: \d+\.\d\d",
    "train_speed.py": r"ratio memory-mapped / disk: \d+\.\dx \(memory-mapped / in-memory: \d+\.\d\d\)",
}
# lines the script must also print (anywhere before its last line)
ALSO = {
    "caption_prefix.py": [
        r"captions identical: yes",
        r"tokens per image and perspective: prefix \d+ \(image 64\).*",
    ],
    "eval_speed.py": [r"smoke \(40 x 300, 10 ids\) +clothes_changing +loop .*"],
    "train_memory.py": [
        r"naive in-memory per-rank image memory / decoded size: \d+\.\d\d",
        r"mapped +1 +0 .*",
        LAST_LINE["ccvid_plan.py"],
    ],
}
IN_GPU_CHECK = ("caption_throughput.py", "caption_scaling.py")
RUN_ALONE = sorted(set(LAST_LINE) - set(IN_GPU_CHECK))


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # gpu_check.sh writes to $OUT when set and runs $PYTHON (default: the first python on PATH)
    env = {**{k: v for k, v in os.environ.items() if k != "OUT"}, "PYTHON": sys.executable}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_every_benchmark_script_has_a_smoke_run_here():
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh")}
    assert scripts == set(LAST_LINE) | {"gpu_check.sh"}
    for name in scripts:
        assert "--smoke" in (BENCH / name).read_text(), name


@pytest.mark.parametrize("script", RUN_ALONE)
def test_smoke_mode_runs_and_prints_its_documented_last_line(script, tmp_path):
    res = _run([sys.executable, str(BENCH / script), "--smoke"], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = _lines(res.stdout)
    assert re.fullmatch(LAST_LINE[script], lines[-1]), lines[-1]
    for pattern in ALSO.get(script, []):
        assert any(re.fullmatch(pattern, line) for line in lines[:-1]), (pattern, res.stdout)


def test_gpu_check_smoke_runs_its_steps_on_the_cpu(tmp_path):
    res_dir = tmp_path / "res"
    res = _run(["bash", str(BENCH / "gpu_check.sh"), "--smoke", str(res_dir)], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = _lines((res_dir / "summary.txt").read_text())
    assert summary[1] == "smoke mode: CPU, no GPU queried"
    assert re.fullmatch(r"torch \S+ transformers \S+", summary[2]), summary[2]
    steps = {line.split(" ", 1)[0]: line for line in summary[3:]}
    assert list(steps) == ["throughput", "scaling", "train_config"]
    for step, script in zip(("throughput", "scaling"), IN_GPU_CHECK, strict=True):
        assert re.fullmatch(rf"{step} rc=0 \d+s: {LAST_LINE[script]}", steps[step]), steps[step]
    scaling_log = _lines((res_dir / "scaling.log").read_text())
    assert "identical greedy captions: True" in scaling_log
    # like with like: the 1-worker reference is a worker process too, never the benchmark's own process
    for n in (1, 2):
        workers = ", ".join([r"'[^']+:\d+@cpu'"] * n)
        assert any(
            re.fullmatch(
                rf"{n} worker process\(es\): 48 captions in \d+\.\d\ds .*, workers \[{workers}\]", line
            )
            for line in scaling_log
        ), scaling_log
    assert any(
        re.fullmatch(r"bookkeeping, 2000 images x 3 perspectives, chunks of 256: plan\+claim\+write\+compact\+"
                     r"current \d+\.\ds \(CPU \d+\.\ds\) = \d+\.\d% of the 5\.0s model time .*", line)
        for line in scaling_log
    ), scaling_log  # fmt: skip
    last = _lines(res.stdout)[-1]
    assert last == summary[-1]
    assert re.fullmatch(
        r"train_config rc=0 \d+s: train config \S+ltcc\.yaml: eva02_large_patch14_clip_224, 7 overrides valid",
        last,
    ), last
