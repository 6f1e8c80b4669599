"""Shipped configs, overlays, config errors and the ``differ train`` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from differ_common.errors import ConfigError
from differ_core.config import load_config

from .conftest import toy_config

CONFIGS = Path(__file__).resolve().parents[2] / "differ_core" / "configs"


PIPELINES = CONFIGS / "pipelines"  # pipeline options (flows.config.PipelineConfig), not training configs
PRETRAIN = (
    CONFIGS / "pretrain"
)  # CLIP-style pre-training (differ_core.clip_pretrain.config), not training configs
NOT_TRAINING = (PIPELINES, PRETRAIN)


def _training_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if not any(d in p.parents for d in NOT_TRAINING))


@pytest.mark.parametrize("path", _training_configs(), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.text.perspectives[0] == "biometrics"


def test_paper_settings_per_dataset():
    ltcc, prcc, celeb = (load_config(CONFIGS / f) for f in ("ltcc.yaml", "prcc.yaml", "celeb_light.yaml"))
    for c in (ltcc, prcc, celeb):
        assert c.model.backbone == "eva02_large_patch14_clip_224" and tuple(c.data.img_size) == (224, 224)
        o = c.optim
        assert (o.name, o.momentum, o.weight_decay, o.bias_lr_factor) == ("sgd", 0.9, 0.05, 2)
        assert (c.schedule.epochs, c.schedule.warmup_epochs, c.run.amp) == (60, 20, "fp16")
        assert c.losses.logit_scale == 1.0 and c.model.lambda_cam == 3.0
    assert ltcc.text.non_bio == ["hairstyle", "clothing"] and ltcc.text.encoder == "open_clip:EVA02-B-16"
    assert (ltcc.sampler.P, ltcc.sampler.K, ltcc.optim.lr) == (4, 2, 2e-6)
    assert prcc.text.non_bio == ["hairstyle"] and prcc.text.bio_source == "summary"
    assert (prcc.sampler.P, prcc.sampler.K, prcc.text.encoder) == (4, 4, "open_clip:EVA02-L-14")
    assert celeb.text.non_bio == ["clothing"] and celeb.optim.lr == 2e-5
    assert celeb.text.encoder == "open_clip:EVA02-E-14"


def test_ablation_overlays_change_only_what_they_name():
    base = load_config(CONFIGS / "synthcc.yaml")
    baseline = load_config(CONFIGS / "ablations" / "baseline.yaml")
    assert baseline.losses.use == ["id", "triplet"] and not baseline.needs_text
    assert baseline.losses.label_smoothing == base.losses.label_smoothing  # the shorthand keeps the weights
    assert baseline.model == base.model and baseline.optim == base.optim
    assert load_config(CONFIGS / "ablations" / "bio_only.yaml").losses.use == ["id", "triplet", "bio"]
    nb_only = load_config(CONFIGS / "ablations" / "nbdetach_only.yaml")
    assert nb_only.losses.use == ["id", "triplet", "nbdetach"]
    assert load_config(CONFIGS / "ablations" / "clothing_only.yaml").text.non_bio == ["clothing"]
    assert len(load_config(CONFIGS / "ablations" / "all_nonbio.yaml").text.non_bio) == 5
    assert load_config(CONFIGS / "synthcc.yaml", ["losses=[id,triplet]"]).losses.use == ["id", "triplet"]


def test_config_errors_name_the_key_and_what_is_allowed(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": str(CONFIGS / "synthcc.yaml"), "model": {"backbon": "resnet18"}}))
    with pytest.raises(ConfigError, match=r"unknown key 'model.backbon' \(allowed keys: backbone, "):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"losses.use.*'id', 'triplet', 'bio' or 'nbdetach'"):
        load_config(CONFIGS / "synthcc.yaml", ["losses=[id,arcface]"])
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        load_config(CONFIGS / "synthcc.yaml", ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="unknown perspectives"):
        load_config(CONFIGS / "synthcc.yaml", ["text.perspectives=[biometrics,shoes]"])


def test_differ_train_command(toy, tmp_path, capsys):
    from flows.cli import main

    cfg = toy_config(toy, tmp_path / "run", schedule={"epochs": 1}, run={"val_ids": 0.0})
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(cfg))
    assert main(["--workdir", str(toy["work"]), "train", "--config", str(f), "sampler.P=3"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: " + str(tmp_path / "run" / "checkpoints" / "last.pt") in out
    assert "P: 3" in (tmp_path / "run" / "config.yaml").read_text()
    assert main(["train", "--config", str(f), "model.lambda=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'model.lambda'" in err and "lambda_cam" in err


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_options_file_validates(path):
    from flows.config import load_pipeline_config

    assert load_pipeline_config(path).dataset == "synthcc"


@pytest.mark.parametrize("path", sorted(PRETRAIN.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pretrain_config_validates(path):
    from differ_core.clip_pretrain.config import load_pretrain_config

    cfg = load_pretrain_config(path)
    assert cfg.train.epochs > 0


EXPERIMENTS = Path(__file__).resolve().parents[2] / "docs" / "experiments"  # records, outside the package


def _is_pretrain(path: Path) -> bool:
    return "people" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads_through_its_documented_command(path):
    from differ_core.clip_pretrain.config import load_pretrain_config, resolve_pretrain_config
    from differ_core.config_files import resolve_config

    rel = str(
        path.relative_to(EXPERIMENTS.parents[1])
    )  # docs/experiments/<name>.yaml, as docs/results.md cites it
    if _is_pretrain(path):  # `differ pretrain docs/experiments/<name>.yaml`
        assert resolve_pretrain_config(path) == path.resolve()
        assert load_pretrain_config(path).train.epochs > 0
    else:  # `differ train|run|study --config docs/experiments/<name>.yaml`
        assert load_config(resolve_config(path)).text.perspectives[0] == "biometrics"
    assert rel.startswith("docs/experiments/")


def test_experiment_configs_left_the_package():
    shipped = {p.name for p in CONFIGS.rglob("*.yaml")}
    assert shipped.isdisjoint(p.name for p in EXPERIMENTS.glob("*.yaml"))
    assert (PRETRAIN / "synthcc_start.yaml").is_file() and (PRETRAIN / "synthcc_clip.yaml").is_file()


def test_a_config_outside_the_package_takes_its_base_from_beside_it_else_from_the_packaged_configs(tmp_path):
    shipped = load_config(CONFIGS / "synthcc.yaml")
    (tmp_path / "by_name.yaml").write_text("base: synthcc.yaml\nschedule: {epochs: 3}\n")
    (tmp_path / "by_short_name.yaml").write_text("base: ablations/baseline\n")
    by_name = load_config(tmp_path / "by_name.yaml")
    assert by_name.schedule.epochs == 3 and by_name.model == shipped.model
    assert load_config(tmp_path / "by_short_name.yaml").losses.use == ["id", "triplet"]
    (tmp_path / "synthcc.yaml").write_text("base: synthcc_tiny\noptim: {lr: 0.123}\n")  # beside it wins
    assert load_config(tmp_path / "by_name.yaml").optim.lr == 0.123 != shipped.optim.lr
    with pytest.raises(ConfigError, match="neither a file beside it"):
        (tmp_path / "lost.yaml").write_text("base: no_such_config.yaml\n")
        load_config(tmp_path / "lost.yaml")
    # the moved study-v1 pre-training overlay finds its base beside it, in docs/experiments/
    pre = load_config(EXPERIMENTS / "synthcc_pretrain.yaml")
    assert (
        pre.losses.use == ["id", "triplet"]
        and pre.model == load_config(EXPERIMENTS / "synthcc_study_v1.yaml").model
    )
