"""The hf:<dir> backend on a tiny LLaVA saved to disk, loaded through the same path as a real checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from caption_helpers import make_workspace, short_prompts
from PIL import Image

from captions import caption_dataset, read_current_captions
from captions.backends import make_captioner, model_dir_fingerprint
from captions.backends.hf import HFCaptioner
from captions.prompts import load_prompts
from differ_common.errors import ConfigError, DifferError
from differ_common.perspectives import PERSPECTIVES

# short answers keep the random-weight model fast (it never stops early); the prompts are the real ones
SPECS = {p: replace(s, max_new_tokens=5) for p, s in load_prompts().items()}


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (16 + 6 * i, 40 - 2 * i), ((50 * i) % 256, 120, 30 * i % 256)) for i in range(n)]


def test_batched_left_padded_generation_matches_one_by_one(tiny_llava):
    cap = make_captioner(f"hf:{tiny_llava}")
    assert isinstance(cap, HFCaptioner) and cap.name == f"hf:{tiny_llava.name}" and cap.needs_images
    processor, model = cap.load()
    assert processor.tokenizer.padding_side == "left" and not model.training
    assert str(model.device) == "cpu" and str(model.dtype) == "torch.float32"
    images = _images(4)
    for p in ("hairstyle", "biometrics"):
        batched = cap.caption(images, SPECS[p])
        single = [cap.caption([im], SPECS[p])[0] for im in images]
        assert batched == single
        assert all(isinstance(t, str) and t and t == t.strip() and "\n" not in t for t in batched)
    # prompts of different lengths in one batch need real left padding: check the processor output
    conv = [
        [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": t}]}]
        for im, t in zip(images[:2], ("Hair?", "Describe the clothing in detail please."), strict=True)
    ]
    kw = {"add_generation_prompt": True, "tokenize": True, "return_dict": True, "return_tensors": "pt"}
    enc = processor.apply_chat_template(conv, processor_kwargs={"padding": True}, **kw)
    assert enc["attention_mask"][0][0] == 0 and enc["attention_mask"][0][-1] == 1
    # the padded batch predicts the same next token distribution as each conversation alone
    import torch

    with torch.inference_mode():
        batched_logits = model(**enc).logits[:, -1]
        alone = torch.cat([model(**processor.apply_chat_template([c], **kw)).logits[:, -1] for c in conv])
    assert torch.allclose(batched_logits, alone, atol=1e-4)


def test_half_precision_path_casts_pixels_to_the_model_dtype(tiny_llava):
    cap = HFCaptioner(str(tiny_llava), dtype="bfloat16")  # what a GPU gets; runs on the CPU too
    _, model = cap.load()
    assert str(model.dtype) == "torch.bfloat16"
    out = cap.caption(_images(2), SPECS["interaction"])
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    HFCaptioner(str(tiny_llava)).load()  # back to the fp32 model for the other tests


def test_chat_template_puts_the_image_before_the_question(tiny_llava):
    processor, _ = HFCaptioner(str(tiny_llava)).load()
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": SPECS["pose"].prompt}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    assert text.index("<image>") < text.index(SPECS["pose"].prompt[:20])


def test_out_of_memory_halves_the_batch(tiny_llava, monkeypatch):
    import torch

    cap = HFCaptioner(str(tiny_llava))
    images = _images(4)
    expected = cap.caption(images, SPECS["pose"])
    real = cap._generate
    sizes = []

    def oom_above_one(batch, spec):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch, spec)

    monkeypatch.setattr(cap, "_generate", oom_above_one)
    assert cap.caption(images, SPECS["pose"]) == expected
    assert sizes == [4, 2, 1, 1, 1, 1] and cap.max_batch == 1  # the smaller size is kept
    cap.max_batch = 0

    def always_oom(batch, spec):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(cap, "_generate", always_oom)
    with pytest.raises(DifferError, match="out of memory on a single image"):
        cap.caption(images[:2], SPECS["pose"])


def test_caption_dataset_end_to_end_with_the_tiny_llava(tiny_llava, tmp_path):
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=2, dataset="ltcc")
    spec = f"hf:{tiny_llava}"
    prompts = short_prompts(tmp_path)
    r = caption_dataset(w, "ltcc", captioner=spec, batch_size=4, prompts=prompts)
    assert r.generated == dict.fromkeys(PERSPECTIVES, 4) and r.captioner == f"hf:{tiny_llava.name}"
    df = pd.read_parquet(w / "captions" / "ltcc")
    assert len(df) == 24 and df["caption"].map(lambda t: isinstance(t, str)).all()
    assert set(df["model_fingerprint"]) == {model_dir_fingerprint(tiny_llava)}
    assert caption_dataset(w, "ltcc", captioner=spec, prompts=prompts).generated == dict.fromkeys(
        PERSPECTIVES, 0
    )
    cur = read_current_captions(w, "ltcc", ["clothing"])
    assert len(cur) == 4
    current = json.loads((w / "captions" / "ltcc" / "_current.json").read_text())
    assert current["clothing"]["captioner"] == f"hf:{tiny_llava.name}"


def test_model_folder_errors_are_one_line_before_any_work(tiny_lm, tmp_path):
    with pytest.raises(ConfigError, match="model folder not found") as err:
        make_captioner(f"hf:{tmp_path / 'missing'}")
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        make_captioner(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="not an image-text-to-text model"):
        make_captioner(f"hf:{tiny_lm}")
    with pytest.raises(ConfigError, match="needs an argument: hf:<local VLM dir>"):
        make_captioner("hf:")


def test_vllm_is_optional_with_a_clear_error(tiny_llava):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(DifferError, match=r'pip install -e "\.\[vllm\]"'):
            make_captioner(f"vllm:{tiny_llava}")
    else:  # pragma: no cover - only where vLLM is installed
        assert make_captioner(f"vllm:{tiny_llava}").name == f"vllm:{tiny_llava.name}"


def test_fingerprint_identifies_weights_without_loading(tiny_llava, tmp_path):
    import shutil

    copy = tmp_path / tiny_llava.name
    shutil.copytree(tiny_llava, copy)
    assert model_dir_fingerprint(copy) == model_dir_fingerprint(tiny_llava)
    cfg = json.loads((copy / "generation_config.json").read_text())
    cfg["max_length"] = 77
    (copy / "generation_config.json").write_text(json.dumps(cfg))
    assert model_dir_fingerprint(copy) != model_dir_fingerprint(tiny_llava)


def test_vllm_backend_request_shape_with_a_stand_in_engine(tiny_llava, monkeypatch):
    """Without vLLM installed, a stand-in ``vllm`` module records what the backend asks the engine for."""
    import importlib.machinery
    import sys
    import types

    if "vllm" in sys.modules or __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("the real vLLM is installed")
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            calls["sampling"] = kw

    class Out:
        def __init__(self, text):
            self.outputs = [types.SimpleNamespace(text=text)]

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def generate(self, requests, params, use_tqdm=False):
            calls["requests"] = requests
            return [Out(f"  answer {i}\nsecond line ") for i in range(len(requests))]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from captions.backends.vllm import _CACHE

    monkeypatch.setattr("captions.backends.vllm._CACHE", {})
    cap = make_captioner(f"vllm:{tiny_llava}")
    images = _images(3)
    assert cap.caption(images, SPECS["pose"]) == [
        "answer 0 second line",
        "answer 1 second line",
        "answer 2 second line",
    ]
    assert calls["engine"]["enable_prefix_caching"] is True and calls["engine"]["model"] == str(tiny_llava)
    assert calls["engine"]["trust_remote_code"] is False
    assert calls["sampling"]["temperature"] == 0.0 and calls["sampling"]["max_tokens"] == 5
    prompt = calls["requests"][0]["prompt"]
    assert prompt.index("<image>") < prompt.index(SPECS["pose"].prompt[:20])
    assert [r["multi_modal_data"]["image"] for r in calls["requests"]] == images
    assert len({r["prompt"] for r in calls["requests"]}) == 1  # one prompt per batch: a shared prefix
    assert not _CACHE


def test_captioner_name_without_building_matches_the_backend(tiny_llava, tmp_path):
    from captions.backends import captioner_name

    link = tmp_path / "current-vlm"
    link.symlink_to(tiny_llava, target_is_directory=True)  # a symlinked model folder names the target
    for spec in (f"hf:{tiny_llava}", f"hf:{link}"):
        assert captioner_name(spec) == make_captioner(spec).name == f"hf:{tiny_llava.name}"
    assert captioner_name("attributes", noise=0.2) == "attributes:noise=0.2"
    assert captioner_name("attributes", noise=0.0, seed=3) == "attributes:noise=0,seed=3"
