"""A run folder is never silently continued with another config, and published datasets never train from random
weights by mistake (issue 12, item 4; docs/design.md §4)."""

from __future__ import annotations

import pytest
import yaml

from differ_common.errors import ConfigError, DifferError
from differ_core.config import TrainConfig, load_config
from differ_core.training import check_run_folder, train

from .conftest import toy_config


def _files(folder) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (to prove nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_differ_train_refuses_a_changed_config_and_continues_only_when_asked(toy, tmp_path, capsys):
    from flows.cli import main

    f = tmp_path / "t.yaml"
    f.write_text(
        yaml.safe_dump(toy_config(toy, tmp_path / "run", schedule={"epochs": 1}, run={"val_ids": 0.0}))
    )
    run = tmp_path / "run"
    assert main(["--workdir", str(toy["work"]), "train", "--config", str(f)]) == 0
    saved = (run / "config.yaml").read_bytes()
    before = _files(run)
    capsys.readouterr()

    # the case: a second `differ train` with a changed hyperparameter
    assert main(["--workdir", str(toy["work"]), "train", "--config", str(f), "optim.lr=0.0123"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optim.lr 0.001 -> 0.0123" in err and "--resume-anyway" in err
    assert _files(run) == before  # nothing written, not even config.yaml

    # only operational keys changed: the same run continues (here: it is already finished)
    assert main(["--workdir", str(toy["work"]), "train", "--config", str(f), "run.log_every=5"]) == 0
    assert (run / "config.yaml").read_bytes() == saved

    # asked for explicitly: continues; config.yaml stays, the requested config is saved beside it
    argv = ["--workdir", str(toy["work"]), "train", "--config", str(f), "optim.lr=0.0123", "--resume-anyway"]
    assert main(argv) == 0
    assert "continuing with 1 changed key(s) (optim.lr)" in capsys.readouterr().out
    assert (run / "config.yaml").read_bytes() == saved
    assert yaml.safe_load((run / "config.resumed-1.yaml").read_text())["optim"]["lr"] == 0.0123


def test_check_run_folder_names_every_differing_key_and_ignores_operational_ones(tmp_path):
    cfg = load_config(None, ["run.name=r", f"run.output={tmp_path / 'r'}"])
    assert check_run_folder(tmp_path / "r", cfg) == {}  # a new folder: nothing to compare
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(cfg.to_yaml())
    ops = load_config(
        None, ["run.name=r", f"run.output={tmp_path / 'r'}", "run.threads=3", "run.progress=false"]
    )
    assert check_run_folder(tmp_path / "r", ops) == {}
    changed = load_config(
        None, ["run.name=r", f"run.output={tmp_path / 'r'}", "optim.lr=1e-4", "sampler.K=4"]
    )
    with pytest.raises(DifferError, match=r"2 key\(s\) differ.*optim.lr 2e-06 -> 0.0001, sampler.K 2 -> 4"):
        check_run_folder(tmp_path / "r", changed)
    assert check_run_folder(tmp_path / "r", changed, resume_anyway=True) == {
        "optim.lr": (2e-6, 1e-4),
        "sampler.K": (2, 4),
    }
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["config.yaml"]


def test_published_dataset_without_weights_is_refused_unless_random_is_asked_for(tmp_path):
    from differ_core.config_files import resolve_config

    ltcc = load_config(resolve_config("configs/ltcc.yaml"), [f"run.output={tmp_path / 'run'}"])
    problem = ltcc.pretrained_problem("configs/ltcc.yaml")
    assert problem.startswith("model.pretrained: configs/ltcc.yaml trains ltcc from random weights")
    assert "model.pretrained=random" in problem
    with pytest.raises(ConfigError, match="model.pretrained: the config trains ltcc from random weights"):
        train(ltcc)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    scratch = load_config(resolve_config("configs/ltcc.yaml"), ["model.pretrained=random"])
    assert scratch.pretrained_problem() is None and scratch.model.weights_file is None
    assert load_config(resolve_config("configs/synthcc.yaml")).pretrained_problem() is None
    weights = load_config(resolve_config("configs/ltcc.yaml"), ["model.pretrained=/w/eva.safetensors"])
    assert weights.pretrained_problem() is None and weights.model.weights_file == "/w/eva.safetensors"


def test_text_dim_of_the_config_is_checked_against_the_features(toy, tmp_path):
    cfg = TrainConfig.model_validate(
        toy_config(toy, tmp_path / "run", text={"dim": 16}, run={"val_ids": 0.0})
    )
    with pytest.raises(
        ConfigError, match="text.dim: the config expects 16-d text features but minilm gives 8-d"
    ):
        train(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
