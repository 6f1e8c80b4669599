"""Load the authors' released DIFFER weights (``model/eva_meta_bio.py`` naming) into our model.

The official EVA02 DIFFER model (``last_layer='clipFc_clsFc'``) keeps ``depth - 1`` blocks in ``blocks.*`` and the
last block as ``head_bio.*`` with its final norm ``norm_bio.*``; its identity feature is that branch's CLS token.
Key mapping (official → ours)::

    blocks.{i}                     → backbone.blocks.{i}              (i < depth - 1)
    head_bio.*                     → backbone.blocks.{depth-1}.*      (+ head_bio.* when model.bio_head)
    norm_bio.*                     → backbone.norm.*                  (+ norm_bio.* when model.bio_head)
    patch_embed.*, cls_token, pos_embed, fc_norm.*, rope.* → backbone.*
    camera_embed [C, 1, F]         → camera_embed [C, F]
    head.{weight,bias}             → classifier.{weight,bias}
    head_clip_bio.{weight,bias}    → bio_proj.{weight,bias}
    head_clip_bioReverse.{k}.head_fc.weight → nb_heads.{k}.proj.weight
    bottleneck.*                   → bottleneck.*

A leading ``module.`` or ``base.`` (their wrapper) is stripped. Tensors with no counterpart (e.g.
``head_clip_nonbio.*``, logit scales) are reported, never silently dropped; a shape mismatch is an error.

CLI: ``python -m differ_core.convert_official OFFICIAL.pth --config configs/ltcc.yaml --out ckpt.pt`` writes a
differ checkpoint (``best.pt`` format) that ``differ evaluate --checkpoint`` reads.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import torch

from differ_common.errors import DifferError

_BACKBONE_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "fc_norm.", "rope.", "norm_pre.", "reg_token")


def map_official_key(key: str, depth: int, bio_head: bool) -> list[str]:
    """Our key(s) for one official key (empty list: no counterpart)."""
    for prefix in ("module.", "base."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith("blocks."):
        return [f"backbone.{key}"]
    if key.startswith("head_bio."):
        rest = key[len("head_bio.") :]
        return [f"backbone.blocks.{depth - 1}.{rest}"] + ([key] if bio_head else [])
    if key.startswith("norm_bio."):
        rest = key[len("norm_bio.") :]
        return [f"backbone.norm.{rest}"] + ([key] if bio_head else [])
    if key.startswith(_BACKBONE_PREFIXES):
        return [f"backbone.{key}"]
    if key == "camera_embed":
        return ["camera_embed"]
    m = re.fullmatch(r"head\.(weight|bias)", key)
    if m:
        return [f"classifier.{m.group(1)}"]
    m = re.fullmatch(r"head_clip_bio\.(weight|bias)", key)
    if m:
        return [f"bio_proj.{m.group(1)}"]
    m = re.fullmatch(r"head_clip_bioReverse\.(\d+)\.head_fc\.weight", key)
    if m:
        return [f"nb_heads.{m.group(1)}.proj.weight"]
    if key.startswith("bottleneck."):
        return [key]
    return []


def convert_state_dict(
    official: dict[str, torch.Tensor], model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Our state dict from an official one; ``report`` lists ``unused`` official keys and ``missing`` ours.

    Raises DifferError on a shape mismatch (another architecture or dataset).
    """
    own = model.state_dict()
    depth = len(model.backbone.blocks)
    bio_head = getattr(model, "head_bio", None) is not None
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in official.items():
        targets = [t for t in map_official_key(key, depth, bio_head) if t in own]
        if not targets:
            unused.append(key)
            continue
        for t in targets:
            v = value
            if t == "camera_embed" and v.ndim == 3:
                v = v.reshape(v.shape[0], v.shape[-1])
            if tuple(v.shape) != tuple(own[t].shape):
                raise DifferError(
                    f"official key {key!r} has shape {tuple(value.shape)} but our {t!r} is {tuple(own[t].shape)}: "
                    "the config's backbone, dataset (identities, cameras), text dim or perspectives differ"
                )
            out[t] = v.to(own[t].dtype)
    missing = [k for k in own if k not in out]
    return out, {"unused": unused, "missing": missing}


def infer_sizes(official: dict[str, torch.Tensor]) -> dict[str, Any]:
    """num_classes, num_cameras, text_dim and the number of NBDetach branches from the tensors' shapes."""
    sd = {re.sub(r"^(module\.|base\.)", "", k): v for k, v in official.items()}
    nb = {int(m.group(1)) for k in sd if (m := re.match(r"head_clip_bioReverse\.(\d+)\.", k))}
    text_dim = None
    if "head_clip_bio.weight" in sd:
        text_dim = int(sd["head_clip_bio.weight"].shape[0])
    elif nb:
        text_dim = int(sd["head_clip_bioReverse.0.head_fc.weight"].shape[0])
    return {
        "num_classes": int(sd["head.weight"].shape[0]) if "head.weight" in sd else 0,
        "num_cameras": int(sd["camera_embed"].shape[0]) if "camera_embed" in sd else 0,
        "text_dim": text_dim,
        "num_nonbio": len(nb),
    }


def convert_checkpoint(
    src: str | Path,
    config: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Convert an official ``.pth`` (weights_only / safetensors) into a differ checkpoint at ``out``."""
    from differ_core.checkpoint import save_checkpoint
    from differ_core.config import load_config
    from differ_core.model import build_model, model_mean_std, read_state_dict

    cfg = load_config(config, overrides)
    official = read_state_dict(src)
    sizes = infer_sizes(official)
    if sizes["num_nonbio"] and sizes["num_nonbio"] != len(cfg.text.non_bio):
        raise DifferError(
            f"{src}: has {sizes['num_nonbio']} NBDetach branches but {config} lists non-biometric perspectives "
            f"{cfg.text.non_bio}; set text.perspectives to match"
        )
    model = build_model(
        cfg, sizes["num_classes"], sizes["num_cameras"], sizes["text_dim"], load_pretrained=False
    )
    state, report = convert_state_dict(official, model)
    if strict and report["missing"]:
        raise DifferError(
            f"{src}: {len(report['missing'])} of our tensors have no official counterpart, e.g. "
            f"{report['missing'][:5]}; check the config (backbone, model.bio_head, losses) or pass --no-strict"
        )
    model.load_state_dict(state, strict=False)
    mean, std = model_mean_std(cfg, model)
    save_checkpoint(
        out,
        {
            "model": model.state_dict(),
            "config": cfg.model_dump(mode="json"),
            "epoch": None,
            "step": None,
            "num_classes": sizes["num_classes"],
            "num_cameras": sizes["num_cameras"],
            "text_dim": sizes["text_dim"],
            "img_size": [int(v) for v in cfg.data.img_size],
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "dataset": cfg.data.dataset,
            "backbone": cfg.model.backbone,
            "metrics": {},
            "selection": "official",
            "converted_from": str(src),
        },
    )
    return {**report, **sizes, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="differ_core.convert_official", description=__doc__.split("\n")[0])
    p.add_argument("src", help="the authors' state dict (.pth/.pt/.bin/.safetensors)")
    p.add_argument("--config", required=True, help="our training YAML describing the same model")
    p.add_argument("--out", required=True, help="differ checkpoint to write")
    p.add_argument(
        "--no-strict", action="store_true", help="allow our tensors without an official counterpart"
    )
    p.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = p.parse_args(argv)
    try:
        rep = convert_checkpoint(args.src, args.config, args.out, args.overrides, strict=not args.no_strict)
    except DifferError as exc:
        print(f"convert_official: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"wrote {rep['out']}: {rep['num_classes']} ids, {rep['num_cameras']} cameras, text dim {rep['text_dim']}"
    )
    if rep["unused"]:
        print(f"official tensors without a counterpart ({len(rep['unused'])}): {rep['unused'][:10]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
