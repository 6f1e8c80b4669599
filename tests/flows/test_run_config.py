"""One resolved config (issue 29, item 1): the training YAML is read once per run, every stage reads the carried
``TrainConfig``, and `differ run` and `differ train` settle the shared settings by the same precedence rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import differ_core.config
import flows.cli
import flows.pipeline
from differ_common.errors import ConfigError
from differ_core.config import read_yaml_with_bases
from differ_core.config_files import resolve_config
from flows.cli import main
from flows.commands import run as run_command
from flows.commands import train as train_command


@pytest.fixture
def yaml_reads(monkeypatch):
    """Every read of a training YAML (with its ``base:`` chain) in this test."""
    reads: list[str] = []
    real = differ_core.config.read_yaml_with_bases

    def counting(path, _seen=()):
        if not _seen:  # the top of a chain: one read of one config
            reads.append(str(path))
        return real(path, _seen)

    monkeypatch.setattr(differ_core.config, "read_yaml_with_bases", counting)
    return reads


@pytest.fixture
def stages(monkeypatch):
    """`differ run`'s flow with every stage replaced by a recorder of the run it was handed (nothing is built)."""
    seen: list = []

    def record(ctx, *args, **kwargs):
        seen.append(ctx.run)

    for name in (
        "manifest_step",
        "caption_step",
        "summarize_step",
        "encode_step",
        "train_step",
        "evaluate_step",
    ):
        monkeypatch.setattr(flows.pipeline, name, record)
    monkeypatch.setattr(flows.pipeline, "resolve", lambda ctx: None)  # the shipped start is another test's
    monkeypatch.setattr(flows.pipeline, "record_pipeline", lambda *a: None)
    monkeypatch.setattr(flows.pipeline, "_finish", lambda ctx, title: {"workdir": ctx.workdir, "stages": []})
    monkeypatch.setattr("flows.report.print_result", lambda *a, **k: None)
    return seen


@pytest.fixture
def trained(monkeypatch):
    """`differ train` with the training replaced by a recorder of the config it was handed."""
    seen: list = []

    def fake_train(cfg, resume_anyway=False):
        seen.append(cfg)
        return Path(cfg.data.workdir) / "runs" / "r"

    monkeypatch.setattr("differ_core.training.train", fake_train)
    monkeypatch.setattr(
        "flows.stages.pretrain.resolve_outside_flow", lambda run, log=print: run
    )  # the shipped start is another test's
    return seen


def _tiny_with(tmp_path: Path, **data: str) -> str:
    """configs/synthcc_tiny.yaml flattened into a file of its own, with ``data`` keys set."""
    cfg = read_yaml_with_bases(resolve_config("configs/synthcc_tiny.yaml"))
    cfg.setdefault("data", {}).update(data)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_differ_run_reads_the_training_yaml_once_and_every_stage_gets_that_config(
    tmp_path, yaml_reads, stages
):
    argv = ["--workdir", str(tmp_path / "w"), "run", "--config", "configs/synthcc_tiny.yaml", "--no-preflight",
            "optim.lr=0.005"]  # fmt: skip
    assert main(argv) == 0
    assert len(yaml_reads) == 1, yaml_reads
    assert len(stages) == 6 and all(run is stages[0] for run in stages)  # one object, carried
    train = stages[0].train
    assert train.optim.lr == 0.005 and train.data.workdir == str(tmp_path / "w")
    # with the pre-flight: still one read (it checks the resolved run)
    yaml_reads.clear()
    assert main([a for a in argv if a != "--no-preflight"]) == 0
    assert len(yaml_reads) == 1, yaml_reads


def test_a_flow_given_a_pipeline_config_reads_its_training_yaml_once(tmp_path, yaml_reads, stages):
    from flows.config import PipelineConfig
    from flows.report import run_flow

    cfg = PipelineConfig(workdir=str(tmp_path / "w"), train_config="configs/synthcc_tiny.yaml")
    run_flow(flows.pipeline.differ_pipeline, cfg)
    assert len(yaml_reads) == 1 and stages[0].train.data.dataset == "synthcc"


CASES = {  # (--workdir, data.workdir override, data.workdir in the YAML) -> the workspace, or an error
    "flag over the YAML": ("flag", None, "yaml", "flag"),
    "override over the YAML": (None, "override", "yaml", "override"),
    "the YAML over the default": (None, None, "yaml", "yaml"),
    "the default": (None, None, None, "default"),
    "flag and the same override": ("flag", "flag", "yaml", "flag"),
    "flag and another override": ("flag", "override", None, ConfigError),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_differ_run_and_differ_train_settle_the_workspace_by_one_rule(
    case, tmp_path, monkeypatch, stages, trained
):
    flag, override, in_yaml, want = CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIFFER_WORKDIR", raising=False)
    where = {"flag": tmp_path / "flag", "override": tmp_path / "override", "yaml": tmp_path / "yaml",
             "default": tmp_path / "differ-work"}  # fmt: skip
    config = _tiny_with(tmp_path, **({"workdir": str(where[in_yaml])} if in_yaml else {}))
    head = ["--workdir", str(where[flag])] if flag else []
    tail = [f"data.workdir={where[override]}"] if override else []
    if want is ConfigError:
        for command, module in (("run", run_command), ("train", train_command)):
            args = flows.cli.build_parser().parse_args([*head, command, "--config", config, *tail])
            with pytest.raises(ConfigError, match="give the value once"):
                module.resolved_run(args)
        return
    assert main([*head, "run", "--config", config, "--no-preflight", *tail]) == 0
    assert main([*head, "train", "--config", config, *tail]) == 0
    run_cfg, train_cfg = stages[0].train, trained[0]
    assert run_cfg.data.workdir == train_cfg.data.workdir == str(where[want])
    assert run_cfg == train_cfg  # every other setting resolves the same too
