"""`differ caption` and `differ summarize` in-process: printed counts and one-line errors (exit code 2)."""

from __future__ import annotations

import pytest
import yaml
from caption_helpers import make_workspace

from captions.prompts import DEFAULT_PROMPTS
from differ_common.perspectives import PERSPECTIVES
from flows.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _counts(out: str) -> dict[str, int]:
    lines = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in PERSPECTIVES]
    return {ln[0]: int(ln[ln.index("generated") + 1]) for ln in lines}


def test_caption_and_summarize_commands(tmp_path, capsys):
    w = make_workspace(tmp_path / "w", n_ids=3, per_id=2)
    code, out, _ = _run(capsys, "caption", "--workdir", str(w), "--dataset", "synthcc", "--noise", "0.1")
    assert code == 0 and _counts(out) == dict.fromkeys(PERSPECTIVES, 6)
    assert all(k in out for k in ("reused", "total", "s\n"))
    code, out, _ = _run(capsys, "caption", "--workdir", str(w), "--dataset", "synthcc", "--noise", "0.1")
    assert code == 0 and _counts(out) == dict.fromkeys(PERSPECTIVES, 0)
    prompts = tmp_path / "p.yaml"
    spec = yaml.safe_load(DEFAULT_PROMPTS.read_text())
    spec["perspectives"][1]["prompt"] += " Mention the parting."
    prompts.write_text(yaml.safe_dump(spec))
    code, out, _ = _run(
        capsys,
        *("caption", "--workdir", str(w), "--dataset", "synthcc", "--noise", "0.1"),
        *("--prompts", str(prompts), "--perspectives", "hairstyle,clothing"),
    )
    assert code == 0 and _counts(out) == {"hairstyle": 6, "clothing": 0}
    code, out, _ = _run(capsys, "summarize", "--workdir", str(w), "--dataset", "synthcc")
    assert code == 0 and out.startswith("3 identity summaries (extractive)")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--dataset", "ltcc"), "manifest not found"),
        (("--dataset", "synthcc", "--perspectives", "gait"), "unknown perspective"),
        (("--dataset", "synthcc", "--captioner", "hf:/no/such/model"), "model folder not found"),
        (("--dataset", "synthcc", "--prompts", "PROMPTS"), "unknown key(s) ['oops']"),
        (("--dataset", "synthcc", "--batch-size", "0"), "--batch-size must be >= 1"),
        (("--dataset", "synthcc", "--noise", "1.5"), "--noise must be in [0, 1]"),
    ],
)
def test_caption_errors_are_one_line_with_exit_code_2(tmp_path, capsys, args, needle):
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_PROMPTS.read_text() + "oops: 1\n")
    args = tuple(str(bad) if a == "PROMPTS" else a for a in args)
    code, _, err = _run(capsys, "caption", "--workdir", str(w), *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("differ caption: error: ") and needle in lines[0]


def test_summarize_error_is_one_line(tmp_path, capsys):
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=1)
    code, _, err = _run(capsys, "summarize", "--workdir", str(w), "--dataset", "synthcc")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "differ caption --dataset synthcc" in err


def test_bad_image_prints_the_counts_then_one_error_line(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from captions import backends
    from captions.attributes_captioner import AttributesCaptioner

    class NeedsImages(AttributesCaptioner):  # the attributes captioner, but opening files like a VLM
        needs_images = True

    monkeypatch.setattr(
        backends, "make_captioner", lambda spec, **kw: NeedsImages(kw["workdir"], kw["dataset"], kw["noise"])
    )
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=2)
    bad = pd.read_parquet(w / "manifests" / "synthcc.parquet")["path"].iloc[1]
    open(bad, "wb").write(b"\x89PNG broken")
    code, out, err = _run(
        capsys, "caption", "--workdir", str(w), "--dataset", "synthcc", "--perspectives", "pose"
    )
    assert code == 2 and _counts(out) == {"pose": 3}
    assert len(err.strip().splitlines()) == 1 and bad in err and "1 image(s) failed" in err
    code, out, err = _run(
        capsys,
        "caption",
        "--workdir",
        str(w),
        "--dataset",
        "synthcc",
        "--perspectives",
        "pose",
        "--on-bad-image",
        "skip",
    )
    assert code == 0 and f"skipped {bad}" in out and not err
