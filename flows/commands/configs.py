"""`differ configs [--path NAME]`: the training configs, overlays and pipeline files that names resolve to."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", metavar="NAME", default=None, help="print the file a config name resolves to")


def run(args: argparse.Namespace) -> int:
    from differ_core.config_files import ENV_VAR, config_dirs, list_configs, resolve_config

    if args.path:
        print(resolve_config(args.path))
        return 0
    print("config folders, first match wins (set $" + ENV_VAR + " to add your own):")
    for d in config_dirs():
        print(f"  {d}")
    for folder, title in (("", "training configs"), ("ablations", "ablation overlays"),
                          ("pipelines", "pipeline option files")):  # fmt: skip
        names = [n for n in list_configs(folder) if folder or "/" not in n]
        print(f"{title}: {', '.join(names) if names else '(none)'}")
    return 0
