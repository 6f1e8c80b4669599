"""``trust_remote_code`` from a submitted run is honoured only when `differ serve` was started with the flag; run
names cannot leave ``W/runs`` (issue 28, item 10)."""

from __future__ import annotations

import pytest

from differ_common.errors import ConfigError
from flows.config import PipelineConfig
from flows.pipeline import run_pipeline
from flows.run_config import resolve_pipeline
from flows.stages.caption import caption_step
from flows.stages.context import Context
from flows.trust import ALLOW_ENV, check_remote_code


@pytest.fixture
def submitted(monkeypatch):
    """This process runs a flow run submitted to a deployment (what `differ serve` executes)."""
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.delenv(ALLOW_ENV, raising=False)


def test_a_submitted_run_cannot_turn_on_trust_remote_code(submitted, tmp_path):
    cfg = PipelineConfig(workdir=str(tmp_path / "w"), trust_remote_code=True)
    with pytest.raises(ConfigError, match="differ serve --trust-remote-code") as err:
        run_pipeline(cfg)
    assert "\n" not in str(err.value) and not (tmp_path / "w").exists()
    with pytest.raises(ConfigError, match="trust_remote_code"):  # the caption flow alone, too
        caption_step(Context(resolve_pipeline(cfg)), runner=None)


def test_the_serving_process_flag_or_the_user_s_own_command_allow_it(submitted, monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")
    check_remote_code(True)  # `differ serve --trust-remote-code`
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID")
    monkeypatch.delenv(ALLOW_ENV)
    check_remote_code(True)  # `differ run --trust-remote-code`: the user's own flag


def test_a_submitted_run_name_cannot_leave_w_runs(submitted, tmp_path):
    cfg = PipelineConfig(workdir=str(tmp_path / "w"), train_overrides=["run.name=../../x"])
    with pytest.raises(ConfigError, match="run.name"):
        run_pipeline(cfg)
    assert not (tmp_path / "x").exists()
