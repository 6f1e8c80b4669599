"""The training loop on the toy workspace: outputs, logs, exact resume after a kill, NaN stop, bad inputs."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import threading

import pytest
import torch

from differ_common.errors import ConfigError, DataError, DifferError
from differ_core.config import TrainConfig
from differ_core.training import train

from .conftest import toy_config


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run_a(toy, tmp_path_factory):
    """An uninterrupted 2-epoch DIFFER run on the toy data."""
    out = tmp_path_factory.mktemp("run_a")
    cfg = TrainConfig.model_validate(toy_config(toy, out / "run"))
    return train(cfg)


def test_run_writes_checkpoints_logs_and_validation(run_a):
    names = {p.name for p in run_a.iterdir()}
    assert {"config.yaml", "checkpoints", "train_log.csv", "val_log.csv", "tensorboard"} <= names
    assert any((run_a / "tensorboard").iterdir())
    rows = _rows(run_a / "train_log.csv")
    for col in ("lr", "loss", "loss_id", "loss_triplet", "loss_bio", "loss_nb_hairstyle", "loss_nb_clothing",
                "loss_nbdetach", "acc_id", "acc_bio", "grl_alpha", "images_per_s"):  # fmt: skip
        assert col in rows[0], col
    steps = [int(r["step"]) for r in rows]
    assert steps == list(range(1, len(rows) + 1))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up then cosine decay
    val = _rows(run_a / "val_log.csv")
    assert [int(r["epoch"]) for r in val] == [1, 2] and 0 <= float(val[-1]["mAP"]) <= 1


def test_checkpoints_load_for_inference(run_a, toy):
    from differ_core.model import load_model_for_inference

    last = torch.load(run_a / "checkpoints" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "sampler", "rng"} <= set(last)
    assert last["epoch"] == 2 and last["num_cameras"] == 2 and last["text_dim"] == 8
    model, cfg, info = load_model_for_inference(run_a / "checkpoints" / "best.pt")
    assert not model.training and info["img_size"] == (32, 16) and info["mean"] == (0.5, 0.5, 0.5)
    f = model(torch.randn(3, 3, 32, 16), torch.tensor([0, 1, 0]))
    assert f.shape == (3, 192)


def test_resume_after_kill_ends_with_the_same_weights(run_a, toy, tmp_path):
    spe = int(_rows(run_a / "val_log.csv")[0]["step"])  # steps per epoch
    base = toy_config(toy, tmp_path / "run")
    killed = toy_config(
        toy, tmp_path / "run", run={"stop_after_steps": spe + 3, "checkpoint_every_steps": spe + 2}
    )
    run_dir = train(TrainConfig.model_validate(killed))
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == spe + 2 and last["sampler"]["start_batch"] == 2  # mid-epoch checkpoint
    train(TrainConfig.model_validate(base))  # run.resume=auto continues from last.pt
    a = torch.load(run_a / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"]
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-5, rtol=1e-4), k
    # the log after resume has each step once and the same losses as the uninterrupted run
    ra, rb = _rows(run_a / "train_log.csv"), _rows(run_dir / "train_log.csv")
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    assert [round(float(r["loss"]), 3) for r in rb] == [round(float(r["loss"]), 3) for r in ra]


def test_nan_loss_stops_with_step_terms_and_last_checkpoint(toy, tmp_path, monkeypatch):
    from differ_core import losses

    real = losses.DifferLoss.__call__
    calls = {"n": 0}

    def poisoned(self, out, pids, texts, logit_scale=None):
        calls["n"] += 1
        total, terms = real(self, out, pids, texts, logit_scale)
        if calls["n"] > 20:  # 16 steps per epoch: epoch 0 checkpointed
            total, terms = total * float("nan"), {**terms, "loss": float("nan")}
        return total, terms

    monkeypatch.setattr(losses.DifferLoss, "__call__", poisoned)
    cfg = TrainConfig.model_validate(toy_config(toy, tmp_path / "run", run={"val_ids": 0.0}))
    with pytest.raises(DifferError) as err:
        train(cfg)
    msg = str(err.value)
    assert "non-finite loss at step 20 (epoch 1)" in msg and "loss_id=" in msg
    assert str(tmp_path / "run" / "checkpoints" / "last.pt") in msg


def test_images_without_features_are_listed(toy, tmp_path):
    blob = torch.load(toy["features"], weights_only=True)
    cut = {"image_ids": blob["image_ids"][3:], "features": blob["features"][3:]}
    torch.save(cut, tmp_path / "cut.pt")
    cfg = TrainConfig.model_validate(
        toy_config(
            toy, tmp_path / "run", text={"features_file": str(tmp_path / "cut.pt")}, run={"val_ids": 0.0}
        )
    )
    with pytest.raises(DataError, match="3 training images have no text feature") as err:
        train(cfg)
    assert blob["image_ids"][0] in str(err.value)


def test_checkpoint_of_another_architecture_is_refused(run_a, toy, tmp_path):
    other = toy_config(
        toy, tmp_path / "run", model={"backbone": "resnet18", "backbone_kwargs": {}},
        run={"resume": str(run_a / "checkpoints" / "last.pt")},
    )  # fmt: skip
    with pytest.raises(DifferError, match="another architecture or dataset.*backbone: checkpoint 'vit_tiny"):
        train(TrainConfig.model_validate(other))


def test_more_identities_per_batch_than_the_data_has_is_a_clear_error(toy, tmp_path):
    cfg = TrainConfig.model_validate(toy_config(toy, tmp_path / "run", sampler={"P": 7, "K": 2}))
    with pytest.raises(DifferError, match="sampler.P=7 identities per batch but the training set has only 6"):
        train(cfg)


def _open_files_under(folder) -> list[str]:
    """Paths under ``folder`` this process holds open (Linux /proc)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                out.append(target)
    return out


def _event_writer_threads() -> set:
    """The live background threads of TensorBoard event-file writers."""
    return {t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_run_that_raises_leaves_no_file_open(toy, tmp_path, monkeypatch):
    from differ_core import losses

    real = losses.DifferLoss.__call__

    def poisoned(self, out, pids, texts, logit_scale=None):
        total, terms = real(self, out, pids, texts, logit_scale)
        return total * float("nan"), {**terms, "loss": float("nan")}

    monkeypatch.setattr(losses.DifferLoss, "__call__", poisoned)
    writers = _event_writer_threads()
    cfg = toy_config(toy, tmp_path / "run", run={"val_ids": 0.0, "debug_batches": True})
    with pytest.raises(DifferError, match="non-finite loss at step 0") as err:
        train(TrainConfig.model_validate(cfg))
    assert (tmp_path / "run" / "debug" / "batches-rank0.txt").exists()
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    # closed by train() itself, not by garbage collection: the caller still holds the error and its frames
    assert err.value.__traceback__ is not None
    assert _open_files_under(tmp_path / "run") == []
    assert _event_writer_threads() == writers  # the TensorBoard writer was closed (its thread ended)


def test_tensorboard_receives_the_train_and_validation_scalars(run_a):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (run_a / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/loss_bio", "train/grl_alpha", "val/mAP", "val/rank1"} <= tags
    rows = _rows(run_a / "train_log.csv")
    logged = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert logged == [(int(r["step"]), pytest.approx(float(r["loss"]), rel=1e-5)) for r in rows]
    assert [e.step for e in acc.Scalars("val/mAP")] == [int(r["step"]) for r in _rows(run_a / "val_log.csv")]


def test_no_tracker_and_a_missing_tracker_package(toy, tmp_path, monkeypatch):
    cfg = toy_config(toy, tmp_path / "none", schedule={"epochs": 1}, run={"log_with": [], "val_ids": 0.0})
    run_dir = train(TrainConfig.model_validate(cfg))
    assert (run_dir / "checkpoints" / "last.pt").exists() and not (run_dir / "tensorboard").exists()
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if tensorboard were not installed
    cfg = toy_config(toy, tmp_path / "tb", run={"val_ids": 0.0})  # the default: ["tensorboard"]
    with pytest.raises(ConfigError, match=r"run.log_with: 'tensorboard' needs the tensorboard package"):
        train(TrainConfig.model_validate(cfg))
    assert not (tmp_path / "tb").exists()  # refused before any work
