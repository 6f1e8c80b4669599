"""`differ pretrain [CONFIG]`: the CLIP-style pre-training (reused when done); prints its files and zero-shot check.

The printed text-encoder spec and trunk file are what the pipeline passes for ``pretrain:<name>``; give them to
`differ encode --encoder ...` and `differ train ... model.pretrained=...` when running stages by hand.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="synthcc_clip", help="configs/pretrain/ name or YAML path")


def run(args: argparse.Namespace) -> int:
    from differ_core.clip_pretrain.config import load_pretrain_config
    from differ_core.clip_pretrain.train import run_pretrain
    from differ_core.clip_pretrain.zero_shot import format_zero_shot

    cfg = load_pretrain_config(args.config)
    out = run_pretrain(cfg, args.workdir)
    print(f"pre-training {args.config}: {out.folder}")
    print(f"  text encoder:     {out.text_encoder}")
    print(f"  model.pretrained: {out.trunk}")
    print(f"zero-shot retrieval on {out.zero_shot()['held_out_ids']} held-out people (%):")
    print(format_zero_shot(out.zero_shot()))
    return 0
