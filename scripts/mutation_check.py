"""Mutation check: plant known bugs one at a time in a scratch copy of the repository and see whether the tests
catch them.

Each bug in :data:`BUGS` replaces one exact snippet (``old``, which must occur exactly once in ``file``) by
``new`` in a temporary copy of the working tree (tracked files plus untracked, non-ignored ones; the working tree
itself is never written), then runs ``python -m pytest -q -x -p no:cacheprovider <tests>`` there with
``PYTHONPATH`` and the working directory set to the copy. A bug is *caught* when a test fails (the first failing
node id is reported) and *SURVIVED* when every test passes.

    python scripts/mutation_check.py                 # every bug, one at a time
    python scripts/mutation_check.py --list          # the bugs, and whether each still applies
    python scripts/mutation_check.py --only grl-alpha-not-applied,optimizer-step-skipped --jobs 2
    python scripts/mutation_check.py --markdown table.md

Exit status: 0 every bug caught; 1 a bug survived (or timed out / errored); 2 the list is out of step with the
code (an anchor not found exactly once, a plant that does not compile, a named test file that does not exist)
or the command line is wrong. See docs/testing.md for how to add a bug.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 900.0

CAUGHT, SURVIVED, STALE, TIMEOUT, ERROR = "caught", "survived", "stale", "timeout", "error"


@dataclass(frozen=True)
class Bug:
    """One planted bug: replace the single occurrence of ``old`` in ``file`` by ``new``; run ``tests``."""

    id: str
    description: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


LEARNING = "tests/training/test_learning.py"

BUGS: tuple[Bug, ...] = (
    Bug(
        "optimizer-step-skipped",
        "the training loop never applies the optimizer step",
        "differ_core/training.py",
        "self.optimizer.step()",
        "pass",
        ("tests/training/test_training.py", LEARNING),
    ),
    Bug(
        "bio-loss-last-slot",
        "the biometric loss is fed the last text slot instead of slot 0",
        "differ_core/losses.py",
        'image_text_contrastive(out["bio_proj"], texts[:, 0], scale)',
        'image_text_contrastive(out["bio_proj"], texts[:, -1], scale)',
        ("tests/training/test_losses_grl.py", LEARNING),
    ),
    Bug(
        "grl-alpha-not-applied",
        "the GRL alpha schedule is computed but never set on the model during training",
        "differ_core/training.py",
        "self.raw.set_grl_alpha(alpha)",
        "pass",
        ("tests/training/test_training.py", LEARNING),
    ),
    Bug(
        "synthcc-grey-clothes",
        "SynthCC clothing colours are all blended to mid grey (saliency ignored)",
        "data_manifests/synthcc/attributes.py",
        "base = np.array(_lerp(grey, rgb, c))",
        "base = np.array(_lerp(grey, rgb, 0.0))",
        ("tests/manifests/test_synthcc.py",),
    ),
    Bug(
        "hf-summary-always-extractive",
        "the hf: summarizer's output is dropped: every identity gets the extractive fallback",
        "captions/summaries.py",
        'summaries[pid] = (text, "") if text else (extractive_summary(texts), "empty-fallback")',
        'summaries[pid] = (extractive_summary(texts), "empty-fallback")',
        ("tests/captions/test_summaries.py",),
    ),
    Bug(
        "resume-optimizer-state-lost",
        "resuming restores the model but not the optimizer state",
        "differ_core/training.py",
        'self.optimizer.load_state_dict(ckpt["optimizer"])',
        "pass",
        ("tests/training/test_training.py", LEARNING),
    ),
    Bug(
        "cc-same-clothes-not-junked",
        "clothes-changing protocol: same-clothes gallery items of the query's identity are ranked as wrong "
        "matches instead of being junked",
        "differ_core/evaluation/metrics.py",
        "return good, ~good | cam_junk",
        'return good, ((~good & ~same_clo) if mode == "clothes_changing" else ~good) | cam_junk',
        ("tests/evaluation/test_ranking.py", "tests/evaluation/test_protocols.py"),
    ),
    Bug(
        "camera-embedding-not-added",
        "the ViT token-level camera embedding is computed but not added to the tokens",
        "differ_core/model.py",
        "x = x + cam.unsqueeze(1)",
        "x = x",
        ("tests/training/test_model.py",),
    ),
    Bug(
        "nbdetach-indexes-batch",
        "NBDetach pairs sample k's K projections with sample k's texts (batch index) instead of perspective k",
        "differ_core/losses.py",
        "image_text_contrastive(nb_proj[:, k], texts[:, 1 + k], logit_scale)",
        "image_text_contrastive(nb_proj[k], texts[k, 1:], logit_scale)",
        ("tests/training/test_losses_grl.py",),
    ),
    Bug(
        "triplet-easiest-positive",
        "batch-hard triplet takes the easiest (closest) positive instead of the hardest",
        "differ_core/losses.py",
        'ap = dist.masked_fill(~pos, float("-inf")).max(1).values[valid]',
        'ap = dist.masked_fill(~pos, float("inf")).min(1).values[valid]',
        ("tests/training/test_losses_grl.py",),
    ),
    Bug(
        "sampler-same-order-every-epoch",
        "the P x K sampler ignores the epoch: the same batch order every epoch",
        "differ_core/sampler.py",
        "rng = np.random.default_rng([self.seed, epoch, 0x1D5])",
        "rng = np.random.default_rng([self.seed, 0, 0x1D5])",
        ("tests/training/test_sampler.py",),
    ),
    Bug(
        "lr-schedule-warmup-prefix",
        "the official timm cosine restarts after the warm-up (warmup_prefix) instead of running at the absolute epoch",
        "differ_core/optim.py",
        "cycle_limit=1, t_in_epochs=True,",
        "cycle_limit=1, t_in_epochs=True, warmup_prefix=True,",
        ("tests/training/test_recipe.py",),
    ),
    Bug(
        "official-erasing-log-uniform-aspect",
        "the official random erasing draws its aspect log-uniformly (torchvision/timm) instead of uniformly",
        "differ_core/data.py",
        "aspect = ERASE_R1 + (1 / ERASE_R1 - ERASE_R1) * aspect_u.double()",
        "aspect = torch.exp(np.log(ERASE_R1) + (np.log(1 / ERASE_R1) - np.log(ERASE_R1)) * aspect_u.double())",
        ("tests/training/test_recipe.py",),
    ),
    Bug(
        "caption-row-written-twice",
        "the caption writer writes the first row of every batch twice",
        "captions/writer.py",
        "write_part(ws.perspective_dir(dataset, p), rows)",
        "write_part(ws.perspective_dir(dataset, p), rows + rows[:1])",
        ("tests/captions/test_writer.py",),
    ),
    Bug(
        "chunk-task-without-device-tag",
        "a caption chunk task on a GPU carries the gpu tag only, not its device's gpu:<id> (no per-GPU limit)",
        "flows/stages/caption.py",
        'return gpu_tags(label.removeprefix("cuda").removeprefix(":").split("+") if ":" in label else ["0"])',
        "return gpu_tags([])",
        (
            "tests/flows/test_caption_chunks.py::test_chunk_tasks_go_round_robin_over_the_devices_and_carry_their_gpu_tags",
        ),
    ),
    Bug(
        "caption-finish-never-cached",
        "every perspective's finishing task is refreshed, so an unchanged perspective recomputes downstream",
        "flows/stages/caption.py",
        'force=any(p in c["missing"] for c in chunks),',
        "force=True,",
        (
            "tests/flows/test_caption_chunks.py::test_the_caption_stage_maps_one_task_per_chunk_and_keeps_per_perspective_fingerprints",
        ),
    ),
    Bug(
        "held-chunks-never-retried",
        "the flow's caption step drops the chunks another process held instead of waiting for them",
        "flows/stages/caption.py",
        "pending = held",
        "pending = []",
        (
            "tests/flows/test_caption_chunks.py::test_a_chunk_held_by_a_live_claimant_is_skipped_then_waited_for",
        ),
    ),
    Bug(
        "single-shot-spread-from-one-draw",
        "single-shot PRCC reports the std of its first gallery draw only (always 0) instead of over all draws",
        "differ_core/evaluation/protocols.py",
        "std = {k: float(np.std(v)) for k, v in per_draw.items()}",
        "std = {k: float(np.std(v[:1])) for k, v in per_draw.items()}",
        ("tests/evaluation/test_protocols.py",),
    ),
    Bug(
        "weights-hash-ignores-values",
        "the record's weights hash covers the parameter names only, so other weights hash the same",
        "differ_core/reproducibility.py",
        "h.update(tensor_sha256(state[k]).encode())",
        "pass",
        ("tests/evaluation/test_evaluate.py",),
    ),
    Bug(
        "manifest-fingerprint-has-paths",
        "the manifest fingerprint hashes the absolute paths: a dataset rebuilt in a fresh workspace never matches",
        "differ_core/reproducibility.py",
        'cols = [c for c in manifest.columns if c not in ("path", "image_sha")]',
        'cols = [c for c in manifest.columns if c != "image_sha"]',
        (
            "tests/flows/test_pipeline_e2e.py::test_every_metrics_file_carries_the_record_and_reproduce_gives_identical_weights_and_metrics",
        ),
    ),
    Bug(
        "image-cache-gather-sorted",
        "the image cache gathers a batch's rows in sorted order instead of the order asked",
        "differ_core/images.py",
        "np.ascontiguousarray(self.array[rows])",
        "np.ascontiguousarray(self.array[np.sort(rows)])",
        (
            "tests/training/test_image_cache.py::test_gathered_batches_equal_directly_decoded_images_bit_for_bit",
        ),
    ),
    Bug(
        "shared-array-no-lock",
        "two processes that find no cache both write it: the writer lock is never taken",
        "differ_common/shared_array.py",
        "            lock.acquire(timeout=0)",
        "            pass",
        ("tests/training/test_image_cache.py",),
    ),
    Bug(
        "shared-array-size-unchecked",
        "a truncated cache file is not detected (its size is not compared with the header)",
        "differ_common/shared_array.py",
        'if size != head.get("file_bytes"):',
        "if False:",
        ("tests/training/test_image_cache.py",),
    ),
    Bug(
        "disk-images-ignore-subset",
        "the per-batch disk path decodes row i of the whole split instead of row i of the training subset",
        "differ_core/images.py",
        "row = int(i) if self.rows is None else int(self.rows[i])",
        "row = int(i)",
        ("tests/training/test_image_cache.py",),
    ),
    Bug(
        "text-features-ignore-positions",
        "mapped text features are gathered by manifest row, not through each perspective's position index",
        "captions/features/reader.py",
        "out = np.stack([a[p[rows]] for",
        "out = np.stack([a[rows] for",
        ("tests/features/test_feature_cache.py",),
    ),
    Bug(
        "text-feature-dtype-ignored",
        "text.feature_dtype is ignored: features are always stored as float32",
        "captions/features/reader.py",
        "mm, ids = open_perspective(workdir, dataset, encoder, stored, dtype, log)",
        'mm, ids = open_perspective(workdir, dataset, encoder, stored, "float32", log)',
        ("tests/features/test_feature_cache.py",),
    ),
    Bug(
        "eval-cache-rows-shifted",
        "extraction from the image cache reads each batch one row late",
        "differ_core/extract.py",
        "imgs = normalize(images[idx.start : idx.stop]",
        "imgs = normalize(images[np.minimum(np.arange(idx.start, idx.stop) + 1, n - 1)]",
        ("tests/evaluation/test_streamed_eval.py",),
    ),
    Bug(
        "ccvid-frames-same-every-epoch",
        "the frames sampled per tracklet ignore the epoch: every epoch trains on the same frames",
        "differ_core/video_sampling.py",
        "rng = np.random.default_rng([self.seed, int(epoch), _PLAN_SALT])",
        "rng = np.random.default_rng([self.seed, 0, _PLAN_SALT])",
        ("tests/training/test_video_sampling.py",),
    ),
    Bug(
        "ccvid-k-items-one-tracklet",
        "an identity's sampled frames are shuffled freely: its K items of a batch often share a tracklet",
        "differ_core/video_sampling.py",
        "return idx[np.lexsort((track_rank, pos))]",
        "return rng.permutation(idx)",
        ("tests/training/test_video_sampling.py",),
    ),
    Bug(
        "ccvid-clip-stride-off",
        "the clip of a long tracklet piece is taken at stride - 1 instead of data.frame_stride",
        "differ_core/video_sampling.py",
        "strided = begin[:, None] + ar * s",
        "strided = begin[:, None] + ar * (s - 1)",
        ("tests/training/test_video_sampling.py",),
    ),
    Bug(
        "ccvid-sampling-not-hooked",
        "training ignores data.frames_per_tracklet: every frame every epoch",
        "differ_core/video_sampling.py",
        "if d.frames_per_tracklet and tracks is not None and frames is not None:",
        "if False:",
        ("tests/training/test_video_sampling.py",),
    ),
    Bug(
        "caption-targets-every-frame",
        "the caption writer plans every frame of a video manifest, not its caption targets",
        "captions/writer.py",
        'target = caption_target_rows(manifest[manifest["split"].isin(splits)], targets, every_k, dataset)',
        'target = manifest[manifest["split"].isin(splits)]',
        ("tests/captions/test_targets.py",),
    ),
    Bug(
        "caption-targets-ignored-in-training",
        "training gathers each frame's own text features instead of its caption target's",
        "differ_core/data.py",
        "cfg.text.feature_dtype, log, caption_ids=keys,",
        "cfg.text.feature_dtype, log,",
        ("tests/captions/test_targets.py",),
    ),
    Bug(
        "tracklet-sum-not-mean",
        "a tracklet's feature is the sum of its frames' features, not their mean",
        "differ_core/evaluation/protocols.py",
        "return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)",
        "return sums.astype(np.float32)",
        ("tests/evaluation/test_tracklet_eval.py",),
    ),
    Bug(
        "tracklet-last-block-only",
        "the tracklet means keep only the last block of frames",
        "differ_core/evaluation/protocols.py",
        "sums += indicator @ block",
        "sums = indicator @ block",
        ("tests/evaluation/test_tracklet_eval.py",),
    ),
    Bug(
        "pretrain-optimizer-step-skipped",
        "the CLIP-style pre-training computes its loss and gradients but never steps the optimizer",
        "differ_core/clip_pretrain/train.py",
        "            opt.step()\n",
        "            pass\n",
        ("tests/pretrain/test_clip_pretrain.py",),
    ),
    Bug(
        "pretrain-unseeded-init",
        "the pre-training's model is initialised from whatever the global torch seed is: not reproducible",
        "differ_core/clip_pretrain/train.py",
        "    torch.manual_seed(cfg.people.seed)\n",
        "    pass\n",
        ("tests/pretrain/test_clip_pretrain.py",),
    ),
    Bug(
        "pretrain-trunk-keys-kept-prefix",
        "the image tower is saved with open_clip's key names, so model.pretrained loads nothing into the backbone",
        "differ_core/clip_pretrain/train.py",
        'prefix = "visual.trunk."',
        'prefix = "visual."',
        ("tests/pretrain/test_clip_pretrain.py",),
    ),
)

# a pytest plugin (loaded with -p) that writes the first failing node id to $MUTATION_CHECK_REPORT
_PROBE = """\
import os

_done = []


def _record(text):
    if not _done:
        _done.append(text)
        with open(os.environ["MUTATION_CHECK_REPORT"], "w") as fh:
            fh.write(text)


def pytest_runtest_logreport(report):
    if report.failed:
        _record(report.nodeid if report.when == "call" else f"{report.nodeid} (in {report.when})")


def pytest_collectreport(report):
    if report.failed:
        _record(f"{report.nodeid or '<collection>'} (collection error)")
"""
_PROBE_NAME = "_mutation_check_probe"


@dataclass
class Result:
    """The outcome of one bug: ``status`` is caught/survived/stale/timeout/error; ``detail`` says more."""

    bug: Bug
    status: str
    detail: str = ""
    tests_run: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    seconds: float = 0.0
    output: str = field(default="", repr=False)

    @property
    def out_of_step(self) -> bool:
        """The list no longer matches the code (exit status 2)."""
        return self.status == STALE or bool(self.missing)

    def text(self) -> str:
        """The table's result cell."""
        if self.status == CAUGHT:
            s = f"caught by {self.detail}"
        elif self.status == SURVIVED:
            s = "SURVIVED"
        elif self.status == STALE:
            s = f"NO LONGER APPLIES: {self.detail}"
        elif self.status == TIMEOUT:
            s = f"TIMEOUT: {self.detail}"
        else:
            s = f"ERROR: {self.detail}"
        if self.missing:
            s += f" (missing test file {', '.join(self.missing)})"
        return s


class StaleBug(Exception):
    """A bug whose plant no longer applies to the code."""


def plant(text: str, bug: Bug) -> str:
    """``text`` with the bug planted; raises :class:`StaleBug` unless ``bug.old`` occurs exactly once."""
    n = text.count(bug.old)
    if n != 1:
        raise StaleBug(f"anchor {bug.old!r} found {n} times in {bug.file} (expected exactly once)")
    return text.replace(bug.old, bug.new)


def planted_source(repo: Path, bug: Bug) -> str:
    """The bug's file in ``repo`` with the bug planted (checked to compile for ``.py``); raises StaleBug."""
    path = repo / bug.file
    if not path.is_file():
        raise StaleBug(f"{bug.file} does not exist")
    new = plant(path.read_text(encoding="utf-8"), bug)
    if path.suffix == ".py":
        try:
            compile(new, str(path), "exec")
        except SyntaxError as exc:
            raise StaleBug(f"the planted {bug.file} does not compile: {exc}") from None
    return new


def repo_files(repo: Path) -> list[str]:
    """The working tree's tracked and untracked-but-not-ignored files (relative paths that exist)."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    names = sorted({n.decode() for n in out.split(b"\0") if n})
    return [n for n in names if (repo / n).is_file() and not (repo / n).is_symlink()]


def make_scratch(repo: Path, dest: Path, files: Sequence[str]) -> None:
    """Copy ``files`` (relative to ``repo``) into ``dest``, keeping modes."""
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def split_tests(scratch: Path, tests: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(present, missing)``: the bug's tests whose file exists in the copy, and those whose file does not."""
    present, missing = [], []
    for t in tests:
        (present if (scratch / t.split("::", 1)[0]).is_file() else missing).append(t)
    return tuple(present), tuple(missing)


def run_pytest(
    scratch: Path, tests: Sequence[str], timeout: float, python: str, work: Path
) -> tuple[int | None, str, str]:
    """Run the tests in ``scratch``; returns ``(returncode or None on timeout, first failure, output)``."""
    report = work / "first_failure.txt"
    probe_dir = work / "probe"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / f"{_PROBE_NAME}.py").write_text(_PROBE)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(scratch), str(probe_dir)]),
        PYTHONDONTWRITEBYTECODE="1",
        MUTATION_CHECK_REPORT=str(report),
    )
    cmd = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", _PROBE_NAME,
           f"--basetemp={work / 'pytest-tmp'}", *tests]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=scratch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    first = report.read_text().strip() if report.exists() else ""
    return rc, first, out or ""


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def check_bug(
    bug: Bug, repo: Path = REPO, timeout: float = DEFAULT_TIMEOUT, python: str = sys.executable,
    files: Sequence[str] | None = None, keep: bool = False,
) -> Result:  # fmt: skip
    """Plant ``bug`` in a fresh scratch copy of ``repo``, run its tests there and classify the outcome."""
    t0 = time.perf_counter()
    try:
        source = planted_source(repo, bug)
    except StaleBug as exc:
        return Result(bug, STALE, str(exc), seconds=time.perf_counter() - t0)
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{bug.id}-"))
    try:
        scratch = work / "repo"
        make_scratch(repo, scratch, repo_files(repo) if files is None else files)
        (scratch / bug.file).write_text(source, encoding="utf-8")
        present, missing = split_tests(scratch, bug.tests)
        if not present:
            return Result(bug, ERROR, "no test to run", (), missing, time.perf_counter() - t0)
        rc, first, out = run_pytest(scratch, present, timeout, python, work)
        secs = time.perf_counter() - t0
        if rc is None:
            return Result(bug, TIMEOUT, f"no result after {timeout:.0f} s", present, missing, secs, out)
        if rc == 0:
            return Result(bug, SURVIVED, "", present, missing, secs, out)
        if rc in (1, 2) and first:
            return Result(bug, CAUGHT, first, present, missing, secs, out)
        return Result(bug, ERROR, f"pytest exit {rc}: {_tail(out)}", present, missing, secs, out)
    finally:
        if keep:
            print(f"[mutation] kept {work}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def format_table(results: Sequence[Result], markdown: bool = False) -> str:
    """The results as an aligned text table, or a Markdown table."""
    head = ("bug", "description", "file", "tests", "result", "seconds")
    rows = [
        (r.bug.id, r.bug.description, r.bug.file, ", ".join(r.tests_run) or "-", r.text(), f"{r.seconds:.1f}")
        for r in results
    ]
    if markdown:
        esc = [tuple(c.replace("|", "\\|") for c in row) for row in rows]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in esc]) + "\n"
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return (
        "\n".join(fmt.format(*row).rstrip() for row in [head, tuple("-" * w for w in widths), *rows]) + "\n"
    )


def exit_status(results: Sequence[Result]) -> int:
    """2 if the list is out of step with the code, else 1 if any bug was not caught, else 0."""
    if any(r.out_of_step for r in results):
        return 2
    return 0 if all(r.status == CAUGHT for r in results) else 1


def select(bugs: Sequence[Bug], only: str | None) -> list[Bug]:
    """The bugs named in ``only`` (comma-separated ids, in list order), or all; ValueError on an unknown id."""
    if not only:
        return list(bugs)
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    known = {b.id for b in bugs}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown bug id(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [b for b in bugs if b.id in wanted]


def list_bugs(bugs: Sequence[Bug], repo: Path) -> int:
    """Print every bug and whether its plant applies; 2 if any does not."""
    stale = 0
    for b in bugs:
        try:
            planted_source(repo, b)
            state = "applies"
        except StaleBug as exc:
            state, stale = f"NO LONGER APPLIES: {exc}", stale + 1
        print(f"{b.id}\n  {b.description}\n  file:  {b.file}\n  tests: {', '.join(b.tests)}\n  {state}")
    return 2 if stale else 0


def main(argv: Sequence[str] | None = None, bugs: Sequence[Bug] = BUGS, repo: Path = REPO) -> int:
    """The command line; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated bug ids to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the bugs and whether each still applies")
    ap.add_argument("--jobs", type=int, default=1, help="bugs checked at once (default 1)")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per bug (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies (their paths are printed)")
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter that runs pytest (default: this one)"
    )
    args = ap.parse_args(argv)
    try:
        chosen = select(bugs, args.only)
    except ValueError as exc:
        print(f"mutation_check: {exc}", file=sys.stderr)
        return 2
    if args.list:
        return list_bugs(chosen, repo)
    if args.jobs < 1:
        print("mutation_check: --jobs must be >= 1", file=sys.stderr)
        return 2
    files = repo_files(repo)
    t0 = time.perf_counter()

    def one(bug: Bug) -> Result:
        r = check_bug(bug, repo, args.timeout, args.python, files, args.keep)
        print(f"[mutation] {bug.id}: {r.text()} ({r.seconds:.1f} s)", file=sys.stderr, flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, chosen))
    table = format_table(results)
    print(table, end="")
    total = time.perf_counter() - t0
    caught = sum(r.status == CAUGHT for r in results)
    print(f"\n{caught} of {len(results)} bugs caught in {total:.0f} s")
    for r in results:
        if r.status == STALE:
            print(
                f"NO LONGER APPLIES: {r.bug.id}: {r.detail}; update its anchor in scripts/mutation_check.py"
            )
        if r.missing:
            print(f"MISSING TESTS: {r.bug.id}: {', '.join(r.missing)} not found")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_table(results, markdown=True))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
