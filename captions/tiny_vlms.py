"""Tiny random-weight VLMs of every image-text-to-text family a captioner would use, built offline.

``build_tiny_vlm(family, dir)`` saves a model made from the family's own config class, its own processor class
(image processor, video processor where the processor needs one), a byte-level BPE tokenizer trained here on a
few sentences with the family's special tokens, and the chat template its published checkpoints ship (transcribed
in ``captions.family_templates``). ``hf:<dir>`` loads it through AutoProcessor + AutoModelForImageTextToText
exactly like the real checkpoint. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captions import family_templates as T
from captions.testing import _CORPUS

_H, _I = 32, 64  # hidden / intermediate size of every tiny tower


def train_tokenizer(
    specials: list[str],
    bos: str | None,
    eos: str,
    pad: str,
    extra: dict[str, str] | None = None,
    add_bos: bool = False,
    vocab_size: int = 400,
    cls: Any = None,
    corpus: list[str] | None = None,
):
    """A byte-level BPE trained on a few sentences (``corpus`` adds more); ``specials`` are single tokens;
    wrapped in ``cls``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + list(corpus or [])) * 4, trainer=trainer)
    if add_bos and bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    kw: dict[str, Any] = {"eos_token": eos, "pad_token": pad, "padding_side": "left"}
    if bos:
        kw["bos_token"] = bos
    if extra:
        kw["extra_special_tokens"] = extra
    return (cls or PreTrainedTokenizerFast)(tokenizer_object=tok, **kw)


def _ids(tok, *names: str) -> list[int]:
    return [tok.convert_tokens_to_ids(n) for n in names]


def _text(cfg_cls, tok, **extra):
    """A tiny decoder config of ``cfg_cls`` with the tokenizer's vocabulary and ids."""
    kw = dict(
        vocab_size=len(tok),
        hidden_size=_H,
        intermediate_size=_I,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    kw.update(extra)
    return cfg_cls(**kw)


def _clip_vision(image_size: int, patch: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=_H, intermediate_size=_I, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch, projection_dim=_H,
    )  # fmt: skip


def _siglip_vision(image_size: int, patch: int):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=_H, intermediate_size=_I, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- LLaVA family
def _llava(tok_only: bool = False):
    from transformers import CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaProcessor

    tok = train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>",
                          {"image_token": "<image>"}, add_bos=True)  # fmt: skip
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=T.LLAVA, num_additional_image_tokens=1)  # fmt: skip
    cfg = LlavaConfig(vision_config=_clip_vision(32, 8), text_config=_text(LlamaConfig, tok),
                      image_token_index=_ids(tok, "<image>")[0], vision_feature_select_strategy="default",
                      vision_feature_layer=-1)  # fmt: skip
    return proc, cfg


def _llava_next():
    from transformers import LlamaConfig, LlavaNextConfig, LlavaNextImageProcessor, LlavaNextProcessor

    tok = train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>",
                          {"image_token": "<image>"}, add_bos=True)  # fmt: skip
    pins = [[32, 32], [32, 64], [64, 32]]
    ip = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                 image_grid_pinpoints=pins)  # fmt: skip
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                              chat_template=T.LLAVA_NEXT_MISTRAL, num_additional_image_tokens=1)  # fmt: skip
    cfg = LlavaNextConfig(vision_config=_clip_vision(32, 8), text_config=_text(LlamaConfig, tok),
                          image_token_index=_ids(tok, "<image>")[0], image_grid_pinpoints=pins,
                          vision_feature_select_strategy="default", vision_feature_layer=-1)  # fmt: skip
    return proc, cfg


def _llava_onevision():
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
    )

    tok = train_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], None, "<|im_end|>",
                          "<|endoftext|>", {"image_token": "<image>", "video_token": "<video>"})  # fmt: skip
    pins = [[32, 32], [32, 64], [64, 32]]
    ip = LlavaOnevisionImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=pins)
    vp = LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32})
    proc = LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, num_image_tokens=16,
                                   vision_feature_select_strategy="full", chat_template=T.LLAVA_ONEVISION)  # fmt: skip
    cfg = LlavaOnevisionConfig(vision_config=_siglip_vision(32, 8), text_config=_text(Qwen2Config, tok),
                               image_token_index=_ids(tok, "<image>")[0], video_token_index=_ids(tok, "<video>")[0],
                               image_grid_pinpoints=pins, vision_feature_select_strategy="full",
                               vision_feature_layer=-1)  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- Qwen-VL family
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]  # fmt: skip


def _qwen_tok():
    return train_tokenizer(_QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>",
                           {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})  # fmt: skip


def _qwen_ids(tok) -> dict[str, int]:
    a, b, c, d = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return {"image_token_id": a, "video_token_id": b, "vision_start_token_id": c, "vision_end_token_id": d}


def _qwen_vision(cls, **extra):
    kw = dict(depth=2, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    kw.update(extra)
    return cls(**kw)


def _qwen_processors(ip_cls, vp_cls, proc_cls, template: str, patch: int = 8):
    tok = _qwen_tok()
    px = {"shortest_edge": (2 * patch) ** 2, "longest_edge": (2 * patch) ** 2 * 4}
    ip = ip_cls(patch_size=patch, merge_size=2, temporal_patch_size=2, size=px)
    vp = vp_cls(patch_size=patch, merge_size=2, temporal_patch_size=2, size=px)
    return tok, proc_cls(image_processor=ip, video_processor=vp, tokenizer=tok, chat_template=template)


def _rope(sections: list[int], **extra) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections, **extra}


def _qwen2_vl():
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLTextConfig,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    tok, proc = _qwen_processors(Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen2VLProcessor, T.QWEN2_VL)
    vision = _qwen_vision(Qwen2VLVisionConfig, embed_dim=_H, hidden_size=_H, mlp_ratio=2)
    text = _text(Qwen2VLTextConfig, tok, rope_parameters=_rope([2, 3, 3]))
    return proc, Qwen2VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), **_qwen_ids(tok))


def _qwen2_5_vl():
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLVisionConfig,
    )

    tok, proc = _qwen_processors(
        Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen2_5_VLProcessor, T.QWEN2_VL
    )
    vision = _qwen_vision(Qwen2_5_VLVisionConfig, hidden_size=_H, intermediate_size=_I, out_hidden_size=_H,
                          window_size=32, fullatt_block_indexes=[1])  # fmt: skip
    text = _text(Qwen2_5_VLTextConfig, tok, rope_parameters=_rope([2, 3, 3]))
    return proc, Qwen2_5_VLConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), **_qwen_ids(tok)
    )


def _qwen3_vl():
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLProcessor
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig, Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tok, proc = _qwen_processors(
        Qwen2VLImageProcessor, Qwen3VLVideoProcessor, Qwen3VLProcessor, T.QWEN3_VL, 8
    )
    vision = _qwen_vision(Qwen3VLVisionConfig, hidden_size=_H, intermediate_size=_I, out_hidden_size=_H,
                          num_position_embeddings=64, deepstack_visual_indexes=[0])  # fmt: skip
    text = _text(
        Qwen3VLTextConfig, tok, head_dim=16, rope_parameters=_rope([2, 3, 3], mrope_interleaved=True)
    )
    return proc, Qwen3VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), **_qwen_ids(tok))


# --------------------------------------------------------------------------------------------- Idefics3 / SmolVLM
_IDEFICS_SPECIALS = ["<unk>", "<|begin_of_text|>", "<end_of_utterance>", "<|end_of_text|>", "<pad>", "<image>",
                     "<fake_token_around_image>", "<global-img>"]  # fmt: skip


def _idefics3():
    from transformers import Idefics3Config, Idefics3ImageProcessor, Idefics3Processor, LlamaConfig

    tok = train_tokenizer(_IDEFICS_SPECIALS, "<|begin_of_text|>", "<end_of_utterance>", "<pad>", add_bos=True)
    ip = Idefics3ImageProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                do_image_splitting=False)  # fmt: skip
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=T.IDEFICS3)
    vision = {"hidden_size": _H, "intermediate_size": _I, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    cfg = Idefics3Config(vision_config=vision, text_config=_text(LlamaConfig, tok).to_dict(), scale_factor=2,
                         image_token_id=_ids(tok, "<image>")[0])  # fmt: skip
    return proc, cfg


def _smolvlm():
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<image>",
                "<fake_token_around_image>", "<global-img>"]  # fmt: skip
    tok = train_tokenizer(specials, "<|im_start|>", "<end_of_utterance>", "<|im_end|>")
    ip = SmolVLMImageProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                               do_image_splitting=False)  # fmt: skip
    vp = SmolVLMVideoProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    proc = SmolVLMProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, image_seq_len=4,
                            chat_template=T.SMOLVLM)  # fmt: skip
    vision = {"hidden_size": _H, "intermediate_size": _I, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    cfg = SmolVLMConfig(vision_config=vision, text_config=_text(LlamaConfig, tok).to_dict(), scale_factor=2,
                        image_token_id=_ids(tok, "<image>")[0])  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- Gemma 3 / PaliGemma
def _gemma3():
    from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor, Gemma3TextConfig

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]  # fmt: skip
    extra = {
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    }
    tok = train_tokenizer(specials, "<bos>", "<end_of_turn>", "<pad>", extra, add_bos=True)
    ip = Gemma3ImageProcessor(size={"height": 32, "width": 32})
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, chat_template=T.GEMMA3, image_seq_length=4)
    text = _text(Gemma3TextConfig, tok, head_dim=16, sliding_window=64, query_pre_attn_scalar=16)
    boi, eoi, img = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    cfg = Gemma3Config(vision_config=_siglip_vision(32, 8).to_dict(), text_config=text.to_dict(),
                       mm_tokens_per_image=4, boi_token_index=boi, eoi_token_index=eoi,
                       image_token_index=img)  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- Mllama
def _mllama():
    from transformers import MllamaConfig, MllamaImageProcessor, MllamaProcessor
    from transformers.models.mllama.configuration_mllama import MllamaTextConfig, MllamaVisionConfig

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|image|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]  # fmt: skip
    tok = train_tokenizer(specials, "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
                          {"image_token": "<|image|>"}, add_bos=True)  # fmt: skip
    ip = MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=2)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=T.MLLAMA)
    vision = MllamaVisionConfig(hidden_size=_H, intermediate_layers_indices=[0], num_hidden_layers=2,
                                num_global_layers=1, attention_heads=2, intermediate_size=_I, vision_output_dim=_H * 2,
                                image_size=32, patch_size=8, max_num_tiles=2,
                                supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])  # fmt: skip
    text = _text(MllamaTextConfig, tok, cross_attention_layers=[1], rope_parameters={"rope_type": "default",
                 "rope_theta": 10000.0})  # fmt: skip
    cfg = MllamaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=_ids(tok, "<|image|>")[0])  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- InternVL
def _internvl():
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLProcessor, Qwen2Config
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    extra = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}  # fmt: skip
    tok = train_tokenizer(specials, None, "<|im_end|>", "<|endoftext|>", extra)
    ip = GotOcr2ImageProcessor(size={"height": 32, "width": 32}, crop_to_patches=False)
    vp = InternVLVideoProcessor(size={"height": 32, "width": 32})
    proc = InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, image_seq_length=4,
                             chat_template=T.INTERNVL)  # fmt: skip
    vision = {"hidden_size": _H, "intermediate_size": _I, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": [32, 32], "patch_size": [8, 8]}  # fmt: skip
    cfg = InternVLConfig(vision_config=vision, text_config=_text(Qwen2Config, tok).to_dict(),
                         image_token_id=_ids(tok, "<IMG_CONTEXT>")[0], image_seq_length=4,
                         downsample_ratio=0.5, vision_feature_layer=-1)  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- Mistral 3 (Pixtral)
def _mistral3():
    from transformers import (
        Mistral3Config,
        MistralConfig,
        PixtralImageProcessor,
        PixtralProcessor,
        PixtralVisionConfig,
    )

    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                "[IMG_BREAK]", "[IMG_END]", "<pad>"]  # fmt: skip
    tok = train_tokenizer(specials, "<s>", "</s>", "<pad>", {"image_token": "[IMG]"}, add_bos=True)
    ip = PixtralImageProcessor(size={"longest_edge": 32}, patch_size=8)
    proc = PixtralProcessor(image_processor=ip, tokenizer=tok, patch_size=8, spatial_merge_size=2,
                            chat_template=T.MISTRAL3)  # fmt: skip
    vision = PixtralVisionConfig(hidden_size=_H, intermediate_size=_I, num_hidden_layers=2, num_attention_heads=2,
                                 image_size=32, patch_size=8, head_dim=16)  # fmt: skip
    cfg = Mistral3Config(vision_config=vision.to_dict(), text_config=_text(MistralConfig, tok, head_dim=16).to_dict(),
                         image_token_index=_ids(tok, "[IMG]")[0], spatial_merge_size=2,
                         vision_feature_layer=-1)  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- GLM-4V
def _glm4v():
    from transformers import Glm4vConfig, Glm4vImageProcessor, Glm4vProcessor
    from transformers.models.glm4v.configuration_glm4v import Glm4vTextConfig, Glm4vVisionConfig
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    specials = ["<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|image|>",
                "<|begin_of_image|>", "<|end_of_image|>", "<|video|>", "<|begin_of_video|>", "<|end_of_video|>",
                "<think>", "</think>"]  # fmt: skip
    tok = train_tokenizer(specials, None, "<|user|>", "<|endoftext|>",
                          {"image_token": "<|image|>", "video_token": "<|video|>"})  # fmt: skip
    px = {"shortest_edge": 16 * 16, "longest_edge": 16 * 16 * 4}
    ip = Glm4vImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2, size=px)
    vp = Glm4vVideoProcessor(patch_size=8, merge_size=2, temporal_patch_size=2, size=px)
    proc = Glm4vProcessor(image_processor=ip, video_processor=vp, tokenizer=tok, chat_template=T.GLM4V)
    vision = Glm4vVisionConfig(depth=2, hidden_size=_H, intermediate_size=_I, num_heads=2, out_hidden_size=_H,
                               patch_size=8, spatial_merge_size=2, temporal_patch_size=2, image_size=32)  # fmt: skip
    text = _text(Glm4vTextConfig, tok, rope_parameters=_rope([1, 1, 2], partial_rotary_factor=0.5))
    img, vid, bi, ei, bv, ev = _ids(tok, "<|image|>", "<|video|>", "<|begin_of_image|>", "<|end_of_image|>",
                                    "<|begin_of_video|>", "<|end_of_video|>")  # fmt: skip
    cfg = Glm4vConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=img,
                      video_token_id=vid, image_start_token_id=bi, image_end_token_id=ei, video_start_token_id=bv,
                      video_end_token_id=ev)  # fmt: skip
    return proc, cfg


# --------------------------------------------------------------------------------------------- PaliGemma
def _paligemma():
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaProcessor, SiglipImageProcessor

    tok = train_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], "<bos>", "<eos>", "<pad>",
                          {"image_token": "<image>"}, add_bos=True)  # fmt: skip
    ip = SiglipImageProcessor(size={"height": 32, "width": 32})
    ip.image_seq_length = 16
    proc = PaliGemmaProcessor(
        image_processor=ip, tokenizer=tok
    )  # the published checkpoints ship no chat template
    text = _text(GemmaConfig, tok, head_dim=16)
    cfg = PaliGemmaConfig(vision_config=_siglip_vision(32, 8).to_dict(), text_config=text.to_dict(),
                          image_token_index=_ids(tok, "<image>")[0], projection_dim=_H)  # fmt: skip
    return proc, cfg


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "llava": _llava,
    "llava_next": _llava_next,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "mllama": _mllama,
    "internvl": _internvl,
    "paligemma": _paligemma,
    "mistral3": _mistral3,
    "glm4v": _glm4v,
}


def _rescale(model: Any, seed: int) -> None:
    """Redraw every matrix with std 1/sqrt(fan-in): activations keep their scale through the tiny towers, so
    the image and every prompt token move the output (at the default 0.02 the image barely would)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def _save(model: Any, processor: Any, out: Path, seed: int) -> Path:
    """Rescale ``model``'s random weights, give it the tokenizer's generation ids, save it and ``processor``."""
    from transformers import GenerationConfig

    tok = processor.tokenizer
    _rescale(model, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_vlm(family: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build and save a tiny random-weight ``family`` VLM (config, weights, processor, template) in ``out_dir``."""
    import torch
    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor, config = BUILDERS[family]()
    torch.manual_seed(seed)
    return _save(AutoModelForImageTextToText.from_config(config), processor, out, seed)


def build_llava_sized(
    out_dir: str | os.PathLike,
    image_size: int = 336,
    patch_size: int = 14,
    hidden: int = 512,
    layers: int = 4,
    vision_hidden: int = 128,
    vision_layers: int = 4,
    vocab_size: int = 32064,
    seed: int = 0,
) -> Path:
    """A random-weight LLaVA-1.5 of chosen proportions (default: 576 image tokens, a 512-wide 4-layer Llama, a
    LLaVA-sized vocabulary), with the published LLaVA-1.5 template; for benchmarks that must run on a CPU."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from captions.prompts import load_prompts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # trained on the caption prompts too: their words become single tokens, as in a 32k-vocabulary tokenizer
    prompts = [s.prompt for s in load_prompts().values()]
    tok = train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>",
                          {"image_token": "<image>"}, add_bos=True, vocab_size=4000, corpus=prompts)  # fmt: skip
    ip = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch_size, chat_template=T.LLAVA,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=4 * vision_hidden,
                              num_hidden_layers=vision_layers, num_attention_heads=max(1, vision_hidden // 64),
                              image_size=image_size, patch_size=patch_size, projection_dim=hidden)  # fmt: skip
    text = LlamaConfig(vocab_size=max(vocab_size, len(tok)), hidden_size=hidden, intermediate_size=int(2.6875 * hidden),
                       num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                       num_key_value_heads=max(1, hidden // 64), max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)  # fmt: skip
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=_ids(tok, "<image>")[0],
                      vision_feature_select_strategy="default", vision_feature_layer=-2)  # fmt: skip
    torch.manual_seed(seed)
    return _save(LlavaForConditionalGeneration(cfg), proc, out, seed)
