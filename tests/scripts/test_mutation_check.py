"""scripts/mutation_check.py's machinery on a toy repository: caught, SURVIVED, stale anchors, missing tests."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation_check.py"
_spec = importlib.util.spec_from_file_location("mutation_check", _SCRIPT)
mc = importlib.util.module_from_spec(_spec)
sys.modules["mutation_check"] = mc
_spec.loader.exec_module(mc)

CALC = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
SLOW_TEST = "import time\n\n\ndef test_slow():\n    time.sleep(60)\n"


def _toy_bug(id_: str, old: str, new: str, tests=("tests/test_calc.py",), file: str = "calc.py"):
    return mc.Bug(id_, f"toy {id_}", file, old, new, tuple(tests))


@pytest.fixture
def toy(tmp_path):
    """A tiny git repository: calc.add and one test of it."""
    repo = tmp_path / "toy"
    (repo / "tests").mkdir(parents=True)
    (repo / "calc.py").write_text(CALC)
    (repo / "tests" / "test_calc.py").write_text(TEST)
    (repo / "tests" / "test_slow.py").write_text(SLOW_TEST)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    return repo


def _digest(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def test_real_bug_caught_harmless_edit_survives_and_the_tree_is_untouched(toy, tmp_path, capsys):
    before = _digest(toy)
    bugs = [
        _toy_bug("real", "return a + b", "return a - b"),
        _toy_bug("harmless", "return a + b", "return b + a"),
        _toy_bug(
            "half-missing", "return a + b", "return a * b", ("tests/test_calc.py", "tests/test_gone.py")
        ),
    ]
    md = tmp_path / "table.md"
    rc = mc.main(["--jobs", "2", "--markdown", str(md)], bugs=bugs, repo=toy)
    assert _digest(toy) == before  # planted only in the scratch copies
    table = md.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert "caught by tests/test_calc.py::test_add" in rows["real"]
    assert "SURVIVED" in rows["harmless"]
    assert "caught by tests/test_calc.py::test_add" in rows["half-missing"]
    assert "missing test file tests/test_gone.py" in rows["half-missing"]
    assert rc == 2  # a named test file is missing: the list is out of step
    out = capsys.readouterr().out
    assert "MISSING TESTS: half-missing" in out and "2 of 3 bugs caught" in out


def test_anchor_not_found_exactly_once_no_longer_applies(toy, capsys):
    (toy / "twice.py").write_text("x = 1\nx = 1\n")
    absent = _toy_bug("absent", "return a * b", "return 0")
    twice = _toy_bug("twice", "x = 1", "x = 2", file="twice.py")
    broken = _toy_bug("broken", "return a + b", "return (a +")
    nofile = _toy_bug("nofile", "x", "y", file="nowhere.py")
    results = [mc.check_bug(b, toy) for b in (absent, twice, broken, nofile)]
    assert [r.status for r in results] == [mc.STALE] * 4
    assert "found 0 times" in results[0].detail and "found 2 times" in results[1].detail
    assert "does not compile" in results[2].detail and "does not exist" in results[3].detail
    assert all(r.text().startswith("NO LONGER APPLIES") for r in results)
    assert mc.exit_status(results) == 2
    assert mc.main(["--only", "absent"], bugs=[absent], repo=toy) == 2
    assert "NO LONGER APPLIES: absent" in capsys.readouterr().out
    assert mc.main(["--list"], bugs=[absent, _toy_bug("ok", "return a + b", "return 0")], repo=toy) == 2
    assert mc.main(["--only", "nope"], bugs=[absent], repo=toy) == 2


def test_timeout_and_exit_status(toy):
    slow = _toy_bug("slow", "return a + b", "return b + a", ("tests/test_slow.py",))
    r = mc.check_bug(slow, toy, timeout=3)
    assert r.status == mc.TIMEOUT and r.text().startswith("TIMEOUT")
    survived = mc.Result(slow, mc.SURVIVED)
    caught = mc.Result(slow, mc.CAUGHT, "tests/test_calc.py::test_add")
    assert mc.exit_status([caught]) == 0
    assert mc.exit_status([caught, survived]) == 1
    assert mc.exit_status([caught, r]) == 1


def test_the_project_list_is_well_formed_and_in_step_with_the_code():
    repo = Path(__file__).resolve().parents[2]
    ids = [b.id for b in mc.BUGS]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for b in mc.BUGS:
        assert b.tests and all(t.startswith("tests/") for t in b.tests), b.id
        mc.planted_source(repo, b)  # raises StaleBug when the anchor moved: update scripts/mutation_check.py
