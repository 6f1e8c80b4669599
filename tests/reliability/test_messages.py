"""Messages that name the file and the fix (issue 28, item 9): damaged checkpoints, a damaged ``_current.json``,
a bad command-line override, a count below 1, ``base:`` by config name. (`differ serve` stopping on SIGTERM is
checked against a real server in tests/flows/test_deployment_server.py.)"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from captions.table import read_current_json
from differ_common.errors import DataError, DifferError
from differ_core.checkpoint import read_checkpoint
from differ_core.config import load_config
from differ_core.config_files import resolve_config
from flows.cli import main


class _Payload:
    def __reduce__(self):
        return (os.getpid, ())


@pytest.mark.parametrize("kind", ["garbage", "empty", "pickle", "truncated"])
def test_a_bad_checkpoint_is_one_line_without_torch_s_advice(tmp_path, kind):
    path = tmp_path / "last.pt"
    if kind == "garbage":
        path.write_bytes(b"garbage, not a checkpoint")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"model": _Payload()}))
    else:
        torch.save({"format": 1, "model": {"w": torch.zeros(64)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DifferError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "differ train" in msg, msg
    assert "weights_only" not in msg and "Errno" not in msg and "False" not in msg, msg


def test_a_damaged_current_json_names_the_fix_and_the_caption_command_repairs_it(tmp_path, capsys):
    w = tmp_path / "w"
    small = ["--size", "tiny", "--set", "num_train_ids=4", "--set", "num_test_ids=2"]
    assert main(["--workdir", str(w), "manifest", "synthcc", *small]) == 0
    caption = ["--workdir", str(w), "caption", "--dataset", "synthcc", "--perspectives", "clothing"]
    assert main(caption) == 0
    current = w / "captions" / "synthcc" / "_current.json"
    current.write_text('{"clothing": {"prompt_id": "ab')  # a torn write from another tool
    with pytest.raises(DataError, match="sets it aside") as err:
        read_current_json(w, "synthcc")
    assert "\n" not in str(err.value)
    capsys.readouterr()
    assert main(caption) == 0  # the command that the message names succeeds, and captions nothing again
    out = capsys.readouterr().out
    assert "generated      0" in out and read_current_json(w, "synthcc")["clothing"]["n_rows"] > 0, out
    assert (w / "captions" / "synthcc" / "_quarantine" / "_current.json").is_file()


def test_a_bad_override_is_blamed_on_the_command_line_not_the_shipped_file(tmp_path, capsys):
    rc = main(["--workdir", str(tmp_path / "w"), "train", "--config", "synthcc_tiny", "optim.lr=abc"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert "override 'optim.lr=abc'" in err and "synthcc_tiny.yaml" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "--dataset", "synthcc", "--batch-size", "-1"],
        ["caption", "--dataset", "synthcc", "--batch-size", "0"],
        ["caption", "--dataset", "synthcc", "--workers", "0"],
    ],
)
def test_a_count_below_one_is_refused_in_one_line(tmp_path, capsys, argv):
    w = tmp_path / "w"
    assert main(["--workdir", str(w), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and argv[-2] in err and ">= 1" in err, err
    assert not w.exists()


def test_a_user_config_may_name_a_shipped_base(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: synthcc_tiny\noptim:\n  lr: 0.002\n")
    cfg = load_config(mine)
    shipped = load_config(resolve_config("synthcc_tiny"))
    assert cfg.optim.lr == 0.002 and cfg.run.name == shipped.run.name and cfg.data == shipped.data
    (tmp_path / "bad.yaml").write_text("base: no_such_config\n")
    with pytest.raises(DifferError, match="neither a file beside it"):
        load_config(tmp_path / "bad.yaml")
