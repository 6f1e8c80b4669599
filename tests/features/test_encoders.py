"""Every encoder spec loads offline from disk; unresolvable specs fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest
from feature_tiny_models import CORPUS, build_tiny_hf_clip, build_tiny_open_clip

from captions.features.encoders import encoder_fingerprint, load_encoder, minilm_dir, parse_spec
from differ_common.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-encoders")


@pytest.fixture(scope="module")
def tiny_open_clip(tiny_dir):
    return build_tiny_open_clip(tiny_dir / "oc")


def test_minilm_is_the_real_model_and_matches_sentence_transformers(minilm):
    assert minilm.dim == 384 and minilm.spec == "minilm"
    v = minilm.encode(CORPUS + ["A man with short dark hair.", "A person with short black hair."])
    assert v.dtype == np.float32 and v.shape == (len(CORPUS) + 2, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # a real sentence encoder: paraphrases are closer than unrelated sentences
    assert v[-1] @ v[-2] > v[-1] @ v[1] + 0.2
    st = load_encoder(f"sentence-transformers:{minilm_dir()}", device="cpu")
    assert st.dim == 384
    np.testing.assert_allclose(st.encode(CORPUS), v[: len(CORPUS)], atol=1e-5)


def test_batching_and_order_do_not_change_vectors(minilm):
    texts = [CORPUS[i % len(CORPUS)] * (1 + i % 3) for i in range(11)]
    a = minilm.encode(texts, batch_size=1)
    b = minilm.encode(texts, batch_size=4)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_tiny_open_clip_loads_its_checkpoint(tiny_open_clip):
    import open_clip
    import torch

    cfg, ckpt = tiny_open_clip
    enc = load_encoder(f"open_clip:{cfg}@{ckpt}", device="cpu")
    assert enc.dim == 16
    ref_model = open_clip.create_model(cfg.stem, pretrained=str(ckpt)).eval()
    with torch.no_grad():
        ref = ref_model.encode_text(open_clip.get_tokenizer(cfg.stem)(CORPUS))
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    got = enc.encode(CORPUS)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # the arch name alone works when <arch>.json lies beside the checkpoint
    again = load_encoder(f"open_clip:{cfg.stem}@{ckpt}", device="cpu")
    np.testing.assert_allclose(again.encode(CORPUS), got, atol=1e-6)
    assert enc.model.visual is None  # text tower only


def test_tiny_hf_clip_loads_from_disk(tiny_dir):
    import torch
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    folder = build_tiny_hf_clip(tiny_dir / "hf")
    enc = load_encoder(f"hf-clip:{folder}", device="cpu")
    assert enc.dim == 12
    got = enc.encode(CORPUS, batch_size=2)
    model = CLIPTextModelWithProjection.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        ref = [model(**tok([t], return_tensors="pt")).text_embeds[0] for t in CORPUS]
    ref = torch.nn.functional.normalize(torch.stack(ref), dim=-1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def _bad_specs(tiny_dir, ckpt):
    hub_cfg, _ = build_tiny_open_clip(
        tiny_dir / "hub", arch="tiny-hub-tok", text_cfg_extra={"hf_tokenizer_name": "someorg/some-tokenizer"}
    )
    return [
        ("open_clip:NoSuchArch-B-99@" + str(ckpt), "unknown open_clip architecture"),
        ("open_clip:ViT-B-32@/nonexistent/weights.pt", "/nonexistent/weights.pt not found"),
        ("open_clip:ViT-B-32", "random weights"),
        ("open_clip:ViT-B-32@laion2b_s34b_b79k", "download tag"),
        (f"open_clip:{hub_cfg}@{ckpt}", "someorg/some-tokenizer"),
        ("open_clip:ViT-B-16-SigLIP@" + str(ckpt), "timm/ViT-B-16-SigLIP"),
        ("open_clip:/nonexistent/arch.json@" + str(ckpt), "/nonexistent/arch.json not found"),
        ("hf-clip:/nonexistent/clip", "/nonexistent/clip"),
        (f"hf-clip:{tiny_dir / 'hub'}", "config.json"),
        ("sentence-transformers:/nonexistent/st", "/nonexistent/st not found"),
        ("bert:/x", "unknown text encoder 'bert'; use hf-clip:<dir> | minilm"),
        ("", "unknown text encoder ''"),
    ]


def test_bad_specs_fail_with_one_clear_line(tiny_dir, tiny_open_clip):
    _, ckpt = tiny_open_clip
    for spec, needle in _bad_specs(tiny_dir, ckpt):
        with pytest.raises(ConfigError) as info:
            load_encoder(spec, device="cpu")
        msg = str(info.value)
        assert needle in msg, (spec, msg)
        assert "\n" not in msg, (spec, msg)


def test_fingerprint_is_cheap_and_tracks_files(tiny_open_clip, tmp_path):
    cfg, ckpt = tiny_open_clip
    spec = f"open_clip:{cfg}@{ckpt}"
    assert encoder_fingerprint(spec) == encoder_fingerprint(spec)
    copy = tmp_path / "w.pt"
    copy.write_bytes(ckpt.read_bytes() + b"x")
    assert encoder_fingerprint(f"open_clip:{cfg}@{copy}") != encoder_fingerprint(spec)
    assert parse_spec("minilm") == ("minilm", "")
    assert parse_spec("hf-clip:/a/b") == ("hf-clip", "/a/b")
