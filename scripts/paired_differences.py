"""Per-seed paired differences of a `differ study`: each variant minus the baseline of the same seed.

    python scripts/paired_differences.py W/studies/synthcc-v2 [--protocol clothes_changing] [--metric mAP]

Prints a markdown table (values in %): one row per seed with each variant's value and its difference to the
baseline, then the mean ± std of the differences, their 95% confidence interval (Student's t over the seeds both
ran; a variant run at fewer seeds than the baseline is paired on its own seeds), and how many seeds the variant
beats the baseline in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy import stats


def paired_table(results: pd.DataFrame, protocol: str, metric: str, baseline: str = "baseline") -> str:
    """The markdown table of ``results`` (a study's ``results.parquet``) for one protocol and metric."""
    df = results[(results["protocol"] == protocol) & (results["noise"] == results["noise"].min())]
    wide = df.pivot_table(index="seed", columns="variant", values=metric, aggfunc="first") * 100
    if baseline not in wide:
        raise SystemExit(f"no {baseline!r} variant in the study; variants: {sorted(wide.columns)}")
    others = [v for v in dict.fromkeys(df["variant"]) if v != baseline]
    head = ["seed", baseline, *others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed, row in wide.iterrows():
        if pd.isna(row[baseline]):
            continue
        cells = ["—" if pd.isna(row[v]) else f"{row[v]:.1f} ({row[v] - row[baseline]:+.1f})" for v in others]
        lines.append(f"| {seed} | {row[baseline]:.1f} | " + " | ".join(cells) + " |")
    diffs = {v: (wide[v] - wide[baseline]).dropna() for v in others}
    lines.append(
        "| mean diff | | "
        + " | ".join(f"{d.mean():+.1f} ± {d.std(ddof=1):.1f}" for d in diffs.values())
        + " |"
    )
    lines.append("| 95% interval | | " + " | ".join(_interval(d) for d in diffs.values()) + " |")
    lines.append(
        "| seeds above baseline | | "
        + " | ".join(f"{int((d > 0).sum())}/{len(d)}" for d in diffs.values())
        + " |"
    )
    return "\n".join(lines)


def _interval(diffs: pd.Series) -> str:
    """The 95% t-interval of the mean paired difference, ``[lo, hi]``; ``n/a`` below two seeds."""
    n = len(diffs)
    if n < 2:
        return "n/a"
    half = stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / n**0.5
    return f"[{diffs.mean() - half:+.1f}, {diffs.mean() + half:+.1f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a study folder W/studies/<name> (its results.parquet)")
    p.add_argument("--protocol", default="clothes_changing")
    p.add_argument("--metric", default="mAP", choices=["rank1", "rank5", "rank10", "mAP"])
    p.add_argument("--baseline", default="baseline")
    args = p.parse_args(argv)
    path = args.study / "results.parquet"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; run `differ study ... --name {args.study.name}` first")
    print(f"{args.protocol} {args.metric} (%), variant (variant − {args.baseline}) per seed")
    print(paired_table(pd.read_parquet(path), args.protocol, args.metric, args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
