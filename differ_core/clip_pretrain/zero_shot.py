"""Zero-shot retrieval on the held-out people: does the pre-trained model match images and captions it never saw?

For each perspective, the candidates are the distinct captions (canonical template) of the held-out people's
outfits (clothing, hairstyle) or identities (biometrics). Image → text Rank-1: the top caption of an image is its
own; text → image Rank-1: the top image of a caption is one it describes. Chance is one over the candidates.
The image features alone are also ranked across outfits (a clothes-changing Rank-1 before any ReID training).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from differ_core.clip_pretrain.corpus import Corpus

# perspective -> the attribute-row columns whose values one caption describes
KEYS: dict[str, tuple[str, ...]] = {
    "clothing": ("pid", "outfit"),
    "hairstyle": ("pid", "outfit"),
    "biometrics": ("pid",),
}


@torch.no_grad()
def encode_images(model: Any, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    from differ_core.clip_pretrain.train import to_input

    x = torch.from_numpy(images)
    return torch.cat(
        [model.encode_image(to_input(x[i : i + batch]), normalize=True) for i in range(0, len(x), batch)]
    )


@torch.no_grad()
def encode_texts(model: Any, tokenizer: Any, texts: list[str], batch: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            model.encode_text(tokenizer(texts[i : i + batch]), normalize=True)
            for i in range(0, len(texts), batch)
        ]
    )


def zero_shot_retrieval(model: Any, tokenizer: Any, corpus: Corpus) -> dict[str, Any]:
    """Rank-1 (%) image → text and text → image per perspective, with chance, and the image-only CC Rank-1."""
    from captions.attributes_captioner import render

    idx = np.flatnonzero(corpus.held_out)
    rows = corpus.attributes.iloc[idx].to_dict("records")
    img = encode_images(model, corpus.images[idx])
    out: dict[str, Any] = {"held_out_images": len(idx), "held_out_ids": len({r["pid"] for r in rows})}
    for perspective, cols in KEYS.items():
        text_of = {}
        for r in rows:
            key = tuple(r[c] for c in cols)
            if key not in text_of:
                text_of[key] = render(r, perspective, random.Random(0)).text
        texts = sorted(set(text_of.values()))
        own = torch.tensor([texts.index(text_of[tuple(r[c] for c in cols)]) for r in rows])
        sim = img @ encode_texts(model, tokenizer, texts).T  # [images, texts]
        i2t = float((sim.argmax(1) == own).float().mean()) * 100
        t2i = float((own[sim.argmax(0)] == torch.arange(len(texts))).float().mean()) * 100
        out[perspective] = {"i2t_r1": round(i2t, 1), "t2i_r1": round(t2i, 1), "candidates": len(texts),
                            "chance": round(100 / len(texts), 1)}  # fmt: skip
    pid, outfit, cam = (torch.tensor([r[k] for r in rows]) for k in ("pid", "outfit", "camid"))
    sim = img @ img.T
    out["image_cc_r1"] = cc_rank1(sim, pid, outfit)
    out["image_cc_r1_other_cameras"] = cc_rank1(sim, pid, outfit, cam)
    return out


def cc_rank1(
    sim: torch.Tensor, pid: torch.Tensor, outfit: torch.Tensor, camid: torch.Tensor | None = None
) -> float:
    """Clothes-changing Rank-1 (%) of every image against the others: the same person's same outfit is left out,
    and with ``camid`` also the same person in the same camera, as the CC-ReID protocols do (without it, a
    background shared by two outfits in one camera counts as recognising the person)."""
    same = pid[:, None] == pid[None]
    drop = same & (outfit[:, None] == outfit[None])
    if camid is not None:
        drop |= same & (camid[:, None] == camid[None])
    sim = sim.masked_fill(drop, float("-inf"))
    valid = (~drop & same).any(1)  # queries with a match left
    hit = pid[sim.argmax(1)] == pid
    return round(float(hit[valid].float().mean()) * 100, 1) if bool(valid.any()) else 0.0


def format_zero_shot(scores: dict[str, Any]) -> str:
    """A small markdown table of ``zero_shot_retrieval``'s result."""
    lines = [
        "| perspective | image → text R1 | text → image R1 | candidates | chance |",
        "|---|---|---|---|---|",
    ]
    for p in KEYS:
        s = scores[p]
        lines.append(
            f"| {p} | {s['i2t_r1']:.1f} | {s['t2i_r1']:.1f} | {s['candidates']} | {s['chance']:.1f} |"
        )
    lines.append(
        "\nimage features alone, clothes-changing Rank-1 on the held-out people: "
        f"{scores['image_cc_r1']:.1f}% (same camera allowed)"
    )
    if "image_cc_r1_other_cameras" in scores:  # records written before it lack the key
        lines.append(
            f"  the same, other cameras only (the CC-ReID protocol): {scores['image_cc_r1_other_cameras']:.1f}%"
        )
    return "\n".join(lines)
