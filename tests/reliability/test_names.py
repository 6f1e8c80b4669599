"""Run, dataset and perspective names cannot leave their workspace folders (issue 28, item 7)."""

from __future__ import annotations

import pytest

from differ_common.errors import ConfigError
from differ_common.workspace import Workspace, safe_name
from flows.cli import main


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", ".", "", "a\\b"])
def test_names_with_a_path_in_them_are_refused(tmp_path, name):
    ws = Workspace.at(tmp_path)
    for call in (lambda: ws.run_dir(name), lambda: ws.captions_dir(name), lambda: ws.manifest(name),
                 lambda: ws.perspective_dir("synthcc", name), lambda: ws.features_dir(name, "minilm")):  # fmt: skip
        with pytest.raises(ConfigError, match="not a plain name"):
            call()
    assert safe_name("run", "synthcc_tiny-3f2a.1") == "synthcc_tiny-3f2a.1"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_train_refuses_a_run_name_outside_w_runs(tmp_path, capsys):
    w = tmp_path / "w"
    rc = main(["--workdir", str(w), "train", "--config", "synthcc_tiny", "run.name=../../escaped"])
    assert rc == 2 and "run.name" in _one_line(capsys)
    assert not (tmp_path / "escaped").exists() and not w.exists()


def test_caption_refuses_a_dataset_path(tmp_path, capsys):
    w = tmp_path / "w"
    (w / "manifests").mkdir(parents=True)
    rc = main(["--workdir", str(w), "caption", "--dataset", "../manifests/synthcc"])
    assert rc == 2 and "not a plain name" in _one_line(capsys)
    assert [p.name for p in w.iterdir()] == ["manifests"] and not any((w / "manifests").iterdir())


def test_pipeline_preflight_names_a_bad_run_name(tmp_path, capsys):
    w = tmp_path / "w"
    rc = main(["--workdir", str(w), "run", "--config", "synthcc_tiny", "run.name=../x"])
    err = capsys.readouterr().err
    assert rc == 2 and "run.name" in err
    assert not (tmp_path / "x").exists()
