"""The identity stage, the locked image tower and the shipped start: found without training, checked by sha256,
loaded as both towers, regenerated bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from differ_common.errors import DataError
from differ_core.clip_pretrain import shipped as shipped_mod
from differ_core.clip_pretrain.config import load_pretrain_config
from differ_core.clip_pretrain.shipped import (
    compare_with_shipped,
    export_start,
    find_shipped,
    resolve_start,
)
from differ_core.clip_pretrain.train import run_pretrain

from .conftest import write_config

IDENTITY = {"epochs": 4, "P": 4, "K": 3, "lr": 0.002, "warmup_epochs": 0.5, "pad": 2}


def _config(path, **changes):
    return load_pretrain_config(write_config(path, **changes))


def _identity(path, **changes):
    cfg = write_config(path, **changes)
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["identity"] = dict(IDENTITY)
    cfg.write_text(yaml.safe_dump(data))
    return load_pretrain_config(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny pre-trainings with an identity stage: locked image tower for 1 and 3 contrastive epochs, unlocked."""
    root = tmp_path_factory.mktemp("identity")
    quiet = lambda m: None  # noqa: E731
    out = {}
    for key, changes in {
        "locked1": {"train__lock_image": True, "train__epochs": 1},
        "locked3": {"train__lock_image": True, "train__epochs": 3},
        "unlocked3": {"train__epochs": 3},
    }.items():
        cfg = _identity(root / f"{key}.yaml", **changes)
        out[key] = (cfg, run_pretrain(cfg, root / "w", log=quiet))
    return root, out


def _trunk(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out.trunk))


def test_identity_stage_runs_first_and_learns(runs):
    import pandas as pd

    _, out = runs
    log = pd.read_csv(out["locked3"][1].folder / "train_log.csv")
    ident = log[log["stage"] == "identity"]
    assert len(ident) == IDENTITY["epochs"]
    loss, acc = ident["loss"].tolist(), ident["id_accuracy"].tolist()
    assert loss[-1] < loss[0] and acc[-1] > max(acc[0], 1 / 8), (loss, acc)  # 8 training people
    assert log["stage"].tolist()[: IDENTITY["epochs"]] == ["identity"] * IDENTITY["epochs"]


def test_a_locked_image_tower_keeps_what_the_identity_stage_learned(runs):
    """With ``train.lock_image`` the trunk (weights and BatchNorm statistics) after 1 and after 3 contrastive epochs
    is the identity stage's; unlocked, the contrastive stage moves it."""
    _, out = runs
    one, three, free = (_trunk(out[k][1]) for k in ("locked1", "locked3", "unlocked3"))
    assert set(one) == set(three)
    assert all(torch.equal(one[k], three[k]) for k in one)
    assert not all(torch.equal(one[k], free[k]) for k in one)


def test_no_identity_stage_and_no_lock_keep_old_fingerprints(runs, tmp_path):
    plain = _config(tmp_path / "plain.yaml")
    explicit = _config(tmp_path / "explicit.yaml", identity__epochs=0, train__lock_image=False)
    assert plain.fingerprint() == explicit.fingerprint()
    _, out = runs
    assert out["locked3"][0].fingerprint() != plain.fingerprint()


def _ship(cfg, out, starts, name="tiny_start"):
    return export_start(out, cfg, name, starts / name, f"differ pretrain {name} --export {starts / name}")


def test_shipped_start_is_found_checked_and_loads_as_both_towers(runs, tmp_path):
    from captions.features.encoders import load_encoder
    from differ_core.model import load_backbone_weights

    _, out = runs
    cfg, trained = out["locked3"]
    starts = tmp_path / "starts"
    folder = _ship(cfg, trained, starts)
    record = json.loads((folder / "start.json").read_text())
    assert set(record["files"]) == {"open_clip_model.safetensors", "tiny-clip.json"}
    assert record["fingerprint"] == cfg.fingerprint() and torch.__version__.startswith(
        record["packages"]["torch"]
    )
    assert record["command"].startswith("differ pretrain tiny_start") and record["cpu"]
    found = find_shipped("tiny_start", cfg, starts)
    assert found is not None and found.weights == folder / "open_clip_model.safetensors"
    # the text tower through the EVA02-CLIP path, the trunk as model.pretrained of a DIFFER backbone
    enc = load_encoder(found.text_encoder, device="cpu")
    assert enc.encode(["a person with short black hair"]).shape[-1] == cfg.model.embed_dim
    import timm

    trunk = timm.create_model("regnetx_002", num_classes=0, pretrained=False)
    load_backbone_weights(trunk, found.trunk)
    want = _trunk(trained)
    got = trunk.state_dict()
    assert all(
        torch.equal(got[k].half().float(), want[k].half().float())
        for k in want
        if want[k].is_floating_point()
    )
    # another config of the same name is not this start; a changed file is refused with the fix
    other = _config(tmp_path / "other.yaml", train__lr=0.001)
    assert find_shipped("tiny_start", other, starts) is None
    with open(found.weights, "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(
        DataError, match=r"open_clip_model.safetensors: missing or not the shipped file.*reinstall"
    ):
        find_shipped("tiny_start", cfg, starts)


def test_resolve_start_prefers_the_shipped_files_and_trains_without_them(runs, tmp_path, monkeypatch):
    root, out = runs
    cfg, trained = out["locked1"]
    config_path = root / "locked1.yaml"
    starts = tmp_path / "starts"
    _ship(cfg, trained, starts, name="locked1")
    monkeypatch.setattr(shipped_mod, "STARTS", starts)
    logs: list[str] = []
    got = resolve_start(str(config_path), tmp_path / "fresh", log=logs.append)
    assert got.folder == starts / "locked1" and not (tmp_path / "fresh" / "pretrain").exists()
    assert not any("epoch" in m for m in logs)
    monkeypatch.setattr(shipped_mod, "STARTS", tmp_path / "none")
    got = resolve_start(str(config_path), tmp_path / "fresh", log=logs.append)
    assert got.folder.parent == tmp_path / "fresh" / "pretrain" and any("epoch" in m for m in logs)


def test_regenerating_says_whether_the_shipped_start_is_bit_identical(runs, tmp_path):
    root, out = runs
    cfg, trained = out["locked1"]
    starts = tmp_path / "starts"
    _ship(cfg, trained, starts)
    again = run_pretrain(cfg, tmp_path / "again", log=lambda m: None)
    assert compare_with_shipped(again, starts / "tiny_start").startswith("bit-identical")
    other = out["locked3"][1]
    assert "max abs difference" in compare_with_shipped(other, starts / "tiny_start")


def test_the_package_ships_the_synthcc_start():
    """The demo's start is package data: present, matching its config and its recorded sha256, at most 16 MiB."""
    cfg = load_pretrain_config("synthcc_start")
    found = find_shipped("synthcc_start", cfg)
    assert found is not None, "differ_core/starts/synthcc_start/ missing or made with other settings"
    total = sum(m["bytes"] for m in found.record["files"].values())
    assert total <= 16 * 2**20, total
    assert found.record["config"]["people"]["seed"] not in range(
        5
    )  # disjoint from the demo's and study's seeds
