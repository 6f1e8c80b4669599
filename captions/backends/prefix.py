"""One image prefix, many perspectives: the shared tokens of an image's prompts are computed once.

Every perspective's prompt is rendered by the processor's chat template with the image first, so the prompts of
one image agree token for token up to the perspective's question: system text, role marker and the hundreds of
image tokens. ``PrefixPlan`` finds that longest common prefix per image (from the processor's real token ids, so
no re-tokenization can shift a boundary); ``caption_with_prefix`` runs the model once over the left-padded
prefixes (vision tower included), keeps the key/value cache, and for each perspective continues a copy of it
with the perspective's own tokens through ``generate`` — the same positions, mask and greedy decoding as a full
prompt, so the captions are those of recomputing everything. When the prompts do not share the image (the
template puts the question first, the prompts differ per image after the prefix, or a family needs per-token
inputs beyond ids and mask), ``plan_prefix`` returns None and the caller recomputes.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

# families whose decoder takes plain 1-D positions and whose image inputs are not per-token: a prefix cache of
# theirs continues exactly (verified per family against recomputation in tests/captions/test_family_matrix.py)
PREFIX_FAMILIES = frozenset(
    {"llava", "llava_next", "llava_onevision", "idefics3", "smolvlm", "internvl", "mistral3"}
)


@dataclass
class PrefixPlan:
    """Per image its prefix ids; per perspective the suffix ids every image shares."""

    prefixes: list[list[int]]
    suffixes: dict[str, list[int]]
    extra: dict[str, Any]  # image inputs (pixel values, sizes) of the batch, as the processor returned them


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for k in range(n):
        tok = seqs[0][k]
        if any(s[k] != tok for s in seqs[1:]):
            return k
    return n


def plan_prefix(
    encodings: dict[str, Any], image_token_ids: set[int], sequence_keys: tuple[str, ...] = ()
) -> PrefixPlan | None:
    """The shared-prefix plan for a batch, or None when the image does not lead every prompt.

    ``encodings``: perspective -> the processor's left-padded batch for the same images in the same order.
    """
    names = list(encodings)
    if len(names) < 2 or not image_token_ids:
        return None
    first = encodings[names[0]]
    if any(k in first for k in sequence_keys):
        return None
    rows = first["input_ids"].shape[0]
    unpadded = {
        p: [enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist() for i in range(rows)]
        for p, enc in encodings.items()
    }
    prefixes: list[list[int]] = []
    cuts: list[int] = []
    for i in range(rows):
        seqs = [unpadded[p][i] for p in names]
        cut = min(_common_prefix(seqs), min(len(s) for s in seqs) - 1)
        last_image = max((k for s in seqs for k, t in enumerate(s) if t in image_token_ids), default=-1)
        if last_image < 0 or last_image >= cut:  # no image, or an image token after the shared part
            return None
        prefixes.append(seqs[0][:cut])
        cuts.append(cut)
    suffixes = {}
    for p in names:
        tails = {tuple(unpadded[p][i][cuts[i] :]) for i in range(rows)}
        if len(tails) != 1:  # the question's tokens differ per image: no batch-wide suffix
            return None
        suffixes[p] = list(tails.pop())
    extra = {k: v for k, v in first.items() if k not in ("input_ids", "attention_mask")}
    return PrefixPlan(prefixes, suffixes, extra)


def _left_pad(seqs: list[list[int]], pad_id: int, device: Any):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def caption_with_prefix(
    model: Any,
    plan: PrefixPlan,
    rows: dict[str, list[int]],
    generate_kwargs: dict[str, dict[str, Any]],
    pad_token_id: int,
) -> dict[str, Any]:
    """New token ids per perspective (rows ``rows[p]`` of the batch), the prefix computed once.

    The prefix pass uses the positions ``generate`` gives a left-padded prompt (cumulative mask - 1). Perspectives
    with the same generation settings continue together in one ``generate``: row = an image's prefix, then its
    perspective's question, left-padded inside the question's slot (masked, so positions and attention are those
    of the unpadded prompt), the prefix cache repeated per row.
    """
    import torch
    from transformers import DynamicCache

    device = model.device
    ids, mask = _left_pad(plan.prefixes, pad_token_id, device)
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    extra = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in plan.extra.items()}
    if "pixel_values" in extra and extra["pixel_values"].is_floating_point():
        extra["pixel_values"] = extra["pixel_values"].to(model.dtype)
    cache = DynamicCache(config=model.config.get_text_config())
    # transformers 5 names the cache argument ``cache``; 4.x named it ``past_key_values``
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    groups: dict[str, list[str]] = {}
    for p in rows:
        if rows[p]:
            groups.setdefault(repr(sorted(generate_kwargs[p].items())), []).append(p)
    out: dict[str, Any] = {}
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, logits_to_keep=1,
              **{key: cache}, **extra)  # fmt: skip
        for names in groups.values():
            order = [(p, k) for p in names for k in rows[p]]
            sel = torch.tensor([k for _, k in order], device=device)
            suffix, suffix_mask = _left_pad([plan.suffixes[p] for p, _ in order], pad_token_id, device)
            mine = copy.deepcopy(cache)
            mine.batch_select_indices(sel)
            full = torch.cat([ids[sel], suffix], dim=1)
            full_mask = torch.cat([mask[sel], suffix_mask], dim=1)
            gen = model.generate(input_ids=full, attention_mask=full_mask, pad_token_id=pad_token_id,
                                 **{key: mine}, **generate_kwargs[names[0]])  # fmt: skip
            new = gen[:, full.shape[1] :]
            start = 0
            for p in names:
                out[p] = new[start : start + len(rows[p])]
                start += len(rows[p])
    return out
