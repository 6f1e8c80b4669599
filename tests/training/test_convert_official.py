"""The official-checkpoint converter on a tiny EVA02 whose keys follow the authors' eva_meta_bio.py naming."""

from __future__ import annotations

import pytest
import torch
import yaml

from differ_common.errors import DifferError
from differ_core.config import TrainConfig

from .official_differ import OFFICIAL_RELEASES, OfficialEvaBio, ddp_state_dict, official_keys

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


# ---------------------------------------------------------------- the authors' own layout (official_differ.py)
def _release_cfg(ds: str, rel: dict, **model) -> dict:
    """Our YAML for a released config at the re-statement's tiny width (their EVA02-L-CLIP block flags)."""
    return {
        "data": {"dataset": ds, "img_size": [28, 14]},
        "text": {"perspectives": ["biometrics", *rel["non_bio"]]},
        "model": {"backbone": "eva02_large_patch14_clip_224", "drop_path": 0.0, "lambda_cam": rel["camera_xishu"],
                  "backbone_kwargs": {"embed_dim": 32, "depth": 3, "num_heads": 2}, **model},
    }  # fmt: skip


def _convert(tmp_path, official: dict[str, torch.Tensor], cfg: dict):
    from differ_core.convert_official import convert_checkpoint
    from differ_core.model import load_model_for_inference

    torch.save(official, tmp_path / "eva02_l_bio_best.pth")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rep = convert_checkpoint(tmp_path / "eva02_l_bio_best.pth", tmp_path / "cfg.yaml", tmp_path / "ours.pt")
    return rep, load_model_for_inference(tmp_path / "ours.pt")[0]


@pytest.mark.parametrize("ds", list(OFFICIAL_RELEASES))
def test_released_config_converts_to_their_forward(tmp_path, ds):
    rel = OFFICIAL_RELEASES[ds]
    k = len(rel["non_bio"])
    torch.manual_seed(0)
    theirs = OfficialEvaBio(
        rel["num_classes"], rel["num_cameras"], rel["clip_dim"], k, rel["camera_xishu"], rel["last_layer"]
    ).eval()
    assert list(theirs.state_dict()) == official_keys(
        3, k, rel["last_layer"]
    )  # the re-statement = the transcript
    official = ddp_state_dict(theirs)
    torch.manual_seed(1)
    rep, ours = _convert(tmp_path, official, _release_cfg(ds, rel))
    assert (rep["num_classes"], rep["num_cameras"], rep["text_dim"], rep["num_nonbio"]) == (
        rel["num_classes"], rel["num_cameras"], rel["clip_dim"], k)  # fmt: skip
    assert rep["unused"] == [] and rep["missing"] == []
    x, cams = torch.randn(3, 3, 28, 14), torch.arange(3) % rel["num_cameras"]
    with torch.no_grad():
        torch.testing.assert_close(ours(x, cams), theirs(x, cams), atol=1e-5, rtol=1e-4)
        ours.train(), theirs.train()
        a, b = ours(x, cams), theirs(x, cams)
    for mine, their in (
        ("logits", "cls_score"),
        ("bio_proj", "clip_bio_score"),
        ("nb_proj", "clip_bio_reverse_score"),
    ):
        torch.testing.assert_close(a[mine], b[their], atol=1e-5, rtol=1e-4, msg=f"{mine} != their {their}")


def test_a_reverse_head_bias_is_reported_and_the_feature_unchanged(tmp_path):
    """Their published head_fc is bias-free; a checkpoint carrying ``head_fc.bias`` converts, the bias reported."""
    rel = OFFICIAL_RELEASES["ltcc"]
    torch.manual_seed(0)
    theirs = OfficialEvaBio(
        rel["num_classes"], rel["num_cameras"], rel["clip_dim"], 2, reverse_bias=True
    ).eval()
    rep, ours = _convert(tmp_path, ddp_state_dict(theirs), _release_cfg("ltcc", rel))
    assert (
        rep["unused"] == [f"head_clip_bioReverse.{i}.head_fc.bias" for i in (0, 1)] and rep["missing"] == []
    )
    x, cams = torch.randn(2, 3, 28, 14), torch.tensor([0, 11])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, cams), theirs(x, cams), atol=1e-5, rtol=1e-4)
        ours.train(), theirs.train()
        bias = torch.stack([h.head_fc.bias for h in theirs.head_clip_bioReverse])
        torch.testing.assert_close(ours(x, cams)["nb_proj"] + bias, theirs(x, cams)["clip_bio_reverse_score"])


def test_their_baseline_layout_converts(tmp_path):
    """LAST_LAYER='transformer' (train.py without clipBio + clipBioReverse): all blocks in blocks.*, final norm.*."""
    rel = {**OFFICIAL_RELEASES["ltcc"], "non_bio": []}
    torch.manual_seed(0)
    theirs = OfficialEvaBio(rel["num_classes"], rel["num_cameras"], 0, 0, last_layer="transformer").eval()
    assert list(theirs.state_dict()) == official_keys(3, 0, "transformer")
    cfg = {**_release_cfg("ltcc", rel), "losses": {"use": ["id", "triplet"]}}
    rep, ours = _convert(tmp_path, ddp_state_dict(theirs), cfg)
    assert rep["unused"] == [] and rep["missing"] == [] and rep["text_dim"] is None
    x, cams = torch.randn(2, 3, 28, 14), torch.tensor([3, 5])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, cams), theirs(x, cams), atol=1e-5, rtol=1e-4)
        ours.train(), theirs.train()
        torch.testing.assert_close(
            ours(x, cams)["logits"], theirs(x, cams)["cls_score"], atol=1e-5, rtol=1e-4
        )
