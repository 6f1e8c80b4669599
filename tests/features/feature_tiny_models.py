"""Tiny random-weight text encoders saved to disk (built offline) for the encoder-loading tests."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "A young male, average height and build, with light skin.",
    "Red jacket with black patches, blue jeans and white shoes.",
    "Walking to the left, with a brisk gait and arms swinging.",
    "Indoor corridor, bright lighting, slightly blurred.",
    "Short dark hair in a ponytail; long blond hair.",
]

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_tiny_open_clip(
    folder: Path, arch: str = "tiny-text-clip", text_cfg_extra: dict | None = None
) -> tuple[Path, Path]:
    """Write ``<arch>.json`` and a random-weight checkpoint ``<arch>.pt`` into ``folder``; return both paths."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP))
    cfg["text_cfg"].update(text_cfg_extra or {})
    cfg_path = folder / f"{arch}.json"
    cfg_path.write_text(json.dumps(cfg))
    if text_cfg_extra:
        return cfg_path, folder / f"{arch}.pt"
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    ckpt = folder / f"{arch}.pt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<|startoftext|>", "<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        padding_side="right",
    )


def build_tiny_hf_clip(folder: Path) -> Path:
    """Save a tiny ``CLIPTextModelWithProjection`` + a locally trained tokenizer with ``save_pretrained``."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=48,
        projection_dim=12,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
