"""The VLM family matrix: every family of ``captions.vlm_families.FAMILIES`` built tiny from its own config and
processor classes with its checkpoints' chat template, saved, and captioned through ``differ caption``; the
refused ones refused before any work; docs/captioners.md rendered from the same table."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from caption_helpers import make_workspace, short_prompts
from PIL import Image

from captions.backends import make_captioner
from captions.backends.hf import HFCaptioner
from captions.backends.prefix import PREFIX_FAMILIES
from captions.prompts import load_prompts
from captions.tiny_vlms import BUILDERS, build_tiny_vlm
from captions.vlm_families import FAMILIES
from differ_common.errors import ConfigError
from differ_common.perspectives import PERSPECTIVES
from flows.cli import main

ROOT = Path(__file__).resolve().parents[2]
ISSUE_FAMILIES = {
    "llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm",
    "gemma3", "mllama", "internvl", "paligemma", "mistral3", "glm4v", "cogvlm",
}  # fmt: skip
WORKING = [f for f, fam in FAMILIES.items() if not fam.refused]
SPECS = {p: replace(s, max_new_tokens=5) for p, s in load_prompts().items()}


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """family -> its tiny model folder, built once per session on first use."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_vlm(family, root / f"tiny-{family}")
        return built[family]

    return get


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + 6 * i, 24 + 10 * i, 3), dtype=np.uint8)) for i in range(n)
    ]


def test_the_matrix_lists_every_family_the_issue_names_and_builds_each_working_one():
    assert ISSUE_FAMILIES <= set(FAMILIES)
    assert set(WORKING) <= set(BUILDERS)
    for fam in FAMILIES.values():
        assert bool(fam.refused) != bool(fam.placeholder), (
            fam.model_type
        )  # works with a placeholder, or refused


def test_docs_matrix_is_generated_from_the_table():
    script = ROOT / "scripts" / "captioner_matrix.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = (ROOT / "docs" / "captioners.md").read_text()
    for f in FAMILIES.values():
        assert f"| {f.model_type} | {'refused' if f.refused else 'works'} |" in doc


@pytest.mark.parametrize("family", WORKING)
def test_family_captions_through_differ_caption(family, family_dir, tmp_path, capsys):
    """Rows written for every perspective, no prompt echoed, the image placeholder in the rendered prompt."""
    model = family_dir(family)
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=2, dataset="ltcc")
    argv = ["caption", "--workdir", str(w), "--dataset", "ltcc", "--captioner", f"hf:{model}"]
    assert main([*argv, "--prompts", str(short_prompts(tmp_path)), "--batch-size", "3"]) == 0, (
        capsys.readouterr()
    )
    df = pd.read_parquet(w / "captions" / "ltcc")
    assert len(df) == 4 * len(PERSPECTIVES) and set(df["perspective"]) == set(PERSPECTIVES)
    assert (df["error"] == "").all() and (df["flag"] != "echo").all()
    for prompt, caption in zip(df["prompt"], df["caption"], strict=True):
        assert prompt[:24] not in caption
    processor, _ = HFCaptioner(str(model)).load()
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": SPECS["pose"].prompt}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    placeholder = FAMILIES[family].placeholder
    assert text.count(placeholder) == 1 and text.index(placeholder) < text.index(SPECS["pose"].prompt[:20])


@pytest.mark.parametrize("family", WORKING)
def test_family_batched_greedy_equals_per_image_with_left_padding(family, family_dir):
    cap = HFCaptioner(str(family_dir(family)))
    processor, model = cap.load()
    assert processor.tokenizer.padding_side == "left" and str(model.dtype) == "torch.float32"
    images = _images(3)
    batched = cap.caption(images, SPECS["pose"])
    assert batched == [cap.caption([im], SPECS["pose"])[0] for im in images]
    assert all(isinstance(t, str) and "\n" not in t for t in batched)
    # prompts of different lengths in one batch: the short one is padded on the left, never on the right
    conv = [
        [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": t}]}]
        for im, t in zip(
            images[:2], ("Hair?", "Describe the clothing, the shoes and the bag in detail."), strict=True
        )
    ]
    enc = processor.apply_chat_template(
        conv, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"padding": True},
    )  # fmt: skip
    mask = enc["attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0]


@pytest.mark.parametrize("family", WORKING)
def test_family_half_precision_on_the_code_path(family, family_dir):
    import torch

    for dtype in ("bfloat16", "float16"):
        cap = HFCaptioner(str(family_dir(family)), dtype=dtype)
        _, model = cap.load()
        assert model.dtype == getattr(torch, dtype)
        out = cap.caption(_images(2), SPECS["interaction"])
        assert len(out) == 2 and all(isinstance(t, str) for t in out)


@pytest.mark.parametrize("family", WORKING)
def test_family_shared_image_prefix_gives_the_recomputed_captions(family, family_dir):
    """caption_chunk (an image's prefix once for all perspectives) == one perspective at a time."""
    cap = HFCaptioner(str(family_dir(family)))
    images, ids = _images(3, seed=1), ["a", "b", "c"]
    wanted = {p: ids for p in PERSPECTIVES}
    wanted["pose"] = ["c", "a"]  # a perspective pending for some images only
    specs = {**SPECS, "environment": replace(SPECS["environment"], max_new_tokens=3)}  # two generate groups
    recomputed = {p: cap.caption([images[ids.index(i)] for i in wanted[p]], specs[p]) for p in PERSPECTIVES}
    assert cap.caption_chunk(images, specs, ids, wanted, batch_size=3) == recomputed
    shared = cap._prefix_batch(images, SPECS, {p: [0, 1, 2] for p in PERSPECTIVES})
    assert (shared is not None) == (family in PREFIX_FAMILIES)
    if shared is not None:
        assert shared == {p: cap.caption(images, SPECS[p]) for p in PERSPECTIVES}
        assert len({t for texts in shared.values() for t in texts}) > 1  # the outputs depend on their inputs


def _vllm_stand_in(monkeypatch):
    """A stand-in ``vllm`` module that records what the backend hands the engine."""
    import importlib.machinery
    import types

    calls: dict = {}

    class SamplingParams:
        def __init__(self, **kw):
            calls["sampling"] = kw

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def generate(self, requests, params, use_tqdm=False):
            calls["requests"] = requests
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"a{i}")])
                for i in range(len(requests))
            ]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr("captions.backends.vllm._CACHE", {})
    return calls


@pytest.mark.parametrize("family", WORKING)
def test_family_vllm_requests_carry_the_templates_placeholder_once(family, family_dir, monkeypatch):
    if __import__("importlib").util.find_spec("vllm") is not None and "vllm" not in sys.modules:
        pytest.skip("the real vLLM is installed")
    calls = _vllm_stand_in(monkeypatch)
    model = family_dir(family)
    cap = make_captioner(f"vllm:{model}")
    images, ids = _images(2), ["a", "b"]
    out = cap.caption_chunk(images, SPECS, ids, {p: ids for p in PERSPECTIVES})
    assert all(len(v) == 2 for v in out.values())
    reqs = calls["requests"]
    assert [r["multi_modal_data"]["image"] for r in reqs] == [im for im in images for _ in PERSPECTIVES]
    placeholder = FAMILIES[family].placeholder
    tok = HFCaptioner(str(model)).load()[0].tokenizer
    for r, p in zip(reqs, [p for _ in images for p in PERSPECTIVES], strict=True):
        text = r["prompt"]
        assert text.count(placeholder) == 1 and text.index(placeholder) < text.index(SPECS[p].prompt[:20])
        ids_as_vllm = tok(text).input_ids  # vLLM adds the tokenizer's special tokens itself
        if tok.bos_token_id is not None:
            assert ids_as_vllm.count(tok.bos_token_id) <= 1
    first = reqs[0]["prompt"]
    assert all(r["prompt"][: first.index(placeholder)] == first[: first.index(placeholder)] for r in reqs)


def test_refused_families_are_one_line_before_any_work(family_dir, tmp_path):
    pali = build_tiny_vlm("paligemma", tmp_path / "pali")
    for backend in ("hf", "vllm"):
        if backend == "vllm" and __import__("importlib").util.find_spec("vllm") is None:
            continue
        with pytest.raises(
            ConfigError, match="paligemma model: its checkpoints ship no chat template"
        ) as err:
            make_captioner(f"{backend}:{pali}")
        assert "\n" not in str(err.value) and "gemma3" in str(err.value)
    with pytest.raises(ConfigError, match="paligemma") as err:
        make_captioner(f"hf:{pali}")
    cog = tmp_path / "cogvlm-chat-hf"
    cog.mkdir()
    cfg = {"model_type": "cogvlm", "architectures": ["CogVLMForCausalLM"], "vision_config": {"image_size": 490},
           "auto_map": {"AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM"}}  # fmt: skip
    (cog / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="cogvlm model: remote code only") as err:
        make_captioner(f"hf:{cog}", trust_remote_code=True)
    assert "\n" not in str(err.value) and "glm4v" in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "somevlm"}))
    with pytest.raises(ConfigError, match="'somevlm' is not a transformers family"):
        make_captioner(f"hf:{other}")
    # a working family's folder without its chat template: refused, not captioned with no template
    bare = tmp_path / "bare-llava"
    import shutil

    shutil.copytree(family_dir("llava"), bare)
    for f in bare.glob("chat_template*"):
        f.unlink()
    with pytest.raises(ConfigError, match="has no chat template"):
        make_captioner(f"hf:{bare}")


def test_shared_prefix_out_of_memory_halves_the_image_batch(family_dir, monkeypatch):
    cap = HFCaptioner(str(family_dir("llava")))
    images, ids = _images(4, seed=2), ["a", "b", "c", "d"]
    wanted = {p: ids for p in PERSPECTIVES}
    expected = cap.caption_chunk(images, SPECS, ids, wanted, batch_size=4)
    real, sizes, renewals = cap._prefix_batch, [], []

    def oom_above_one(batch, specs, rows):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch, specs, rows)

    import torch

    monkeypatch.setattr(cap, "_prefix_batch", oom_above_one)
    got = cap.caption_chunk(images, SPECS, ids, wanted, batch_size=4, on_batch=lambda: renewals.append(1))
    assert got == expected and cap.max_batch == 1
    assert sizes[:4] == [4, 2, 1, 1] and renewals  # halved, kept, and the claims renewed per batch
    cap.max_batch = 0
