"""The official-checkpoint converter on a tiny EVA02 whose keys follow the authors' eva_meta_bio.py naming."""

from __future__ import annotations

import pytest
import torch
import yaml

from differ_common.errors import DifferError
from differ_core.config import TrainConfig

CFG = {
    "data": {"dataset": "ltcc", "img_size": [28, 14]},
    "text": {"perspectives": ["biometrics", "hairstyle", "clothing"]},
    "model": {"backbone": "eva02_tiny_patch14_224", "backbone_kwargs": {"depth": 2, "global_pool": "token"},
              "drop_path": 0.0},
}  # fmt: skip


def _official_from(ours: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """The authors' layout, written key by key: last block = head_bio, final norm = norm_bio, [C, 1, F] cameras."""
    off: dict[str, torch.Tensor] = {}
    last = f"backbone.blocks.{depth - 1}."
    for k, v in ours.items():
        if k.startswith(last):
            off["head_bio." + k[len(last) :]] = v.clone()
        elif k.startswith("backbone.norm."):
            off["norm_bio." + k[len("backbone.norm.") :]] = v.clone()
        elif k.startswith("backbone."):
            off[k[len("backbone.") :]] = v.clone()
        elif k == "camera_embed":
            off["camera_embed"] = v.clone().unsqueeze(1)
        elif k.startswith("classifier."):
            off["head." + k.split(".")[-1]] = v.clone()
        elif k.startswith("bio_proj."):
            off["head_clip_bio." + k.split(".")[-1]] = v.clone()
        elif k.startswith("nb_heads."):
            off[f"head_clip_bioReverse.{k.split('.')[1]}.head_fc.weight"] = v.clone()
        else:
            raise AssertionError(f"unexpected key {k}")
    off["head_clip_nonbio.0.weight"] = torch.zeros(8, 192)  # a tensor we have no use for
    return off


def test_official_keys_load_into_our_model(tmp_path):
    from differ_core.convert_official import convert_checkpoint
    from differ_core.model import build_model, load_model_for_inference

    torch.manual_seed(0)
    ref = build_model(TrainConfig.model_validate(CFG), num_classes=7, num_cameras=4, text_dim=8).eval()
    official = _official_from(ref.state_dict(), depth=2)
    assert {"head_bio.norm1.weight", "norm_bio.weight", "blocks.0.norm1.weight", "camera_embed",
            "head.weight", "head_clip_bio.weight", "head_clip_bioReverse.1.head_fc.weight"} <= set(official)  # fmt: skip
    assert not any(k.startswith("blocks.1.") for k in official)
    torch.save({"module." + k: v for k, v in official.items()}, tmp_path / "official.pth")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CFG))
    torch.manual_seed(1)  # the converted model starts from other random weights
    rep = convert_checkpoint(tmp_path / "official.pth", tmp_path / "cfg.yaml", tmp_path / "ours.pt")
    assert rep["num_classes"] == 7 and rep["num_cameras"] == 4 and rep["text_dim"] == 8
    assert rep["unused"] == ["head_clip_nonbio.0.weight"] and rep["missing"] == []
    model, cfg, info = load_model_for_inference(tmp_path / "ours.pt")
    x, cams = torch.randn(3, 3, 28, 14), torch.tensor([0, 3, 1])
    assert torch.allclose(model(x, cams), ref(x, cams), atol=1e-5)
    model.train(), ref.train()
    a, b = model(x, cams), ref(x, cams)
    for key in ("logits", "bio_proj", "nb_proj"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_mismatched_config_is_refused(tmp_path):
    from differ_core.convert_official import convert_checkpoint
    from differ_core.model import build_model

    ref = build_model(TrainConfig.model_validate(CFG), 7, 4, 8)
    torch.save(_official_from(ref.state_dict(), 2), tmp_path / "official.pth")
    one = {**CFG, "text": {"perspectives": ["biometrics", "clothing"]}}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one))
    with pytest.raises(DifferError, match="2 NBDetach branches"):
        convert_checkpoint(tmp_path / "official.pth", tmp_path / "one.yaml", tmp_path / "x.pt")
    wide = {**CFG, "model": {**CFG["model"], "backbone": "eva02_small_patch14_224"}}
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(wide))
    with pytest.raises(DifferError, match="shape"):
        convert_checkpoint(tmp_path / "official.pth", tmp_path / "wide.yaml", tmp_path / "x.pt")
