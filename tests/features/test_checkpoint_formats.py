"""The text encoder and the EVA02 backbone load the files users download: each layout built locally with random
weights, features equal to loading the same weights through open_clip / timm / transformers directly; a file of
the wrong layout or architecture is one line naming the expected and the found."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clip_formats import RELEASES, register_tiny_trunk, save_torchscript, tiny_eva_clip
from feature_tiny_models import CORPUS, build_tiny_open_clip

from captions.features.clip_checkpoints import checkpoint_layout, read_checkpoint
from captions.features.encoders import load_encoder
from differ_common.errors import ConfigError


def _open_clip_direct(arch: str, ckpt, texts: list[str]) -> np.ndarray:
    """The reference: open_clip's own loader on an open_clip-layout file, its own tokenizer."""
    import open_clip

    model = open_clip.create_model(arch, pretrained=str(ckpt)).eval()
    with torch.inference_mode():
        vec = model.encode_text(open_clip.get_tokenizer(arch)(texts))
    return torch.nn.functional.normalize(vec.float(), dim=-1).numpy()


@pytest.mark.parametrize("release", list(RELEASES))
def test_baai_eva_clip_release_loads_like_open_clip(release, tmp_path):
    cfg, open_clip_file, baai_file = tiny_eva_clip(release, tmp_path)
    sd, scripted = read_checkpoint(baai_file)
    assert checkpoint_layout(sd, scripted) == "eva-clip" and any(k.startswith("visual.blocks.") for k in sd)
    ours = load_encoder(f"open_clip:{cfg}@{baai_file}", device="cpu").encode(CORPUS)
    np.testing.assert_allclose(ours, _open_clip_direct(cfg.stem, open_clip_file, CORPUS), atol=1e-5)


def test_classic_text_keys_load_into_a_custom_text_architecture(tmp_path):
    """An EVA02-CLIP file whose text tower is saved in the classic top-level layout (older open_clip files)."""
    cfg, open_clip_file, _ = tiny_eva_clip("EVA02-CLIP-L-14", tmp_path)
    sd = torch.load(open_clip_file, weights_only=True)
    classic = {k.removeprefix("text."): v for k, v in sd.items()}
    assert "token_embedding.weight" in classic and "text.token_embedding.weight" not in classic
    torch.save(classic, tmp_path / "classic.pt")
    ours = load_encoder(f"open_clip:{cfg}@{tmp_path / 'classic.pt'}", device="cpu").encode(CORPUS)
    np.testing.assert_allclose(ours, _open_clip_direct(cfg.stem, open_clip_file, CORPUS), atol=1e-5)


def test_open_clip_hub_folder_loads_like_open_clip(tmp_path):
    """A hub copy: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    cfg, open_clip_file, _ = tiny_eva_clip("EVA02-CLIP-B-16", tmp_path / "src")
    hub = tmp_path / "hub"
    hub.mkdir()
    model_cfg = json.loads(cfg.read_text())
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    sd = torch.load(open_clip_file, weights_only=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(hub / "open_clip_model.safetensors"))
    assert checkpoint_layout(read_checkpoint(hub / "open_clip_model.safetensors")[0]) == "open_clip"
    ours = load_encoder(f"open_clip:{hub}", device="cpu").encode(CORPUS)
    np.testing.assert_allclose(ours, _open_clip_direct(cfg.stem, open_clip_file, CORPUS), atol=1e-5)
    # the same weights file given as a checkpoint of the named architecture
    again = load_encoder(f"open_clip:{cfg}@{hub / 'open_clip_model.safetensors'}", device="cpu").encode(
        CORPUS
    )
    np.testing.assert_allclose(again, ours, atol=1e-6)


def test_openai_torchscript_clip_loads_like_open_clip(tmp_path):
    cfg, plain = build_tiny_open_clip(tmp_path, arch="tiny-openai-clip")
    sd = torch.load(plain, weights_only=True)
    assert "token_embedding.weight" in sd and "visual.conv1.weight" in sd  # the classic (OpenAI) key layout
    jit = save_torchscript(sd, tmp_path / "ViT-tiny.pt")
    got, scripted = read_checkpoint(jit)
    assert scripted and checkpoint_layout(got, scripted) == "openai" and set(got) == set(sd)
    ours = load_encoder(f"open_clip:{cfg}@{jit}", device="cpu").encode(CORPUS)
    np.testing.assert_allclose(ours, _open_clip_direct(cfg.stem, plain, CORPUS), atol=1e-5)


def test_transformers_clipmodel_folder_loads_like_transformers(tmp_path):
    from feature_tiny_models import _tokenizer
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path / "clip-hf"
    tok = _tokenizer()
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 16}  # fmt: skip
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert checkpoint_layout(read_checkpoint(folder / "model.safetensors")[0]) == "transformers"
    ours = load_encoder(f"hf-clip:{folder}", device="cpu").encode(CORPUS)
    enc = tok(CORPUS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    ref = getattr(ref, "pooler_output", ref)
    np.testing.assert_allclose(ours, torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5)
    # the same file given to open_clip: one line pointing to hf-clip
    cfg, _ = build_tiny_open_clip(tmp_path / "oc")
    with pytest.raises(ConfigError, match="transformers CLIPModel checkpoint .* hf-clip:") as err:
        load_encoder(f"open_clip:{cfg}@{folder / 'model.safetensors'}", device="cpu")
    assert "\n" not in str(err.value)


def test_wrong_architecture_or_layout_is_one_line_naming_expected_and_found(tmp_path):
    cfg_b, _, baai_b = tiny_eva_clip("EVA02-CLIP-B-16", tmp_path / "b", width=32)
    cfg_wide, _, _ = tiny_eva_clip("EVA02-CLIP-L-14", tmp_path / "l", width=48)
    with pytest.raises(ConfigError) as err:
        load_encoder(f"open_clip:{cfg_wide}@{baai_b}", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "expects text tensor" in msg and "eva-clip file has" in msg
    assert "of shape (16, 48)" in msg and "has (16, 32)" in msg  # the expected and the found shapes
    # a vision-only (timm backbone) file given as a text encoder
    import timm

    trunk = timm.create_model(register_tiny_trunk("eva02_large_patch14_clip_224"), num_classes=0, img_size=28)
    torch.save(trunk.state_dict(), tmp_path / "eva02_backbone.pt")
    with pytest.raises(ConfigError, match="a vision tower alone") as err:
        load_encoder(f"open_clip:{cfg_b}@{tmp_path / 'eva02_backbone.pt'}", device="cpu")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the EVA02 image backbone


def _backbone(seed: int):
    import timm

    torch.manual_seed(seed)
    name = register_tiny_trunk("eva02_large_patch14_clip_224")
    return timm.create_model(name, num_classes=0, img_size=28).eval()


@pytest.mark.parametrize("layout", ["timm", "open_clip", "eva-clip"])
def test_eva02_backbone_loads_each_layout_like_timm(layout, tmp_path):
    from safetensors.torch import save_file

    from differ_core.model import load_backbone_weights

    src = _backbone(seed=1)
    sd = {k: v.clone().contiguous() for k, v in src.state_dict().items()}
    if layout == "timm":
        path = tmp_path / "model.safetensors"
        save_file(sd, str(path))
    else:  # a full CLIP file: visual tower + a text tower the backbone ignores
        from clip_formats import to_baai_layout

        clip = {f"visual.trunk.{k}": v for k, v in sd.items()}
        clip["visual.trunk.head.weight"] = torch.randn(16, 32)  # the CLIP projection head
        clip.update({"text.token_embedding.weight": torch.randn(10, 8), "logit_scale": torch.ones(())})
        if layout == "eva-clip":
            clip = to_baai_layout(clip)
        path = tmp_path / (
            "open_clip_model.safetensors" if layout == "open_clip" else "EVA02_CLIP_L_psz14_s4B.pt"
        )
        if layout == "open_clip":
            save_file(clip, str(path))
        else:
            torch.save(clip, path)
    dst = _backbone(seed=2)
    x = torch.randn(2, 3, 28, 28)
    with torch.inference_mode():
        before = dst(x)
    info = load_backbone_weights(dst, path)
    assert not info["missing"]
    with torch.inference_mode():
        assert not torch.allclose(before, src(x))
        torch.testing.assert_close(dst(x), src(x), atol=1e-5, rtol=1e-5)


def test_backbone_of_another_architecture_is_one_line(tmp_path):
    import timm

    from differ_core.model import load_backbone_weights

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    with pytest.raises(ConfigError, match="backbone tensors match Eva") as err:
        load_backbone_weights(_backbone(0), tmp_path / "vit.pt")
    assert "\n" not in str(err.value)
