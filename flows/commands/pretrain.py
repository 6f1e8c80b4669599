"""`differ pretrain [CONFIG]`: a CLIP-style pre-training (reused when done); prints its files and zero-shot check.

It always trains in the workspace (``W/pretrain/``), also for a config the package ships a start of: that is how
a shipped start is regenerated, and the command then says whether the result is bit-identical to the shipped
files. ``--export DIR`` writes the shipped form (fp16 weights, config JSON, ``start.json``). The printed
text-encoder spec and trunk file are what the pipeline passes for ``pretrain:<name>``; give them to
`differ encode --encoder ...` and `differ train ... model.pretrained=...` when running stages by hand.
"""

from __future__ import annotations

import argparse
import shlex


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        default="synthcc_start",
        help="configs/pretrain/ name or YAML path (synthcc_start, the shipped start: about 37 min on 2 cores)",
    )
    p.add_argument(
        "--export",
        metavar="DIR",
        default=None,
        help="also write the shipped form (fp16 weights, config JSON, start.json with sha256 and provenance) to DIR",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from differ_core.clip_pretrain.config import load_pretrain_config
    from differ_core.clip_pretrain.shipped import (
        RECORD,
        compare_with_shipped,
        export_start,
        shipped_folder,
    )
    from differ_core.clip_pretrain.train import run_pretrain
    from differ_core.clip_pretrain.zero_shot import format_zero_shot

    cfg = load_pretrain_config(args.config)
    out = run_pretrain(cfg, args.workdir)
    print(f"pre-training {args.config}: {out.folder}")
    print(f"  text encoder:     {out.text_encoder}")
    print(f"  model.pretrained: {out.trunk}")
    print(f"zero-shot retrieval on {out.zero_shot()['held_out_ids']} held-out people (%):")
    print(format_zero_shot(out.zero_shot()))
    shipped = shipped_folder(args.config)
    if (shipped / RECORD).is_file():
        print(f"shipped start: {compare_with_shipped(out, shipped)}")
    if args.export:
        command = f"differ pretrain {shlex.quote(str(args.config))} --export {shlex.quote(args.export)}"
        dest = export_start(out, cfg, Path(str(args.config)).stem, Path(args.export), command)
        print(f"exported the shipped form to {dest}")
    return 0
