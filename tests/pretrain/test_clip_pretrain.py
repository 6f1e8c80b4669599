"""The CLIP-style pre-training: bit-reproducible, cached by its fingerprint, both halves loadable as the paper's
EVA02-CLIP is (text tower through `open_clip:<json>@<weights>`, image tower as `model.pretrained`)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from differ_common.errors import ConfigError
from differ_core.clip_pretrain.config import load_pretrain_config
from differ_core.clip_pretrain.train import build_model, output_for, run_pretrain, trunk_state

from .conftest import write_config


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny pre-training run in two fresh workspaces."""
    root = tmp_path_factory.mktemp("pretrain")
    cfg = load_pretrain_config(write_config(root / "tiny.yaml"))
    logs: list[str] = []
    a = run_pretrain(cfg, root / "wa", log=logs.append)
    b = run_pretrain(cfg, root / "wb", log=lambda m: None)
    return cfg, a, b, logs, root


def test_same_seed_gives_bit_identical_weights(trained):
    cfg, a, b, logs, _ = trained
    assert a.complete() and b.complete()
    assert _sha(a.weights) == _sha(b.weights)
    assert _sha(a.trunk) == _sha(b.trunk)
    assert a.folder.name == f"tiny-clip-{cfg.fingerprint()}"


def test_it_learns(trained):
    """The contrastive loss falls over three epochs (an optimizer that never steps keeps it flat)."""
    _, a, _, logs, _ = trained
    import pandas as pd

    loss = pd.read_csv(a.folder / "train_log.csv")["loss"].tolist()
    assert len(loss) == 3 and loss[-1] < loss[0] - 0.2, loss
    assert any("pretrain epoch 3/3" in m for m in logs)


def test_a_finished_pretraining_is_reused_and_a_change_is_a_new_one(trained):
    cfg, a, _, _, root = trained
    before = a.weights.stat().st_mtime_ns
    again = run_pretrain(cfg, root / "wa", log=lambda m: pytest.fail(f"retrained: {m}"))
    assert again.folder == a.folder and a.weights.stat().st_mtime_ns == before
    other = load_pretrain_config(write_config(root / "other.yaml", train__lr=0.001))
    assert output_for(other, root / "wa").folder != a.folder
    assert other.fingerprint() != cfg.fingerprint()


def test_text_tower_loads_through_the_open_clip_spec(trained):
    """The encoder a real EVA02-CLIP checkpoint goes through gives the trained text tower's features."""
    from captions.features.encoders import load_encoder

    cfg, a, _, _, _ = trained
    enc = load_encoder(a.text_encoder, device="cpu")
    texts = ["a tall person with short black hair", "wearing a red top and blue trousers"]
    got = enc.encode(texts)
    model, tok = build_model(cfg, a.config_json)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(a.weights)))
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.eval().encode_text(tok(texts)), dim=-1)
    got = torch.as_tensor(got, dtype=torch.float32)
    assert got.shape == (2, cfg.model.embed_dim)
    assert torch.allclose(torch.nn.functional.normalize(got, dim=-1), want, atol=1e-5)


def test_image_tower_is_the_differ_backbone(trained):
    """`model.pretrained=<trunk>` loads every trunk tensor into the timm backbone of the same name."""
    import timm
    from safetensors.torch import load_file

    from differ_core.model import load_backbone_weights

    cfg, a, _, _, _ = trained
    backbone = timm.create_model(cfg.model.vision.timm_model_name, num_classes=0, pretrained=False)
    report = load_backbone_weights(backbone, a.trunk)
    assert report["missing"] == [] and report["unexpected"] == []
    model, _ = build_model(cfg, a.config_json)
    model.load_state_dict(load_file(str(a.weights)))
    x = torch.randn(2, 3, cfg.people.img_height, cfg.people.img_width)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), model.visual.trunk.eval()(x), atol=1e-5)
    assert set(trunk_state(model)) == set(backbone.state_dict())


def test_zero_shot_record(trained):
    _, a, _, _, _ = trained
    scores = a.zero_shot()
    assert scores["held_out_ids"] == 4
    for p in ("clothing", "hairstyle", "biometrics"):
        s = scores[p]
        assert (
            0 <= s["i2t_r1"] <= 100
            and 0 <= s["t2i_r1"] <= 100
            and s["chance"] == round(100 / s["candidates"], 1)
        )


def test_clothes_changing_rank1_other_cameras_ignores_a_shared_background():
    """Image 0's nearest other-outfit image is the same person in the same camera (1): a hit when the camera is
    allowed, not under the protocol, where its best match left is another person (2)."""
    from differ_core.clip_pretrain.zero_shot import cc_rank1

    pid, outfit, cam = torch.tensor([0, 0, 1, 0]), torch.tensor([0, 1, 0, 2]), torch.tensor([0, 0, 1, 1])
    sim = torch.tensor(
        [[1.0, 0.9, 0.5, 0.1], [0.9, 1.0, 0.2, 0.8], [0.5, 0.2, 1.0, 0.3], [0.1, 0.8, 0.3, 1.0]]
    )
    assert (
        cc_rank1(sim, pid, outfit) == 100.0
    )  # 0 -> 1, 1 -> 0, 3 -> 1; 2 (person 1) has no match: not a query
    assert cc_rank1(sim, pid, outfit, cam) == 66.7  # 0 -> 2 miss, 1 -> 3 hit, 3 -> 1 hit


def test_bad_config_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epoch"):
        load_pretrain_config(bad)
    with pytest.raises(ConfigError, match="no such config"):
        load_pretrain_config("no_such_pretraining")


@pytest.mark.parametrize(
    "trunk, message",
    [
        ("lcnet_050", r"lcnet_050 ends in a conv head .*256 -> 1280.*choose a trunk"),
        ("regnetx_00", "unknown timm"),
    ],
)
def test_a_trunk_open_clip_cannot_take_is_refused_at_load(tmp_path, trunk, message):
    """Not a shape error minutes later: the file, the key and what to pick instead."""
    bad = tmp_path / "trunk.yaml"
    bad.write_text(f"model: {{vision: {{timm_model_name: {trunk}}}}}\n")
    with pytest.raises(ConfigError, match=r"trunk.yaml: model.vision.timm_model_name: " + message):
        load_pretrain_config(bad)


def test_shipped_config_loads():
    cfg = load_pretrain_config("synthcc_clip")
    assert cfg.model.vision.timm_model_name == "regnetx_002" and cfg.people.seed not in range(5)


def test_matched_order_keeps_every_image_and_puts_each_group_together():
    """A matched batch is people in the same clothing colours: the order is a permutation of the training images
    in which each group is one contiguous run, the groups (and the images within them) shuffled per call."""
    import numpy as np

    from differ_core.clip_pretrain.train import matched_order

    groups = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3])
    train_idx = np.arange(10)  # the last two images are held out
    gen = torch.Generator().manual_seed(0)
    a, b = matched_order(groups, train_idx, gen), matched_order(groups, train_idx, gen)
    for order in (a, b):
        assert sorted(order.tolist()) == train_idx.tolist()
        runs = [int(g) for i, g in enumerate(groups[order]) if i == 0 or g != groups[order][i - 1]]
        assert len(runs) == len(set(runs)) == 4, groups[order]
    assert a.tolist() != b.tolist()


def test_matched_batches_hold_people_in_the_same_clothes_and_plain_ones_do_not():
    """`train.matched_batches` 1: every batch of an epoch is one clothing group (groups of 4, batches of 4); 0: the
    batches are slices of a shuffled order and mix the groups. Same seed, same batches."""
    from types import SimpleNamespace

    import numpy as np

    from differ_core.clip_pretrain.train import epoch_batches

    groups = np.repeat(np.arange(8), 4)[
        torch.randperm(32, generator=torch.Generator().manual_seed(1)).numpy()
    ]
    train_idx = np.arange(32)

    def batches(share: float) -> list[np.ndarray]:
        t = SimpleNamespace(matched_batches=share, batch_size=4)
        return epoch_batches(train_idx, groups, t, 8, torch.Generator().manual_seed(0))

    matched, plain = batches(1.0), batches(0.0)
    assert all(len(set(groups[b])) == 1 for b in matched)
    assert sum(len(set(groups[b])) for b in plain) > 8 * 2
    assert sorted(np.concatenate(matched).tolist()) == train_idx.tolist()
    assert [b.tolist() for b in batches(1.0)] == [b.tolist() for b in matched]


def test_identity_cross_entropy_is_an_option_that_leaves_old_fingerprints_alone(trained, tmp_path):
    """``train.id_weight`` 0 (the default) gives the fingerprint a config without the key had; > 0 is another
    pre-training whose weights differ (the identity loss takes part)."""
    cfg, a, _, _, _ = trained
    zero = load_pretrain_config(write_config(tmp_path / "zero.yaml", train__id_weight=0.0))
    assert zero.fingerprint() == cfg.fingerprint()
    ce = load_pretrain_config(write_config(tmp_path / "ce.yaml", train__id_weight=1.0))
    assert ce.fingerprint() != cfg.fingerprint()
    out = run_pretrain(ce, tmp_path / "w", log=lambda m: None)
    assert _sha(out.weights) != _sha(a.weights)
