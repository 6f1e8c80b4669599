"""The bad-input table: each input gives its exit code and one line that names the file and the fix, and writes
nothing. docs/reliability.md renders the table these tests produce (between the ``bad-inputs`` markers); a test
fails when the two differ. ``DIFFER_UPDATE_DOCS=1`` rewrites the doc's table from the tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
START, END = (
    "<!-- bad-inputs:start (written by tests/reliability/test_bad_inputs.py) -->",
    "<!-- bad-inputs:end -->",
)
SMALL = ["--size", "tiny", "--set", "num_train_ids=4", "--set", "num_test_ids=2"]
RESULTS: dict[str, tuple[str, int, str]] = {}


def _user_dataset(w: Path) -> None:
    assert main(["--workdir", str(w), "manifest", "synthcc", *SMALL, "--set", "identity_cue_strength=2"]) == 0


def _crafted_npz(w: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    folder = w.parent / "release" / "EVA02-CLIP-B-16"
    folder.mkdir(parents=True)
    meta = np.empty(1, dtype=object)
    meta[0] = Payload()
    np.savez(folder / "train.npz", data=np.zeros((6, 4), np.float32), metadata=meta)


def _garbage_checkpoint(w: Path) -> None:
    _user_dataset(w)
    (w.parent / "last.pt").write_bytes(b"garbage, not a checkpoint")


def _damaged_current(w: Path) -> None:
    _user_dataset(w)
    (w / "captions" / "synthcc").mkdir(parents=True)
    (w / "captions" / "synthcc" / "_current.json").write_text('{"clothing": {"prompt')


# label -> (set-up, command line after `differ --workdir W`, exit code); <tmp> is the folder holding W
CASES = {
    "run name with a path": (None, ["train", "--config", "synthcc_tiny", "run.name=../../x"], 2),
    "dataset name with a path": (None, ["caption", "--dataset", "../manifests/synthcc"], 2),
    "pipeline run name with a path": (None, ["run", "--config", "synthcc_tiny", "run.name=/tmp/x"], 2),
    "a count below 1": (None, ["encode", "--dataset", "synthcc", "--batch-size", "-1"], 2),
    "a bad command-line override": (None, ["train", "--config", "synthcc_tiny", "optim.lr=abc"], 2),
    "SynthCC asked with other settings than the folder's": (
        _user_dataset, ["manifest", "synthcc", *SMALL], 2),
    "an official train.npz carrying code": (
        _crafted_npz, ["encode", "--dataset", "synthcc", "--import-official", "<tmp>/release/EVA02-CLIP-B-16"], 2),
    "a checkpoint that is not one": (
        _garbage_checkpoint, ["evaluate", "--checkpoint", "<tmp>/last.pt", "--dataset", "synthcc"], 2),
    "a damaged _current.json": (_damaged_current, ["summarize", "--dataset", "synthcc"], 2),
    "a missing manifest": (None, ["caption", "--dataset", "synthcc"], 2),
}  # fmt: skip


def _normalise(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<tmp>")
    return re.sub(r"held by \S+:\d+ since [\d-]+ [\d:]+ UTC", "held by <host>:<pid> since <time>", text)


@pytest.mark.parametrize("label", list(CASES))
def test_a_bad_input_gives_one_line_and_writes_nothing(label, tmp_path, capsys):
    setup, argv, code = CASES[label]
    w = tmp_path / "w"
    if setup is not None:
        setup(w)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if ".locks" not in p.parts)
    capsys.readouterr()
    rc = main(["--workdir", str(w), *[a.replace("<tmp>", str(tmp_path)) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    if err.startswith(
        "differ run: error: pre-flight found 1 problem(s)"
    ):  # the pre-flight lists one per line
        err = err.splitlines()[1].strip().removeprefix("- ")
    else:
        assert err.startswith(f"differ {argv[0]}: error: "), err
    assert err.count("\n") == 0, err
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if ".locks" not in p.parts)
    assert after == before  # nothing written
    RESULTS[label] = ("differ " + " ".join(argv), rc, _normalise(err, tmp_path))


def render_table(results: dict[str, tuple[str, int, str]]) -> str:
    """The Markdown table of ``results`` in ``CASES`` order."""
    lines = ["| input | command | exit | the one line |", "|---|---|---|---|"]
    for label in CASES:
        cmd, rc, line = results[label]
        cell = line.replace("|", "\\|")
        lines.append(f"| {label} | `{cmd}` | {rc} | {cell} |")
    return "\n".join(lines)


def test_docs_reliability_renders_the_table():
    if set(RESULTS) != set(CASES):
        pytest.skip("run with the whole file: the table needs every case")
    table = render_table(RESULTS)
    text = DOC.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    want = f"{head}{START}\n{table}\n{END}{tail}"
    if os.environ.get("DIFFER_UPDATE_DOCS") == "1":
        DOC.write_text(want)
    assert START in text and END in text and text == want, (
        "docs/reliability.md is out of step: DIFFER_UPDATE_DOCS=1"
    )
