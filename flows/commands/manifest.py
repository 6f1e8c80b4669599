"""`differ manifest DATASET --root R [--out F]`: write a dataset's manifest (SynthCC: generate it first)."""

from __future__ import annotations

import argparse

from data_manifests.registry import list_datasets

SHOWN_SKIPPED = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dataset", metavar="DATASET", help=f"one of {', '.join(list_datasets())} (registered datasets)"
    )
    p.add_argument(
        "--root",
        default=None,
        help="the folder holding the dataset (custom: the CSV); synthcc: where to generate it (default W/data)",
    )
    p.add_argument("--out", default=None, help="manifest file (default W/manifests/<dataset>.parquet)")
    p.add_argument(
        "--on-bad-image",
        default="error",
        choices=["error", "skip"],
        help="unreadable/corrupt images: stop with an error (default) or leave them out and report them",
    )
    g = p.add_argument_group("synthcc")
    g.add_argument("--seed", type=int, default=None, help="generator seed (default 0)")
    g.add_argument(
        "--size", choices=["tiny", "small", "default"], default=None, help="named size (default: default)"
    )
    g.add_argument(
        "--regenerate",
        action="store_true",
        help="replace a SynthCC folder made with other knobs or another seed (refused otherwise)",
    )
    g.add_argument(
        "--set",
        dest="knobs",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="a SynthConfig knob, e.g. --set num_cameras=8 --set clothing_saliency=0.5 (repeatable)",
    )


def parse_knobs(items: list[str]) -> dict[str, object]:
    """``["a=1", "b=0.5", "c=x"]`` -> ``{"a": 1, "b": 0.5, "c": "x"}`` (ints, floats, booleans, strings)."""
    from differ_common.errors import ConfigError

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KNOB=VALUE (e.g. --set num_cameras=8)")
        out[key] = _scalar(value.strip())
    return out


def _scalar(text: str) -> object:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run(args: argparse.Namespace) -> int:
    from data_manifests.registry import dataset_info, make_manifest_report
    from data_manifests.splits import print_split_summary
    from differ_common.errors import ConfigError

    info = dataset_info(args.dataset)
    knobs = parse_knobs(args.knobs)
    options: dict[str, object] = {"on_bad_image": args.on_bad_image}
    if info.generated:
        options.update(seed=args.seed, size=args.size, regenerate=args.regenerate or None, **knobs)
    elif args.seed is not None or args.size is not None or knobs or args.regenerate:
        raise ConfigError(
            f"{info.name}: --seed, --size, --set and --regenerate apply to synthcc only; drop them"
        )
    report = make_manifest_report(args.workdir, info.name, args.root, out=args.out, **options)
    df = report.manifest
    print_split_summary(df, title=f"{info.name} manifest: {report.path}")
    if report.skipped:
        shown = ", ".join(report.skipped[:SHOWN_SKIPPED])
        more = f", ... ({len(report.skipped)} in all)" if len(report.skipped) > SHOWN_SKIPPED else ""
        print(f"skipped {len(report.skipped)} unreadable image(s): {shown}{more}")
    if info.generated:
        meta = df.attrs.get("synthcc", {})
        how = f"generated in {meta.get('seconds', 0):.1f} s" if report.generated else "reused"
        print(
            f"SynthCC: {meta.get('num_images', 0):,} images {how}: {meta.get('folder')} (seed {meta.get('seed')})"
        )
        print(f"attributes: {report.attributes}")
    print(f"wrote {report.path} ({len(df):,} rows) in {report.seconds:.1f} s")
    return 0
