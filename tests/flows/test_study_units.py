"""The study's pieces that need no training: overlays as overrides, the summary table, markdown and plot."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from differ_common.errors import ConfigError
from differ_core.config import apply_overrides
from flows import study
from flows.config import PipelineConfig
from flows.study import StudyConfig


@pytest.fixture
def ablations(tmp_path, monkeypatch):
    d = tmp_path / "ablations"
    d.mkdir()
    (d / "baseline.yaml").write_text("base: ../synthcc.yaml\nlosses: [id, triplet]\n")
    (d / "clothing_only.yaml").write_text(
        "text:\n  perspectives: [biometrics, clothing]\nlosses:\n  grl_alpha: 0.5\n"
    )
    monkeypatch.setattr(study, "_overlays", lambda: {p.stem: p for p in sorted(d.glob("*.yaml"))})
    return d


def test_overlay_becomes_overrides_without_its_base(ablations):
    assert study.variant_overrides("differ") == []
    over = study.variant_overrides("baseline")
    assert over == ["losses.use=[id, triplet]"]
    merged = apply_overrides({"losses": {"use": ["id", "triplet", "bio"], "id_weight": 2.0}}, over)
    assert merged["losses"] == {"use": ["id", "triplet"], "id_weight": 2.0}  # weights kept
    over = study.variant_overrides("clothing_only")
    assert apply_overrides({}, over) == {
        "text": {"perspectives": ["biometrics", "clothing"]},
        "losses": {"grl_alpha": 0.5},
    }
    with pytest.raises(ConfigError, match="no such ablation overlay"):
        study.variant_overrides("nope")
    assert study.available_variants() == ["differ", "baseline", "clothing_only"]


def test_run_configs_cover_noise_variants_seeds(ablations, tmp_path):
    cfg = study.StudyConfig(
        name="s",
        pipeline=PipelineConfig(),
        variants=["baseline", "differ"],
        seeds=[0, 1],
        noise_levels=[0.0, 0.2],
    )
    runs = study.run_configs(cfg, str(tmp_path))
    assert len(runs) == 8
    keys, pc = runs[-1]
    assert keys == {"noise": 0.2, "variant": "differ", "seed": 1}
    assert pc.caption_noise == 0.2 and pc.workdir.endswith("noise-0.2") and len(pc.perspectives) == 6
    assert pc.train_overrides[-2:] == ["run.seed=1", "run.name=s-differ-s1"]
    with pytest.raises(ValueError, match="unknown variants"):
        study.StudyConfig(variants=["differ", "mystery"])


def test_variant_seeds_give_one_variant_more_seeds(ablations, tmp_path):
    cfg = study.StudyConfig(
        name="s", variants=["baseline", "differ"], seeds=[0, 1], variant_seeds={"differ": [0, 1, 2, 3]}
    )
    runs = study.run_configs(cfg, str(tmp_path))
    assert [(k["variant"], k["seed"]) for k, _ in runs] == [
        ("baseline", 0), ("baseline", 1), ("differ", 0), ("differ", 1), ("differ", 2), ("differ", 3),
    ]  # fmt: skip
    assert runs[-1][1].train_overrides[-2:] == ["run.seed=3", "run.name=s-differ-s3"]
    with pytest.raises(ValueError, match="does not run: \\['clothing_only'\\]"):
        study.StudyConfig(variants=["differ"], variant_seeds={"clothing_only": [0]})
    with pytest.raises(ValueError, match="at least one seed"):
        study.StudyConfig(variants=["differ"], variant_seeds={"differ": []})


def test_variant_seeds_flag_is_parsed_and_bad_values_are_named():
    from flows.commands.study import _variant_seeds

    assert _variant_seeds(["differ=0,1,2,3,4", "baseline=5"]) == {"differ": [0, 1, 2, 3, 4], "baseline": [5]}
    with pytest.raises(ConfigError, match="expected VARIANT=SEEDS"):
        _variant_seeds(["differ"])
    with pytest.raises(ConfigError, match="comma-separated integers"):
        _variant_seeds(["differ=a,b"])


def _results() -> pd.DataFrame:
    rows = []
    for variant, base in (("baseline", 0.4), ("differ", 0.6)):
        for seed in (0, 1, 2):
            for proto, off in (("general", 0.3), ("clothes_changing", 0.0)):
                v = base + off + 0.01 * seed
                rows.append(
                    dict(
                        noise=0.0,
                        variant=variant,
                        seed=seed,
                        protocol=proto,
                        rank1=v,
                        rank5=v,
                        rank10=v,
                        mAP=v - 0.1,
                        seconds=10.0 + seed,
                    )
                )
    return pd.DataFrame(rows)


def test_summary_mean_std_markdown_and_plot(tmp_path):
    summary = study.summarize(_results())
    row = summary[(summary.variant == "differ") & (summary.protocol == "clothes_changing")].iloc[0]
    assert row["rank1_mean"] == pytest.approx(0.61) and row["rank1_std"] == pytest.approx(0.01)
    assert row["mAP_mean"] == pytest.approx(0.51) and row["seeds"] == 3 and row["seconds_mean"] == 11.0
    md = study.summary_markdown(summary)
    assert "| differ | 91.0 ± 1.0 | 81.0 ± 1.0 | 61.0 ± 1.0 | 51.0 ± 1.0 | 3 | 11 |" in md
    # and the values behind each mean, in seed order (shuffled rows must not reorder them)
    md = study.summary_markdown(study.summarize(_results().sample(frac=1.0, random_state=3)))
    assert "| differ | clothes_changing | 0, 1, 2 | 60.0, 61.0, 62.0 | 50.0, 51.0, 52.0 |" in md
    paths = study.write_study(_results(), tmp_path / "out")
    assert pd.read_parquet(paths["summary"]).shape[0] == 4
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_result_rows_point_at_each_runs_record(tmp_path):
    from differ_core.reproducibility import record_sha256

    record = {"format": 1, "training": {"run": "r"}, "evaluation": {"seed": 0}}
    entry = {"rank1": 0.5, "rank5": 0.6, "rank10": 0.7, "mAP": 0.4}
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"protocols": {"general": entry}, "epoch": 1, "reproduce": record}))
    (row,) = study.metrics_rows({"variant": "differ", "seed": 0}, metrics, 1.0, str(tmp_path))
    assert row["reproduce"] == str(tmp_path / "reproduce.json")
    assert row["reproduce_sha256"] == record_sha256(record)


def test_study_deployments_run_the_documented_study_and_match_prefect_yaml():
    """`differ-study/synthcc` and `/synthcc-paper` (served and in prefect.yaml) are study v3 of docs/results.md."""
    from pathlib import Path

    from flows.deployments import STUDIES

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in spec["deployments"] if d["entrypoint"].endswith(":differ_study")}
    assert set(declared) == set(STUDIES) == {"synthcc", "synthcc-paper"}
    for name, make in STUDIES.items():
        served = make().model_dump(mode="json")
        assert StudyConfig(**declared[name]["parameters"]["study"]).model_dump(mode="json") == served
        assert served["pipeline"]["encoder"] == "pretrain:synthcc_start"
        assert served["pipeline"]["manifest_options"] == {"size": "small"} and served["seeds"] == [0, 1, 2]
    tuned, paper = STUDIES["synthcc"](), STUDIES["synthcc-paper"]()
    assert tuned.variants == [
        "baseline",
        "bio_only",
        "nbdetach_only",
        "differ",
        "clothing_only",
        "official_head",
    ]
    assert tuned.variant_seeds == {"baseline": [0, 1, 2, 3, 4], "differ": [0, 1, 2, 3, 4]}
    assert paper.variants == ["baseline", "differ"] and paper.variant_seeds == {}
    assert paper.pipeline.train_config.endswith("synthcc_study_paper.yaml")
