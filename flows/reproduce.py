"""``differ reproduce``: rebuild a run's inputs from its ``reproduce.json``, retrain, re-evaluate, compare.

The run is rebuilt by the ordinary pipeline flow in a fresh workspace: SynthCC is regenerated from its recorded
knobs and seed, a real dataset is read from its recorded root (refused when its manifest fingerprint differs),
captions and features use the recorded captioner, prompts and encoder, training uses the recorded resolved
config, evaluation the recorded protocol variants.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from differ_common.errors import DifferError
from differ_common.io import write_text_atomic
from differ_core.reproducibility import read_record, update_record
from flows.config import PipelineConfig

METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP")


def record_pipeline(run_dir: str | Path | None, cfg: PipelineConfig, workdir: str) -> None:
    """Add the pipeline config (and the text of its prompts file) to the run's record (no run: nothing)."""
    from captions.prompts import DEFAULT_PROMPTS

    if not run_dir:
        return

    prompts = Path(cfg.prompts) if cfg.prompts else DEFAULT_PROMPTS
    update_record(run_dir, pipeline={
        "config": {**cfg.model_dump(mode="json"), "workdir": workdir},
        "train_config_file": str(cfg.resolved_train_config()),
        "prompts_yaml": prompts.read_text() if prompts.is_file() else None,
    })  # fmt: skip


def load_run(run: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(run folder, record, metrics.json)``; one-line errors for what is missing."""
    run_dir = Path(run).expanduser().resolve()
    if run_dir.is_file():
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise DifferError(f"{run}: no such run folder; give the path of a run folder (W/runs/<run>)")
    rec = read_record(run_dir)
    if "training" not in rec or "pipeline" not in rec:
        missing = "training" if "training" not in rec else "pipeline"
        raise DifferError(
            f"{run_dir / 'reproduce.json'}: no {missing} part; only runs made by the pipeline "
            "(`differ demo`, `differ run`, `differ study`) with this version can be reproduced"
        )
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise DifferError(
            f"{metrics_path}: missing; evaluate the run first (`differ evaluate --run {run_dir}`)"
        )
    return run_dir, rec, json.loads(metrics_path.read_text())


def pipeline_config_for(rec: dict[str, Any], workdir: Path, run_name: str) -> PipelineConfig:
    """The recorded pipeline config moved to ``workdir``, with the recorded training config and prompts."""
    pipe = rec["pipeline"]
    tr = rec["training"]
    here = workdir / "reproduce" / run_name
    train_cfg = copy.deepcopy(tr["config"])
    train_cfg["data"].pop("workdir", None)
    train_cfg["run"]["output"] = None
    train_cfg["run"]["name"] = re.sub(
        r"-[0-9a-f]{8}$", "", train_cfg["run"]["name"]
    )  # the pipeline adds the hash
    train_file = write_text_atomic(here / "train_config.yaml", yaml.safe_dump(train_cfg, sort_keys=False))
    cfg = dict(pipe["config"])
    prompts = None
    if pipe.get("prompts_yaml") is not None:
        prompts = str(write_text_atomic(here / "prompts.yaml", pipe["prompts_yaml"]))
    manifest = tr["inputs"]["manifest"]
    options = dict(cfg.get("manifest_options") or {})
    if manifest.get("synthcc"):  # regenerate from every recorded knob and the seed
        stamp = manifest["synthcc"]
        options = {**stamp["config"], "seed": stamp["seed"]}
        root = None
    else:
        root = cfg.get("root") or manifest.get("folder")
    cfg.update(workdir=str(workdir), root=root, manifest_options=options, train_config=str(train_file),
               train_overrides=[], prompts=prompts, refresh=[], evaluate=False, plots=0)  # fmt: skip
    return PipelineConfig(**cfg)


def rebuild_manifest(cfg: PipelineConfig) -> dict[str, Any]:
    """Build the manifest into the new workspace and return its record."""
    from data_manifests.registry import make_manifest
    from data_manifests.schema import load_manifest
    from differ_core.reproducibility import manifest_record
    from flows.stages.manifest import default_root

    root = cfg.root or default_root(str(cfg.workdir), cfg.dataset)
    make_manifest(cfg.workdir, cfg.dataset, root, **cfg.manifest_options)
    return manifest_record(load_manifest(cfg.workdir, cfg.dataset))


def input_pairs(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(input, recorded, reproduced) fingerprints in pipeline order."""
    a, b = old["training"]["inputs"], new["training"]["inputs"]
    out: list[tuple[str, Any, Any]] = [
        ("manifest", a["manifest"]["fingerprint"], b["manifest"]["fingerprint"])
    ]
    for p, ca in (a.get("captions") or {}).items():
        cb = (b.get("captions") or {}).get(p) or {}
        out.append((f"captions/{p}", ca, cb))
    for key in ("encoder", "encoder_fingerprint", "captions_fingerprint", "tensor_sha256"):
        out.append(
            (f"features ({key})", (a.get("features") or {}).get(key), (b.get("features") or {}).get(key))
        )
    pa, pb = a.get("pretrained"), b.get("pretrained")
    out.append(("pretrained weights", pa and pa.get("sha256"), pb and pb.get("sha256")))
    return out


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first input whose fingerprint differs, as one line; None when all agree."""
    for name, a, b in input_pairs(old, new):
        if a != b:
            return f"{name}: recorded {_short(a)}, reproduced {_short(b)}"
    return None


def _short(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v)


def compare_metrics(
    recorded: dict[str, Any], reproduced: dict[str, Any], tolerance: float
) -> tuple[list, bool]:
    """Rows ``(protocol, metric, recorded, reproduced, difference)`` and whether all agree within ``tolerance``."""
    rows, ok = [], True
    ra, rb = recorded.get("protocols", {}), reproduced.get("protocols", {})
    for proto in dict.fromkeys([*ra, *rb]):
        va, vb = ra.get(proto, {}), rb.get(proto, {})
        present = {*va, *vb}
        keys = [k for m in METRIC_KEYS for k in (m, f"{m}_std") if k in present]
        for k in keys:
            a, b = va.get(k), vb.get(k)
            diff = None if a is None or b is None else float(b) - float(a)
            agree = diff is not None and (abs(diff) <= tolerance or (math.isnan(a) and math.isnan(b)))
            ok &= agree
            rows.append((proto, k, a, b, diff))
    return rows, ok


def print_comparison(rows: list, tolerance: float, say: Callable[[str], None]) -> None:
    say(f"{'protocol':<30} {'metric':<12} {'recorded':>10} {'reproduced':>10} {'difference':>11}")
    for proto, k, a, b, d in rows:
        fa, fb = ("-" if v is None else f"{100 * v:.4f}" for v in (a, b))
        fd = "missing" if d is None else f"{100 * d:+.4f}"
        say(f"{proto:<30} {k:<12} {fa:>10} {fb:>10} {fd:>11}")
    say(f"(values in %, tolerance {100 * tolerance:g} points)")


def reproduce(
    run: str | Path, workdir: str | Path, tolerance: float = 0.0, say: Callable[[str], None] = print
) -> int:
    """Reproduce ``run`` into ``workdir``; 0 when every metric agrees within ``tolerance``, else 1."""
    from differ_core.evaluation.runner import evaluate_run
    from flows.pipeline import differ_pipeline
    from flows.report import run_flow

    run_dir, rec, recorded = load_run(run)
    workdir = Path(workdir).expanduser().resolve()
    if run_dir.is_relative_to(workdir):
        raise DifferError(f"--workdir {workdir} holds the run itself; give a fresh folder")
    cfg = pipeline_config_for(rec, workdir, run_dir.name)
    say(f"reproducing {run_dir} into {workdir}")
    manifest = rebuild_manifest(cfg)
    old_fp = rec["training"]["inputs"]["manifest"]["fingerprint"]
    if manifest["fingerprint"] != old_fp:
        from data_manifests.registry import dataset_traits

        where = "regenerated SynthCC" if dataset_traits(cfg.dataset).generated else f"root {cfg.root}"
        say(f"first input that differs: manifest: recorded {old_fp}, reproduced {manifest['fingerprint']} "
            f"({where}, {manifest['n_rows']} rows); not retraining")  # fmt: skip
        return 1
    result = run_flow(differ_pipeline, cfg)
    new_dir = Path(result["run_dir"])
    ev = rec.get("evaluation") or {}
    rr = ev.get("rerank") or {}
    checkpoint = {"last": "last", "given": Path(ev.get("checkpoint", {}).get("path", "")).stem}.get(
        ev.get("checkpoint", {}).get("selection", "")
    )
    new_metrics = evaluate_run(
        new_dir, rerank=bool(rr), flip=bool(ev.get("flip")), checkpoint=checkpoint,
        single_shot=bool(ev.get("single_shot")), progress=False,
        **({"rerank_k1": rr["k1"], "rerank_k2": rr["k2"], "rerank_lambda": rr["lambda"]} if rr else {}),
    )  # fmt: skip
    new_rec = read_record(new_dir)
    say(f"reproduced run: {new_dir}")
    rows, ok = compare_metrics(recorded, new_metrics, tolerance)
    print_comparison(rows, tolerance, say)
    diff = first_difference(rec, new_rec)
    wa = ev.get("checkpoint", {}).get("weights_sha256")
    wb = new_rec.get("evaluation", {}).get("checkpoint", {}).get("weights_sha256")
    say(f"weights: {'identical' if wa == wb else f'differ (recorded {wa}, reproduced {wb})'}")
    if diff:
        say(f"first input that differs: {diff}")
    say("metrics agree" if ok else "metrics differ")
    return 0 if ok else 1
