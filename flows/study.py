"""The SynthCC study: DIFFER vs baseline vs ablations over seeds (and caption-noise levels), one table.

Every run is the ordinary pipeline with extra training overrides, so captions and features are computed once
per noise level and reused by every variant and seed (their tasks hit the cache). A variant is an overlay file
in ``configs/ablations/`` (its ``base:`` is ignored: the overlay is applied on top of the study's config).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from differ_common.errors import ConfigError
from differ_core.config_files import config_folder
from flows.config import PipelineConfig

# The study's rows in the order they are reported; "differ" is the study config itself.
DEFAULT_VARIANTS: tuple[str, ...] = (
    "baseline",
    "bio_only",
    "nbdetach_only",
    "differ",
    "clothing_only",
    "hair_clothing",
    "all_nonbio",
)
SUMMARY_METRICS: tuple[str, ...] = ("rank1", "mAP")


class StudyConfig(BaseModel):
    """A study: the pipeline settings, the variants, the seeds and the caption-noise levels."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("study", description="folder name under W/studies/")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    variant_seeds: dict[str, list[int]] = Field(
        default_factory=dict, description="seeds of the variants that run other seeds than `seeds`"
    )
    noise_levels: list[float] = Field(default_factory=lambda: [0.0], description="attributes captioner noise")

    @field_validator("variants")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        known = available_variants()
        bad = [x for x in v if x not in known]
        if bad:
            raise ValueError(
                f"unknown variants {bad}; available: {known} (overlays: ablations/*.yaml among the configs, `differ configs`)"
            )
        return v

    @field_validator("seeds", "noise_levels")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("give at least one value")
        return v

    @model_validator(mode="after")
    def _variant_seeds_of_variants(self) -> StudyConfig:
        stray = sorted(set(self.variant_seeds) - set(self.variants))
        if stray:
            raise ValueError(f"variant_seeds names variants the study does not run: {stray}")
        empty = sorted(v for v, seeds in self.variant_seeds.items() if not seeds)
        if empty:
            raise ValueError(f"variant_seeds: give at least one seed for {empty}")
        return self

    def seeds_of(self, variant: str) -> list[int]:
        """The seeds ``variant`` runs: its own from ``variant_seeds``, else ``seeds``."""
        return self.variant_seeds.get(variant, self.seeds)


def available_variants() -> list[str]:
    """``differ`` plus every ablation overlay (``ablations/*.yaml`` in the config folders)."""
    return ["differ", *sorted(_overlays())]


def _overlays() -> dict[str, Path]:
    return {p.stem: p for p in config_folder("ablations")}


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flatten(f"{prefix}.{k}" if prefix else k, v)]
    return [f"{prefix}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]


def variant_overrides(variant: str) -> list[str]:
    """The overlay of ``variant`` as ``key=value`` training overrides (``base:`` dropped)."""
    if variant == "differ":
        return []
    path = _overlays().get(variant)
    if path is None:
        raise ConfigError(f"{variant}: no such ablation overlay; available: {available_variants()}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    data.pop("base", None)
    if isinstance(data.get("losses"), list):
        data["losses"] = {"use": data["losses"]}
    return _flatten("", data)


def noise_workdir(base: str, noise: float, levels: list[float]) -> str:
    """One workspace per noise level (the captions differ), the base workspace when there is one level."""
    if len(levels) == 1:
        return base
    return str(Path(base) / f"noise-{noise:g}")


def run_configs(study: StudyConfig, workdir: str) -> list[tuple[dict[str, Any], PipelineConfig]]:
    """(row keys, pipeline config) for every noise level x variant x seed, in that order."""
    from differ_common.perspectives import PERSPECTIVES

    out = []
    for noise in study.noise_levels:
        for variant in study.variants:
            extra = variant_overrides(variant)
            for seed in study.seeds_of(variant):
                cfg = study.pipeline.model_copy(
                    update={
                        "workdir": noise_workdir(workdir, noise, study.noise_levels),
                        "caption_noise": noise,
                        "perspectives": list(PERSPECTIVES),  # caption once for every variant's perspectives
                        "train_overrides": [
                            *study.pipeline.train_overrides,
                            *extra,
                            f"run.seed={seed}",
                            f"run.name={study.name}-{variant}-s{seed}",
                        ],
                    }
                )
                out.append(({"noise": noise, "variant": variant, "seed": seed}, cfg))
    return out


def metrics_rows(keys: dict[str, Any], metrics_json: str | Path, seconds: float, run_dir: str) -> list[dict]:
    """One row per protocol of a run's ``metrics.json``, with a pointer to its reproducibility record."""
    from differ_core.reproducibility import record_sha256

    m = json.loads(Path(metrics_json).read_text())
    record = m.get("reproduce")
    pointer = {
        "reproduce": str(Path(metrics_json).with_name("reproduce.json")) if record else None,
        "reproduce_sha256": record_sha256(record) if record else None,
    }
    return [
        {
            **keys,
            "protocol": proto,
            **{k: float(v[k]) for k in ("rank1", "rank5", "rank10", "mAP")},
            "epoch": m.get("epoch"),
            "selection": m.get("selection"),
            "seconds": round(seconds, 1),
            "run_dir": run_dir,
            **pointer,
        }
        for proto, v in m.get("protocols", {}).items()
    ]


def summarize(results) -> Any:  # results: pandas.DataFrame -> DataFrame
    """Mean, std and the per-seed values (in seed order) of Rank-1 and mAP per (noise, variant, protocol)."""
    import pandas as pd

    g = results.sort_values("seed", kind="stable").groupby(["noise", "variant", "protocol"], sort=False)
    summary = g[list(SUMMARY_METRICS)].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    for m in SUMMARY_METRICS:
        summary[f"{m}_per_seed"] = g[m].agg(list)
    summary["seed_list"] = g["seed"].agg(list)
    summary["seeds"] = g["seed"].nunique()
    summary["seconds_mean"] = g["seconds"].mean().round(1)
    summary = summary.reset_index()
    std_cols = [c for c in summary.columns if c.endswith("_std")]
    summary[std_cols] = summary[std_cols].fillna(0.0)
    return pd.DataFrame(summary)


def summary_markdown(summary) -> str:
    """One table per noise level: variants as rows, ``mean ± std`` (in %) per protocol and metric; then the
    per-seed values."""
    lines: list[str] = []
    for noise, part in summary.groupby("noise", sort=False):
        protocols = list(dict.fromkeys(part["protocol"]))
        header = ["variant"] + [f"{p} {m}" for p in protocols for m in ("R1", "mAP")] + ["seeds", "s/run"]
        lines += [f"### caption noise {noise:g}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for variant, rows in part.groupby("variant", sort=False):
            by_p = {r["protocol"]: r for _, r in rows.iterrows()}
            cells = [variant]
            for p in protocols:
                r = by_p.get(p)
                for m in SUMMARY_METRICS:
                    cells.append(
                        "-" if r is None else f"{100 * r[f'{m}_mean']:.1f} ± {100 * r[f'{m}_std']:.1f}"
                    )
            first = rows.iloc[0]
            cells += [str(int(first["seeds"])), f"{first['seconds_mean']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Per-seed values (caption noise {noise:g}, %):", ""]
        lines += ["| variant | protocol | seeds | " + " | ".join(SUMMARY_METRICS) + " |", "|---|---|---|"
                  + "---|" * len(SUMMARY_METRICS)]  # fmt: skip
        for _, r in part.iterrows():
            vals = [", ".join(f"{100 * v:.1f}" for v in r[f"{m}_per_seed"]) for m in SUMMARY_METRICS]
            seeds = ", ".join(str(int(x)) for x in r["seed_list"])
            lines.append(f"| {r['variant']} | {r['protocol']} | {seeds} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_summary(summary, out: str | Path) -> Path:
    """Grouped bars of Rank-1 and mAP per protocol (error bars = std over seeds), one panel per noise level."""
    import numpy as np
    from matplotlib.figure import Figure

    noises = list(dict.fromkeys(summary["noise"]))
    protocols = list(dict.fromkeys(summary["protocol"]))
    panels = [(n, p, m) for n in noises for p in protocols for m in SUMMARY_METRICS]
    cols = len(protocols) * len(SUMMARY_METRICS)
    fig = Figure(figsize=(3.6 * cols, 3.2 * len(noises)))  # not pyplot: the caller's backend is left alone
    axes = fig.subplots(len(noises), cols, squeeze=False)
    for i, (noise, proto, metric) in enumerate(panels):
        ax = axes[i // cols][i % cols]
        part = summary[(summary["noise"] == noise) & (summary["protocol"] == proto)]
        x = np.arange(len(part))
        ax.bar(
            x,
            100 * part[f"{metric}_mean"],
            yerr=100 * part[f"{metric}_std"],
            capsize=3,
            color=[
                "#888888" if v == "baseline" else "#2b7bba" if v == "differ" else "#9ecae1"
                for v in part["variant"]
            ],
        )
        ax.set_xticks(x, part["variant"], rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{proto} {metric} (noise {noise:g})", fontsize=8)
        ax.set_ylabel("%")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, format="png")
    return out


def write_study(results, out_dir: str | Path) -> dict[str, Path]:
    """results.parquet (every run), summary.parquet, summary.md and summary.png in ``out_dir``."""
    from differ_common.io import atomic_path, write_parquet_atomic, write_text_atomic

    out_dir = Path(out_dir)
    summary = summarize(results)
    paths = {
        "results": write_parquet_atomic(results, out_dir / "results.parquet"),
        "summary": write_parquet_atomic(summary, out_dir / "summary.parquet"),
        "markdown": write_text_atomic(out_dir / "summary.md", summary_markdown(summary)),
    }
    with atomic_path(out_dir / "summary.png") as tmp:
        plot_summary(summary, tmp)
    paths["plot"] = out_dir / "summary.png"
    return paths


def run_study(study: StudyConfig, run_pipeline_fn: Any, log: Any = print) -> dict[str, Any]:
    """Run every (noise, variant, seed) pipeline with ``run_pipeline_fn(cfg) -> result dict`` and write the table."""
    import pandas as pd

    from differ_common.errors import DifferError
    from differ_common.workspace import Workspace, resolve_workdir

    workdir = str(resolve_workdir(study.pipeline.workdir))
    rows: list[dict] = []
    runs = run_configs(study, workdir)
    for i, (keys, cfg) in enumerate(runs, 1):
        t0 = time.time()
        log(f"[{i}/{len(runs)}] noise={keys['noise']:g} variant={keys['variant']} seed={keys['seed']}")
        result = run_pipeline_fn(cfg)
        if not result.get("metrics"):
            raise DifferError(f"study run {keys} produced no metrics (is evaluate switched off?)")
        rows += metrics_rows(keys, result["metrics"], time.time() - t0, result.get("run_dir", ""))
    results = pd.DataFrame(rows)
    out_dir = Workspace.at(workdir).root / "studies" / study.name
    paths = write_study(results, out_dir)
    return {"out_dir": str(out_dir), **{k: str(v) for k, v in paths.items()}}
