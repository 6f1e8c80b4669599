"""Pre-flight of `differ run`: every file and spec the pipeline will need, checked before anything is written.

Checks files and specs only (no model is loaded, nothing is imported that loads one), so it takes well under a
second, and reports *every* problem, one line each: the setting, what is wrong, the fix. The text dimension of an
encoder is read from its config (open_clip: the architecture JSON's ``embed_dim``; transformers: ``config.json``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from differ_common.errors import ConfigError, DifferError
from differ_core.config import TrainConfig
from flows.config import PipelineConfig
from flows.run_config import ResolvedRun, resolve_pipeline


def check_pipeline(run: PipelineConfig | ResolvedRun, source: str | None = None) -> None:
    """Raise one ConfigError listing every problem of :func:`pipeline_problems` (nothing is written)."""
    problems = pipeline_problems(run, source)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"pre-flight found {len(problems)} problem(s); nothing was written:\n{lines}")


def pipeline_problems(run: PipelineConfig | ResolvedRun, source: str | None = None) -> list[str]:
    """Every problem the run would meet, one line each (a ``PipelineConfig`` is resolved first: a training config
    that does not resolve is one of the problems); ``source`` names the training config."""
    from differ_common.workspace import Workspace, resolve_workdir

    problems: list[str] = []
    if isinstance(run, PipelineConfig):
        try:
            run = resolve_pipeline(run)
        except DifferError as exc:
            cfg, train = run, None
            problems.append(f"training config: {exc}")
        else:
            cfg, train = run.pipeline, run.train
    else:
        cfg, train = run.pipeline, run.train
    workdir = resolve_workdir(cfg.workdir)
    generated = _dataset_problems(cfg, problems)
    _captioner_problems(cfg, generated, problems)
    _summarizer_problems(cfg.summarizer, problems)
    if cfg.prompts is not None and not Path(cfg.prompts).expanduser().is_file():
        problems.append(f"--prompts: {cfg.prompts} not found; pass an existing prompts YAML or leave it out")
    dim = _encoder_problems(cfg.encoder, problems)
    meta = Workspace.at(workdir).features_dir(cfg.dataset, cfg.encoder) / "meta.json"
    have = _json(meta).get("dim") if meta.is_file() else None
    if dim and have and have != dim:
        problems.append(
            f"text.encoder: {cfg.encoder} gives {dim}-d vectors but {meta.parent} holds {have}-d features of the "
            f"same spec; delete {meta.parent} or use another encoder spec"
        )
    if train is not None:
        _training_problems(cfg, train, dim, source, problems)
    if cfg.task_runner == "dask" and importlib.util.find_spec("prefect_dask") is None:
        problems.append("--task-runner dask: prefect-dask is not installed; pip install -e '.[dask]'")
    return problems


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _layout_markers(layout: str) -> tuple[str, list[str]]:
    """``LTCC_ReID/{train,query,test}/...`` → (``LTCC_ReID``, [``train``, ``query``, ``test``])."""
    parts = layout.split()[0].split("/")
    if len(parts) < 2:
        return "", []
    m = re.fullmatch(r"(.*)\{(.*)\}(.*)", parts[1])
    names = [f"{m.group(1)}{x}{m.group(3)}" for x in m.group(2).split(",")] if m else [parts[1]]
    return parts[0], names


def _dataset_problems(cfg: PipelineConfig, problems: list[str]) -> bool:
    """Dataset name and root; returns whether the dataset is generated (SynthCC)."""
    from data_manifests.registry import dataset_info

    try:
        info = dataset_info(cfg.dataset)
    except ConfigError as exc:
        problems.append(f"data.dataset: {exc}")
        return False
    if info.generated:
        return True
    top, markers = _layout_markers(info.layout)
    expected = f"{top}/" if top else info.layout
    if not cfg.root:
        problems.append(
            f"--root: {info.name} needs its dataset root; pass --root, the folder that contains {expected}"
        )
        return False
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        what = "not found" if not root.exists() else "not a folder"
        problems.append(f"--root: {root} {what}; pass the folder that contains {expected} ({info.layout})")
    elif markers and not any((b / m).exists() for b in (root / top, root) for m in markers):
        problems.append(
            f"--root: {root} does not hold the {info.name} layout ({info.layout}); pass the folder that contains "
            f"{expected}"
        )
    return False


def _captioner_problems(cfg: PipelineConfig, generated: bool, problems: list[str]) -> None:
    from captions.backends import CAPTIONERS, check_model_dir

    try:
        entry, loc = CAPTIONERS.parse(cfg.captioner)
    except ConfigError as exc:
        problems.append(f"--captioner: {exc}")
        return
    if entry.name == "attributes":
        if not generated:
            problems.append(
                f"--captioner: attributes writes SynthCC's ground truth and cannot caption {cfg.dataset}; pass "
                "--captioner hf:<local VLM dir> or vllm:<local VLM dir>"
            )
        return
    if cfg.caption_noise:
        problems.append(
            f"caption_noise: applies to the attributes captioner only, not {cfg.captioner!r}; set 0"
        )
    if entry.name == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append("--captioner vllm: vllm is not installed; pip install -e '.[vllm]' or use hf:<dir>")
    try:
        check_model_dir(cfg.captioner, loc)
    except ConfigError as exc:
        problems.append(f"--captioner: {exc}")


def _summarizer_problems(spec: str, problems: list[str]) -> None:
    from captions.backends import check_model_dir

    kind, _, loc = spec.partition(":")
    if kind == "extractive" and not loc:
        return
    if kind != "hf" or not loc:
        problems.append(
            f"--summarizer: unknown summarizer {spec!r}; use extractive or hf:<local causal LM dir>"
        )
        return
    try:
        check_model_dir(spec, loc, kind="lm")
    except ConfigError as exc:
        problems.append(f"--summarizer: {exc}")


def _open_clip_config(arch: str, ckpt: Path | None) -> tuple[dict[str, Any] | None, bool]:
    """(model config JSON of ``arch``, whether it is a local file), without importing open_clip."""
    p = Path(arch).expanduser()
    if arch.endswith(".json"):
        return (_json(p) if p.is_file() else None), True
    if p.is_dir() and (p / "open_clip_config.json").is_file():
        return _json(p / "open_clip_config.json").get("model_cfg", {}), True
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        builtin = Path(next(iter(spec.submodule_search_locations))) / "model_configs" / f"{arch}.json"
        if builtin.is_file():
            return _json(builtin), False
    if ckpt is not None and (ckpt.parent / f"{arch}.json").is_file():
        return _json(ckpt.parent / f"{arch}.json"), True
    return None, False


def _pretrain_problems(value: str, key: str, problems: list[str]) -> int | None:
    """A ``pretrain:<name>`` whose config cannot be read; returns the text tower's dimension."""
    from differ_core.clip_pretrain.config import load_pretrain_config

    try:
        return load_pretrain_config(value.split(":", 1)[1].strip()).model.embed_dim
    except DifferError as exc:
        problems.append(f"{key}: {value}: {exc}")
        return None


def _encoder_problems(spec: str, problems: list[str]) -> int | None:
    """Problems of a text-encoder spec (``captions.features.encoders`` rules, files only); its dimension if known."""
    if spec.startswith("pretrain:"):  # a pre-training the pipeline runs first: its config must load
        return _pretrain_problems(spec, "text.encoder", problems)
    if spec.startswith("official:"):
        problems.append(
            f"text.encoder: {spec} names imported official features, which the encode stage cannot compute; "
            f"train on them with `differ train --config ... text.encoder={spec}`"
        )
        return None
    from captions.features.encoders import ENCODERS, minilm_dir

    try:
        entry, loc = ENCODERS.parse(spec)
    except ConfigError as exc:
        problems.append(f"text.encoder: {exc}")
        return None
    if entry.name == "minilm":
        try:
            return _json(minilm_dir() / "config.json").get("hidden_size")
        except ConfigError as exc:
            problems.append(f"text.encoder: {exc}")
            return None
    if entry.name in ("hf-clip", "sentence-transformers"):
        folder = Path(loc).expanduser()
        if not folder.is_dir():
            problems.append(f"text.encoder: {spec}: model folder {folder} not found; place the model there")
            return None
        cfg = _json(folder / "config.json")
        return cfg.get("projection_dim") if entry.name == "hf-clip" else None
    if importlib.util.find_spec("open_clip") is None:
        problems.append(f"text.encoder: {spec} needs open_clip: pip install open_clip_torch")
        return None
    arch, _, ckpt = loc.partition("@")
    arch, ckpt_path = arch.strip(), (Path(ckpt.strip()).expanduser() if ckpt.strip() else None)
    model_cfg, local = _open_clip_config(arch, ckpt_path)
    if model_cfg is None:
        problems.append(
            f"text.encoder: {spec}: unknown open_clip architecture '{arch}'; use a name from "
            "open_clip.list_models() (e.g. EVA02-B-16) or a local config: open_clip:/path/<arch>.json@/path/weights"
        )
    is_dir = Path(arch).expanduser().is_dir()
    if ckpt_path is None and not local and not is_dir:
        problems.append(
            f"text.encoder: {spec}: no checkpoint given and open_clip would use random weights; use "
            f"open_clip:{arch}@/path/to/open_clip_model.safetensors (docs/gpu_recipe.md §2)"
        )
    elif ckpt_path is not None and not ckpt_path.is_file():
        problems.append(
            f"text.encoder: {spec}: checkpoint file {ckpt_path} not found; place the {arch} weights there"
        )
    return (model_cfg or {}).get("embed_dim")


def _training_problems(
    cfg: PipelineConfig, tc: TrainConfig, dim: int | None, source: str | None, problems: list[str]
) -> None:
    src = source or cfg.train_config
    problem = tc.pretrained_problem(src)
    if problem:
        problems.append(problem)
    elif tc.model.weights_file and tc.model.weights_file.startswith("pretrain:"):
        _pretrain_problems(tc.model.weights_file, "model.pretrained", problems)
    elif tc.model.weights_file and not Path(tc.model.weights_file).expanduser().is_file():
        problems.append(
            f"model.pretrained: {tc.model.weights_file} not found; place the {tc.model.backbone} weights there "
            "(docs/gpu_recipe.md §2)"
        )
    if tc.text.dim and dim and tc.text.dim != dim:
        problems.append(
            f"text.dim: {src} expects {tc.text.dim}-d text features but {cfg.encoder} gives {dim}-d; use the "
            f"encoder the recipe names or set text.dim={dim}"
        )
    missing = [p for p in tc.text.perspectives if p not in cfg.perspectives]
    if missing and tc.needs_text:
        problems.append(
            f"text.perspectives: training needs {missing} but the pipeline captions only {cfg.perspectives}; "
            "add them to the pipeline's perspectives"
        )
    if tc.text.features_file and not Path(tc.text.features_file).expanduser().is_file():
        problems.append(
            f"text.features_file: {tc.text.features_file} not found; give an existing .pt or leave it out"
        )
