"""`pretrain:<name>` in a pipeline: the pre-training runs first, once, and both halves reach the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from differ_common.errors import ConfigError
from flows.config import PipelineConfig
from flows.pipeline import differ_pipeline
from flows.report import run_flow

pytestmark = pytest.mark.slow


def _status(result: dict) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in result["stages"]}


def test_pipeline_pretrains_once_and_hands_on_both_towers(tmp_path, tiny_config):
    name = f"pretrain:{tiny_config}"
    cfg = PipelineConfig(
        workdir=str(tmp_path / "w"),
        manifest_options={"size": "tiny"},
        train_config="configs/synthcc_tiny.yaml",
        encoder=name,
        train_overrides=[f"model.pretrained={name}", "model.backbone=regnetx_002", "schedule.epochs=1"],
        perspectives=["biometrics", "hairstyle", "clothing"],
        plots=0,
    )
    first = run_flow(differ_pipeline, cfg)
    assert _status(first)["pretrain"] == "recomputed"
    folder = Path(first["pretrain"])
    run_cfg = yaml.safe_load((Path(first["run_dir"]) / "config.yaml").read_text())
    assert (
        run_cfg["text"]["encoder"]
        == f"open_clip:{folder}/tiny-clip.json@{folder}/open_clip_model.safetensors"
    )
    assert run_cfg["model"]["pretrained"] == str(folder / "visual_trunk.safetensors")
    feats = Path(first["features"])
    assert (feats / "meta.json").is_file() and yaml.safe_load((feats / "meta.json").read_text())["dim"] == 32

    again = run_flow(differ_pipeline, cfg)
    assert set(_status(again).values()) == {"reused (cached)"}


def test_standalone_training_refuses_an_unresolved_name():
    from differ_core.config import load_config
    from differ_core.config_files import resolve_config
    from differ_core.training import stage_names_problem

    cfg = load_config(resolve_config("synthcc"), [])
    with pytest.raises(
        ConfigError, match=r"text.encoder: 'pretrain:synthcc_start' names a pre-trained start"
    ):
        stage_names_problem(cfg)


def test_a_long_encoder_spec_gets_a_short_distinct_folder_name():
    from differ_common.workspace import slug

    a = (
        "open_clip:"
        + "/very/long/workspace" * 8
        + "/pretrain/x-1/x.json@"
        + "/w" * 20
        + "/open_clip_model.safetensors"
    )
    b = a.replace("x-1", "x-2")
    assert len(slug(a)) <= 100 and slug(a) != slug(b)
    assert slug(a).startswith("open_clip-") and slug(a).endswith("open_clip_model.safetensors")
    assert slug("open_clip:EVA02-B-16@/ckpt/x.pt") == "open_clip-EVA02-B-16-ckpt-x.pt"  # short ones unchanged
