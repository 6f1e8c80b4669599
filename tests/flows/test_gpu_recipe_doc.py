"""Every command of docs/gpu_recipe.md parses with the real CLI, its training configs validate with weights given,
and every run it evaluates is one the commands before it create (issue 12, item 4)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from differ_common.errors import DifferError
from differ_core.config import load_config
from differ_core.config_files import resolve_config
from differ_core.training import run_dir_for
from flows.cli import build_parser
from flows.commands.run import resolved_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "gpu_recipe.md"


def doc_commands(text: str) -> list[str]:
    """Shell commands of the ```bash blocks (continuations joined, comments dropped), then the inline
    ``differ evaluate ...`` spans of the prose."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [m for m in re.findall(r"`([^`]+)`", prose) if m.startswith("differ evaluate ")]
    return out


def test_every_documented_command_works_as_written(tmp_path, monkeypatch):
    from differ_core import convert_official

    commands = doc_commands(DOC.read_text())
    assert sum(c.startswith("differ train ") for c in commands) >= 7 and any(
        c.startswith("differ run") for c in commands
    )
    train_names: set[str] = set()
    run_bases: set[str] = set()
    encoded: dict[str, str] = {}
    captioned: dict[str, list[str]] = {}
    evaluated: list[str] = []
    for cmd in commands:
        words = shlex.split(cmd)
        if words[:3] == ["python", "-m", "differ_core.convert_official"]:

            def fake(*a, **k):
                raise DifferError("parsed")

            monkeypatch.setattr(convert_official, "convert_checkpoint", fake)
            assert convert_official.main(words[3:]) == 2, cmd  # parsed, then stopped before reading files
            continue
        if words[0] != "differ":
            continue
        assert not re.search(r"[<>]|\.\.\.", cmd), f"a placeholder the shell cannot run: {cmd}"
        try:
            args = build_parser().parse_args(["--workdir", str(tmp_path / "w"), *words[1:]])
        except SystemExit:
            pytest.fail(f"does not parse: {cmd}")
        if args.command == "caption":
            captioned[args.dataset] = args.perspectives.split(",")
        elif args.command == "encode" and not args.import_official:
            encoded[args.dataset] = args.encoder
        elif args.command == "train":
            cfg = load_config(
                resolve_config(args.config), [f"data.workdir={tmp_path / 'w'}", *args.overrides]
            )
            assert cfg.pretrained_problem() is None and cfg.model.weights_file.startswith("/"), cmd
            train_names.add(run_dir_for(cfg).name)
            ds = cfg.data.dataset
            if not cfg.text.encoder.startswith("official:"):
                assert encoded.get(ds) == cfg.text.encoder, f"trains on features no command encoded: {cmd}"
                assert set(cfg.text.perspectives) <= set(captioned.get(ds, [])), (
                    f"uncaptioned perspectives: {cmd}"
                )
        elif args.command == "run":
            run = resolved_run(args)
            pcfg, train = run.pipeline, run.train.model_dump(mode="json")
            assert train["text"]["encoder"] == pcfg.encoder and train["model"]["pretrained"], cmd
            run_bases.add(train["run"]["name"])
        elif args.command == "evaluate" and args.run:
            evaluated.append(args.run)
    hashed = re.compile(rf"({'|'.join(map(re.escape, run_bases))})-[0-9a-f]{{8}}")
    for name in evaluated:
        assert name in train_names or hashed.fullmatch(name), (
            f"`differ evaluate --run {name}`: no command creates it"
        )
    assert {"ltcc-differ", "prcc-differ", "celeb-light-differ", "ccvid-differ"} <= set(evaluated)
