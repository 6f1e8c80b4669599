"""`differ run`: training overrides reach every stage, and the pre-flight reports every problem in seconds with
nothing written (issue 12, item 4; docs/design.md §4)."""

from __future__ import annotations

import json
import time

import pytest

from differ_common.errors import ConfigError
from flows.cli import build_parser, main
from flows.commands.run import resolved_run
from flows.config import SHARED_KEYS, PipelineConfig
from flows.preflight import pipeline_problems
from flows.run_config import pipeline_config_for_training
from tests.manifests.manifest_trees import make_ltcc

ENC = "open_clip:EVA02-B-16@{ckpt}"


def _args(tmp_path, *argv: str):
    return build_parser().parse_args(["--workdir", str(tmp_path / "w"), "run", *argv])


def _documented_ltcc(tmp_path, encoder_ckpt, weights) -> list[str]:
    """The LTCC `differ run` of docs/gpu_recipe.md §4, on a tiny LTCC tree and the given files."""
    make_ltcc(tmp_path / "data")
    return [
        "--workdir", str(tmp_path / "w"), "run", "--config", "configs/ltcc.yaml", "--root", str(tmp_path / "data"),
        "--captioner", f"hf:{_vlm_dir(tmp_path)}", "--processes", "2", f"model.pretrained={weights}",
        f"text.encoder={ENC.format(ckpt=encoder_ckpt)}",
    ]  # fmt: skip


def _vlm_dir(tmp_path):
    d = tmp_path / "llava"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": {}}))
    return d


def _file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"w")
    return path


def test_every_shared_training_key_sets_the_stage_that_reads_it(tmp_path):
    overrides = {
        "data.dataset": ("prcc", "prcc"),
        "text.encoder": ("open_clip:EVA02-L-14@/c/l14.bin", "open_clip:EVA02-L-14@/c/l14.bin"),
        "text.perspectives": ("[biometrics,clothing]", ["biometrics", "clothing"]),
        "data.workdir": (str(tmp_path / "w"), str(tmp_path / "w")),
        "text.caption_targets": ("every_k", "every_k"),
        "text.caption_every_k": ("4", 4),
    }
    assert set(overrides) == set(SHARED_KEYS)  # a new shared key needs its case here
    argv = ["--config", "configs/ltcc.yaml", *(f"{k}={v}" for k, (v, _) in overrides.items())]
    run = resolved_run(_args(tmp_path, *argv))
    cfg, train = run.pipeline, run.train.model_dump(mode="json")
    for key, (_, want) in overrides.items():
        section, name = key.split(".")
        assert getattr(cfg, SHARED_KEYS[key]) == want, key  # the pipeline stage's field
        assert train[section][name] == want, key  # and training
    # without overrides the training YAML names them
    plain = resolved_run(_args(tmp_path, "--config", "configs/ltcc.yaml")).pipeline
    assert (plain.dataset, plain.encoder, plain.perspectives) == (
        "ltcc", "open_clip:EVA02-B-16", ["biometrics", "hairstyle", "clothing"],
    )  # fmt: skip


def test_new_run_options_reach_the_pipeline_and_every_option_has_help(tmp_path):
    run = resolved_run(
        _args(tmp_path, "--config", "configs/ltcc.yaml", "--encoder", "open_clip:EVA02-L-14@/c/l14.bin",
              "--caption-batch-size", "32", "--dask-workers", "4")
    )  # fmt: skip
    cfg = run.pipeline
    assert (cfg.encoder, cfg.caption_batch_size, cfg.dask_workers) == (
        "open_clip:EVA02-L-14@/c/l14.bin",
        32,
        4,
    )
    assert run.train.text.encoder == "open_clip:EVA02-L-14@/c/l14.bin"
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    bare = [a.dest for a in run_parser._actions if not a.help and a.dest != "help"]
    assert bare == []


def test_contradictions_between_an_option_and_an_override_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"encoder is 'minilm' but the training override text.encoder=x"):
        resolved_run(
            _args(tmp_path, "--config", "configs/ltcc.yaml", "--encoder", "minilm", "text.encoder=x")
        )
    with pytest.raises(ConfigError, match=r"override data.workdir=.*give the value once"):
        resolved_run(_args(tmp_path, "--config", "configs/ltcc.yaml", f"data.workdir={tmp_path / 'other'}"))
    # a pipeline YAML may caption more perspectives than training uses, never fewer
    yml = tmp_path / "p.yaml"
    yml.write_text("perspectives: [biometrics, hairstyle, clothing, pose]\n")
    cfg = pipeline_config_for_training(yml, "configs/ltcc.yaml", ["text.perspectives=[biometrics,clothing]"])
    assert cfg.perspectives == ["biometrics", "hairstyle", "clothing", "pose"]
    yml.write_text("perspectives: [biometrics, hairstyle]\n")
    with pytest.raises(ConfigError, match=r"needs \['clothing'\] captioned"):
        pipeline_config_for_training(yml, "configs/ltcc.yaml", ["text.perspectives=[biometrics,clothing]"])
    # built directly (Prefect UI, deployments): the override sets the field too
    assert PipelineConfig(train_overrides=["text.encoder=open_clip:ViT-B-32@/c.bin"]).encoder.endswith(
        "/c.bin"
    )


def test_documented_ltcc_run_with_a_missing_encoder_checkpoint_fails_fast_and_writes_nothing(
    tmp_path, capsys
):
    weights = _file(tmp_path / "ckpt" / "eva02_large.safetensors")
    argv = _documented_ltcc(tmp_path, tmp_path / "ckpt" / "no-such-eva02_b16.bin", weights)
    t0 = time.perf_counter()
    assert main(argv) == 2
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == "differ run: error: pre-flight found 1 problem(s); nothing was written:"
    assert "text.encoder:" in lines[1] and "no-such-eva02_b16.bin not found" in lines[1]
    assert len(lines) == 2 and seconds < 10
    assert not (tmp_path / "w").exists()  # no manifest, no caption, no Prefect result


def test_preflight_lists_every_problem_one_line_each(tmp_path):
    cfg = pipeline_config_for_training(
        None,
        "configs/ltcc.yaml",
        [
            "text.encoder=open_clip:EVA02-B-16@/no/b16.bin",
            "model.pretrained=/no/eva.safetensors",
            "text.dim=768",
        ],
        workdir=str(tmp_path / "w"),
        root=str(tmp_path / "no-data"),
        captioner="hf:/no/llava",
        summarizer="hf:/no/llm",
    )
    problems = pipeline_problems(cfg, "configs/ltcc.yaml")
    heads = [p.split(":", 1)[0] for p in problems]
    assert heads == ["--root", "--captioner", "--summarizer", "text.encoder", "model.pretrained", "text.dim"]
    assert (
        "text.dim: configs/ltcc.yaml expects 768-d text features but" in problems[-1]
        and "512-d" in problems[-1]
    )
    assert all("\n" not in p for p in problems)
    # the configs' default of no backbone weights is refused for a published dataset; `random` asks for it
    cfg = cfg.model_copy(update={"train_overrides": ["text.encoder=open_clip:EVA02-B-16@/no/b16.bin"]})
    assert any(p.startswith("model.pretrained: configs/ltcc.yaml trains ltcc from random") for p in
               pipeline_problems(cfg, "configs/ltcc.yaml"))  # fmt: skip


def test_preflight_passes_when_everything_is_in_place(tmp_path):
    make_ltcc(tmp_path / "data")
    ckpt = _file(tmp_path / "ckpt" / "b16.bin")
    cfg = pipeline_config_for_training(
        None,
        "configs/ltcc.yaml",
        [f"text.encoder={ENC.format(ckpt=ckpt)}", "model.pretrained=random"],
        workdir=str(tmp_path / "w"),
        root=str(tmp_path / "data"),
        captioner=f"hf:{_vlm_dir(tmp_path)}",
    )
    assert pipeline_problems(cfg) == []
    # features of the same spec already on disk with another dimension would fail the encode stage hours later
    meta = tmp_path / "w" / "features" / "ltcc"
    from differ_common.workspace import Workspace

    meta = Workspace.at(tmp_path / "w").features_dir("ltcc", cfg.encoder) / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"dim": 768}))
    assert [p[:40] for p in pipeline_problems(cfg)] == [f"text.encoder: {cfg.encoder}"[:40]]
    assert "gives 512-d vectors but" in pipeline_problems(cfg)[0]
