"""DifferModel: camera embedding (token and feature level), heads, eval output, weights loading, GRL in the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from differ_common.errors import ConfigError
from differ_core.config import TrainConfig
from differ_core.model import build_model, load_backbone_weights, read_state_dict

VIT = {"backbone": "vit_tiny_patch16_224", "backbone_kwargs": {"depth": 2}, "drop_path": 0.0}


def _cfg(model=None, losses=None, size=(32, 16)) -> TrainConfig:
    d = {"data": {"img_size": list(size)}, "model": {**VIT, **(model or {})}}
    if losses is not None:
        d["losses"] = losses
    return TrainConfig.model_validate(d)


def test_vit_train_outputs_and_eval_feature():
    torch.manual_seed(0)
    m = build_model(_cfg(), num_classes=5, num_cameras=3, text_dim=8)
    x, cams = torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 2, 0])
    out = m.train()(x, cams)
    assert out["feat"].shape == (4, 192) and out["logits"].shape == (4, 5)
    assert out["bio_proj"].shape == (4, 8) and out["nb_proj"].shape == (4, 2, 8)
    assert m.nb_heads[0].proj.bias is None
    f = m.eval()(x, cams)
    assert isinstance(f, torch.Tensor) and f.shape == (4, 192)
    # f is the CLS token of the normalised last block
    bb = m.backbone
    tokens = bb.norm(bb.blocks(bb._pos_embed(bb.patch_embed(x)) + 3.0 * m.camera_embed[cams].unsqueeze(1)))
    assert torch.allclose(f, tokens[:, 0], atol=1e-5)


def test_cnn_with_a_conv_head_after_the_pooling_trains():
    """``lcnet_050`` pools 256 channels, then a conv head makes 1280: the identity feature is the 1280."""
    torch.manual_seed(0)
    m = build_model(_cfg({"backbone": "lcnet_050", "backbone_kwargs": {}}), 5, 3, 8)
    out = m.train()(torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 2, 0]))
    assert m.feat_dim == 1280 and out["feat"].shape == (4, 1280) and out["logits"].shape == (4, 5)
    assert m.eval()(torch.randn(2, 3, 32, 16), torch.tensor([0, 1])).shape == (2, 1280)


def test_vit_camera_embedding_is_token_level_and_scaled():
    torch.manual_seed(0)
    m = build_model(_cfg(), 5, 3, 8).eval()
    x = torch.randn(2, 3, 32, 16)
    a, b = m(x, torch.tensor([0, 0])), m(x, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    off = build_model(_cfg({"lambda_cam": 0.0}), 5, 3, 8).eval()
    assert off.camera_embed is None
    assert torch.allclose(off(x, torch.tensor([0, 0])), off(x, torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="camera ids"):
        m(x, torch.tensor([0, 3]))
    from differ_common.errors import DataError

    with pytest.raises(DataError, match=r"camera ids \[0, 3\] outside 0..2: .*pass 0-based camids"):
        m(x, torch.tensor([0, 3]))  # one of the project's errors: the CLI prints it as one line


def test_cnn_camera_embedding_is_feature_level():
    torch.manual_seed(0)
    cfg = _cfg({"backbone": "resnet18", "backbone_kwargs": {}, "lambda_cam": 2.0})
    m = build_model(cfg, 5, 3, 8).eval()
    assert m.kind == "generic"
    x = torch.randn(2, 3, 32, 16)
    d = m(x, torch.tensor([1, 1])) - m(x, torch.tensor([0, 0]))
    assert torch.allclose(d, 2.0 * (m.camera_embed[1] - m.camera_embed[0]).expand(2, -1), atol=1e-5)
    with pytest.raises(ConfigError, match="bio_head"):
        build_model(_cfg({"backbone": "resnet18", "backbone_kwargs": {}, "bio_head": True}), 5, 3, 8)


def test_bio_head_feeds_the_biometric_projection_only():
    torch.manual_seed(0)
    m = build_model(_cfg({"bio_head": True}), 5, 3, 8).train()
    assert torch.equal(m.head_bio.mlp.fc1.weight, m.backbone.blocks[-1].mlp.fc1.weight)  # a copy at start
    out = m(torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 2, 0]))
    out["bio_proj"].sum().backward()
    assert m.head_bio.mlp.fc1.weight.grad is not None
    assert m.backbone.blocks[-1].mlp.fc1.weight.grad is None


def test_baseline_config_builds_no_text_heads():
    m = build_model(_cfg(losses=["id", "triplet"]), 5, 3, text_dim=None)
    assert m.bio_proj is None and m.nb_heads is None
    out = m.train()(torch.randn(2, 3, 32, 16), torch.tensor([0, 1]))
    assert set(out) == {"feat", "logits"}


def test_model_gradient_reversal_flips_the_backbone_gradient_only():
    cfg = _cfg(losses=["nbdetach"])
    torch.manual_seed(0)
    m = build_model(cfg, 5, 3, 8).train()
    x, cams, texts = torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, 8)
    from differ_core.losses import nbdetach_losses

    def grads(model):
        model.zero_grad()
        out = model(x, cams)
        sum(loss for loss, _ in nbdetach_losses(out["nb_proj"], texts, 3.0)).backward()
        return model.backbone.patch_embed.proj.weight.grad.clone(), model.nb_heads[0].proj.weight.grad.clone()

    bb_rev, head_rev = grads(m)
    for h in m.nb_heads:
        h.grl = nn.Identity()
    bb_plain, head_plain = grads(m)
    assert torch.allclose(head_rev, head_plain, atol=1e-6)
    assert torch.allclose(bb_rev, -bb_plain, atol=1e-6) and bb_rev.abs().sum() > 0


def test_pretrained_weights_from_pt_and_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=(32, 16))
    sd = src.state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "w.pth")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        m = build_model(_cfg({"pretrained": str(tmp_path / name)}), 5, 3, 8)
        assert torch.equal(m.backbone.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    # a 224x224 checkpoint loads at 32x16: timm's filter resamples the position embedding
    big = timm.create_model("vit_tiny_patch16_224", num_classes=10, depth=2)
    torch.save(big.state_dict(), tmp_path / "big.pt")
    target = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=(32, 16))
    rep = load_backbone_weights(target, tmp_path / "big.pt")
    assert torch.equal(target.blocks[1].mlp.fc2.weight, big.blocks[1].mlp.fc2.weight)
    assert target.pos_embed.shape == (1, 3, 192)
    assert any(k.startswith("head") for k in rep["unexpected"])


def test_pretrained_from_a_differ_checkpoint_takes_its_backbone(tmp_path):
    torch.manual_seed(0)
    src = build_model(_cfg(), num_classes=7, num_cameras=4, text_dim=8)
    torch.save({"format": 1, "model": src.state_dict(), "epoch": 3}, tmp_path / "last.pt")
    torch.manual_seed(1)
    m = build_model(_cfg({"pretrained": str(tmp_path / "last.pt")}), num_classes=5, num_cameras=3, text_dim=8)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v), k
    # only the backbone: the new run's heads and camera embedding keep their own shapes and init
    assert m.classifier.weight.shape[0] == 5 and m.camera_embed.shape[0] == 3


def test_wrong_weights_are_refused_clearly(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r.pt")
    with pytest.raises(ConfigError, match="different architecture"):
        build_model(_cfg({"pretrained": str(tmp_path / "r.pt")}), 5, 3, 8)

    import argparse

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "evil.pt")  # an arbitrary pickled object
    with pytest.raises(ConfigError, match="objects other than tensors"):
        read_state_dict(tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="not found"):
        read_state_dict(tmp_path / "none.pt")


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown timm model"):
        build_model(_cfg({"backbone": "vit_tinyy_patch16"}), 5, 3, 8)
