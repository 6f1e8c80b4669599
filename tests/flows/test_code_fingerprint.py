"""Caches that see code (issue 29, item 4): a stage's cache key holds the fingerprint of the project source it runs,
so an edit to that source reruns the stage, while an edit to code it does not run leaves it cached. Edits are made
to a copy of the project's source, never to the checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import differ_common.code_fingerprint as cf
from flows.stages import code
from flows.stages.caption import caption_task
from flows.stages.encode import encode_task
from flows.stages.evaluate import evaluate_task
from flows.stages.manifest import manifest_task
from flows.stages.train import run_name_for, train_task

TASKS = {"manifest": manifest_task, "caption": caption_task, "encode": encode_task, "train": train_task,
         "evaluate": evaluate_task}  # fmt: skip
EDITS = {  # a function body edited in each file
    "captions/writer.py": ("def flag_caption(caption: str, prompt: str) -> str:\n",
                           "def flag_caption(caption: str, prompt: str) -> str:\n    caption = caption\n"),
    "differ_core/losses.py": ("def batch_hard_triplet(", "def _edited():\n    return 1\n\n\ndef batch_hard_triplet("),
    "differ_core/evaluation/runner.py": ("def resolve_run(", "def _edited():\n    return 1\n\n\ndef resolve_run("),
}  # fmt: skip


def entries(task) -> tuple[str, ...]:
    """The modules in a task's cache policy (what the stage runs)."""
    (part,) = [p for p in task.cache_policy.policies if isinstance(p, code.StageCode)]
    return part.entries


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """The project's packages copied to ``tmp_path``; fingerprints are computed from the copy."""
    dirs = {}
    for top in cf.PROJECT_PACKAGES:
        src = cf._package_dir(top)
        dirs[top] = tmp_path / top
        shutil.copytree(
            src, dirs[top], ignore=shutil.ignore_patterns("__pycache__", "*.safetensors", "*.yaml")
        )
    monkeypatch.setattr(cf, "_package_dir", lambda top: dirs.get(top))
    cf.code_fingerprint.cache_clear()
    yield tmp_path
    cf.code_fingerprint.cache_clear()


def _fingerprints() -> dict[str, str]:
    cf.code_fingerprint.cache_clear()
    return {stage: cf.code_fingerprint(entries(task)) for stage, task in TASKS.items()}


def _edit(root: Path, rel: str) -> None:
    old, new = EDITS[rel]
    path = root / rel
    text = path.read_text()
    assert old in text, f"{rel}: the edit's anchor moved; update EDITS"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "rel, reruns",
    [
        (
            "captions/writer.py",
            {"caption"},
        ),  # the caption writer: captioning only (rows are then found current)
        (
            "differ_core/losses.py",
            {"train", "evaluate"},
        ),  # the loss: training (the evaluation builds the model)
        ("differ_core/evaluation/runner.py", {"evaluate"}),  # evaluation code: training stays cached
    ],
)
def test_an_edit_reruns_exactly_the_stages_that_run_the_edited_code(source_copy, rel, reruns):
    before = _fingerprints()
    _edit(source_copy, rel)
    after = _fingerprints()
    assert {s for s in TASKS if before[s] != after[s]} == reruns


def test_an_edit_to_the_training_code_starts_a_new_run(monkeypatch):
    cfg = {"run": {"name": "r"}, "model": {"pretrained": None}}
    first = run_name_for(cfg, "f", "m")
    real = code.stage_code_fingerprint
    monkeypatch.setattr(
        code, "stage_code_fingerprint", lambda e: real(e) + ("x" if "differ_core.training" in e else "")
    )
    assert run_name_for(cfg, "f", "m") != first  # a new run folder: the old run is kept, not resumed


def test_the_closure_follows_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "flows"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from flows.sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\nimport os\n")
    (pkg / "sub" / "c.py").write_text("X = 1\n")
    (pkg / "lonely.py").write_text("Y = 2\n")
    monkeypatch.setattr(cf, "_package_dir", lambda top: pkg if top == "flows" else None)
    assert list(cf.closure(("flows.a",))) == ["flows", "flows.a", "flows.sub", "flows.sub.b", "flows.sub.c"]
