"""One writer per run folder, and a failed start changes nothing of the run (issue 28, items 1 and 8)."""

from __future__ import annotations

import pytest

from differ_common.errors import DifferError, TransientError
from differ_core.config import TrainConfig
from differ_core.training import hold_run_lock, train

from .conftest import toy_config


def _cfg(toy, run_dir, **sections) -> TrainConfig:
    return TrainConfig.model_validate(toy_config(toy, run_dir, **sections))


def test_a_second_writer_of_one_run_is_refused_in_one_line_naming_the_holder(
    toy_rel, tmp_path, other_process_holds
):
    run_dir = tmp_path / "run"
    cfg = _cfg(toy_rel, run_dir, optim={"lr": 0.01}, schedule={"epochs": 1})
    from differ_common.fingerprint import sha256_text

    lock = toy_rel["work"] / ".locks" / "runs" / f"run-{sha256_text(str(run_dir))[:12]}.lock"
    proc = other_process_holds(lock)
    with pytest.raises(TransientError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and f":{proc.pid} since " in msg and "run.name" in msg, msg
    assert not run_dir.exists()  # nothing written: no config.yaml that disagrees with the holder's weights
    proc.kill()
    proc.wait(timeout=30)
    assert (train(cfg) / "config.yaml").is_file()  # a killed holder never blocks the next writer

    from differ_core.evaluation.runner import evaluate_run

    # an evaluation writes into the run folder too: not while another writer holds it
    other_process_holds(lock)
    with pytest.raises(TransientError, match="is held by"):
        evaluate_run(run_dir, progress=False)
    assert not (run_dir / "metrics.json").exists()


def test_the_run_lock_is_one_per_folder(toy_rel, tmp_path):
    held = hold_run_lock(tmp_path / "a", toy_rel["work"])
    try:
        with pytest.raises(TransientError, match="this run is held by"):
            hold_run_lock(tmp_path / "a", toy_rel["work"])
        hold_run_lock(tmp_path / "b", toy_rel["work"]).release()  # another run is free
    finally:
        held.release()
    hold_run_lock(tmp_path / "a", toy_rel["work"]).release()


def test_a_failed_resume_rewrites_nothing_and_a_failed_start_leaves_no_folder(toy_rel, tmp_path):
    run_dir = tmp_path / "run"
    cfg = _cfg(toy_rel, run_dir, schedule={"epochs": 1})
    train(cfg)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(DifferError):
        train(_cfg(toy_rel, run_dir, schedule={"epochs": 3}), resume_anyway=True)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # reproduce.json still says 1 epoch, no config.resumed-1.yaml

    fresh = tmp_path / "fresh"
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(DifferError):
        train(_cfg(toy_rel, fresh, run={"resume": str(bad)}))
    assert not fresh.exists()
