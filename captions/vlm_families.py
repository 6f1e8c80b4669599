"""Which VLM families the captioners run, and one line for those they refuse before any work.

``FAMILIES`` is the matrix of ``docs/captioners.md`` (rendered by ``scripts/captioner_matrix.py``): every
image-text-to-text family transformers ships that a captioner would use, keyed by its ``model_type``, with a
published checkpoint, the image placeholder its chat template writes, whether the hf backend shares the image
prefix across perspectives, and for a refused family the reason and what to use instead. The tests in
``tests/captions/test_family_matrix.py`` build each family and check the claimed status, so the table cannot
drift from the code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from differ_common.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """One VLM family as the captioners see it."""

    model_type: str
    checkpoint: str  # a published checkpoint of the family
    placeholder: str  # what the family's chat template writes for the image ("" for a refused family)
    refused: str = ""  # why the captioners refuse it and what to use instead ("" = it works)
    notes: str = ""


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("llava", "llava-hf/llava-1.5-7b-hf", "<image>"),
        Family("llava_next", "llava-hf/llava-v1.6-mistral-7b-hf", "<image>"),
        Family("llava_onevision", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "<image>"),
        Family("qwen2_vl", "Qwen/Qwen2-VL-7B-Instruct", "<|vision_start|><|image_pad|><|vision_end|>",
               notes="3-D rotary positions: the prefix is recomputed per perspective"),
        Family("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct", "<|vision_start|><|image_pad|><|vision_end|>",
               notes="3-D rotary positions: the prefix is recomputed per perspective"),
        Family("qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct", "<|vision_start|><|image_pad|><|vision_end|>",
               notes="3-D rotary positions: the prefix is recomputed per perspective"),
        Family("idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "<image>"),
        Family("smolvlm", "HuggingFaceTB/SmolVLM-Instruct", "<image>", notes="its processor needs `num2words`"),
        Family("gemma3", "google/gemma-3-4b-it", "<start_of_image>",
               notes="image tokens attend bidirectionally (token_type_ids): the prefix is recomputed"),
        Family("mllama", "meta-llama/Llama-3.2-11B-Vision-Instruct", "<|image|>",
               notes="cross-attention to the image: the prefix is recomputed per perspective"),
        Family("internvl", "OpenGVLab/InternVL3-1B-hf", "<IMG_CONTEXT>"),
        Family("mistral3", "mistralai/Mistral-Small-3.1-24B-Instruct-2503", "[IMG]"),
        Family("glm4v", "zai-org/GLM-4.1V-9B-Thinking", "<|begin_of_image|><|image|><|end_of_image|>",
               notes="a thinking model: its captions start with its reasoning; 3-D rotary positions"),
        Family("paligemma", "google/paligemma2-3b-mix-224", "",
               refused="its checkpoints ship no chat template (it takes task prefixes such as 'caption en', not "
               "questions); use gemma3 (google/gemma-3-4b-it) or another chat VLM"),
        Family("cogvlm", "THUDM/cogvlm-chat-hf (the authors' captioner)", "",
               refused="remote code only: transformers has no CogVLM class and the checkpoint no chat template; "
               "use glm4v (GLM-4.1V, its successor from the same lab) or qwen2_5_vl"),
    )
}  # fmt: skip
REMOTE_ONLY_ALIASES = {"cogvlm2": "cogvlm", "cogagent": "cogvlm"}  # config model_types of CogVLM's releases


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    for name in ("processor_config.json", "tokenizer_config.json"):
        f = folder / name
        try:
            if f.is_file() and json.loads(f.read_text(encoding="utf-8")).get("chat_template"):
                return True
        except ValueError:
            continue
    return (folder / "additional_chat_templates").is_dir()


def _transformers_knows(model_type: str) -> bool:
    """Whether the installed transformers has a config class for ``model_type`` (a folder lookup first, so the
    common case imports nothing)."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or not model_type:
        return False
    for root in spec.submodule_search_locations or []:
        if (Path(root) / "models" / model_type.replace("-", "_")).is_dir():
            return True
    from transformers import CONFIG_MAPPING

    return model_type in CONFIG_MAPPING


def check_vlm_family(folder: Path, spec: str, trust_remote_code: bool = False) -> str:
    """The folder's ``model_type`` if the captioners can run it, else one ConfigError line naming the family,
    the reason and what to use instead. Reads JSON files only."""
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = str(cfg.get("model_type") or "")
    family = FAMILIES.get(REMOTE_ONLY_ALIASES.get(model_type, model_type))
    if family is not None and family.refused:
        raise ConfigError(f"{folder}: {spec!r} is a {family.model_type} model: {family.refused}")
    if not trust_remote_code and not _transformers_knows(model_type):
        raise ConfigError(
            f"{folder}: model_type {model_type!r} is not a transformers family (remote code only); pass "
            "--trust-remote-code if its code supports AutoModelForImageTextToText, or use a family of docs/captioners.md"
        )
    if not _has_chat_template(folder):
        raise ConfigError(
            f"{folder}: {spec!r} ({model_type or 'no model_type'}) has no chat template (chat_template.jinja/.json "
            "or in tokenizer_config.json); captions need a chat VLM: use a family of docs/captioners.md"
        )
    return model_type
