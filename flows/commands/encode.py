"""`differ encode --dataset D [--encoder SPEC]`: text features for new or changed caption rows only.

Also: `--import-official DIR` / `--export-official DIR` (the DIFFER release's train.npz + summary JSON) and
`--plot PERSPECTIVE` (a 2-D map of that perspective's features coloured by outfit or identity).
"""

from __future__ import annotations

import argparse

from captions.features.encoders import ENCODERS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset", required=True, help="dataset name (its manifest and captions are in the workspace)"
    )
    p.add_argument(
        "--encoder",
        default="minilm",
        help=f"registered text encoders: {ENCODERS.usage()} (default minilm, offline)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="strings per forward pass (default: sized for the device)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:1 ... (default: GPU when available)")
    p.add_argument(
        "--perspectives", default=None, help="comma-separated subset (default: all current + summaries)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("official DIFFER release format")
    g.add_argument(
        "--import-official",
        metavar="DIR",
        default=None,
        help="import <DIR>/<version>/train.npz (+ summary json)",
    )
    g.add_argument(
        "--export-official", metavar="DIR", default=None, help="export these features to DIR in that format"
    )
    g.add_argument(
        "--official-name",
        default=None,
        help="<TextEncoderVersion> folder name (import: which one; export: name)",
    )
    g = p.add_argument_group("plot")
    g.add_argument(
        "--plot", metavar="PERSPECTIVE", default=None, help="write a 2-D map of this perspective's features"
    )
    g.add_argument("--color-by", choices=("outfit", "identity"), default="outfit")
    g.add_argument("--method", choices=("pca", "tsne"), default="pca")
    g.add_argument("--plot-out", default=None, help="PNG path (default: W/features/<ds>/<enc>/plots/...)")


def run(args: argparse.Namespace) -> int:
    encoder = args.encoder
    if encoder.startswith(
        "pretrain:"
    ):  # the text tower of a CLIP-style pre-training (shipped, or trained if missing)
        from differ_core.clip_pretrain.shipped import resolve_start

        encoder = resolve_start(encoder.split(":", 1)[1].strip(), args.workdir).text_encoder
    if args.import_official:
        from captions.features.interop import import_official

        rep = import_official(args.workdir, args.dataset, args.import_official, name=args.official_name)
        encoder = rep.encoder
        print(f"imported {rep.dim}-d features as encoder {rep.encoder} into {rep.dir}")
        for p, n in rep.rows.items():
            print(f"  {p:<20} {n:>8} rows")
        print(
            f"  release keys without a manifest image: {rep.unmatched_keys}; manifest images without a feature: "
            f"{rep.images_without_feature}; pids without a summary: {rep.pids_without_summary}"
        )
    elif args.export_official:
        from captions.features.interop import export_official

        written = export_official(
            args.workdir, args.dataset, encoder, args.export_official, name=args.official_name
        )
        for kind, path in written.items():
            print(f"wrote {kind}: {path}")
    else:
        from captions.features.tables import encode_dataset

        persp = [s.strip() for s in args.perspectives.split(",") if s.strip()] if args.perspectives else None
        rep = encode_dataset(
            args.workdir,
            args.dataset,
            encoder=encoder,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            perspectives=persp,
            device=args.device,
        )
        print(f"features of {args.dataset} with {encoder} ({rep.dim}-d) in {rep.dir}  [{rep.seconds:.1f} s]")
        print(f"  {'perspective':<20} {'encoded':>8} {'reused':>8} {'total':>8} {'dropped':>8}")
        for p in rep.total:
            print(f"  {p:<20} {rep.encoded[p]:>8} {rep.reused[p]:>8} {rep.total[p]:>8} {rep.dropped[p]:>8}")
    if args.plot:
        from captions.features.plot import plot_features

        path = plot_features(
            args.workdir,
            args.dataset,
            encoder,
            perspective=args.plot,
            color_by=args.color_by,
            method=args.method,
            out=args.plot_out,
        )
        print(f"plot: {path}")
    return 0
