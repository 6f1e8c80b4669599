"""Evaluate a trained run or a checkpoint under its dataset's protocols; write metrics and pictures.

``evaluate_run(run_dir)`` evaluates ``checkpoints/best.pt`` (selected on the validation split: ``"selection":
"val-best"``) or, without it, ``checkpoints/last.pt`` (``"last"``), on the query/gallery splits of the run's
dataset manifest, and writes into the run folder:

* ``metrics.json``: ``{"dataset", "run", "epoch", "protocols": {name: {"rank1", "rank5", "rank10", "mAP",
  "num_query", "num_valid_query"}}, "seed", "selection"}`` (fractions in [0, 1]) plus ``checkpoint``, ``flip``,
  ``rerank`` (false or its k1/k2/lambda), ``single_shot`` and ``skipped`` (optional protocols without a valid
  query, with the reason) and ``reproduce`` (the reproducibility record, also written to ``reproduce.json``);
* ``metrics.parquet``: one row per protocol (the same numbers, the protocol's splits and mode, the CMC curve);
* ``plots/ranked_<protocol>.png`` (``plots`` = N random valid queries, seeded, one line each) and
  ``plots/cmc.png``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from differ_common.errors import DataError, DifferError
from differ_common.workspace import RunLayout

MAX_RANK = 50
TOP_K = 10


@dataclass
class Evaluation:
    """Everything one evaluation produced (``metrics`` is what ``metrics.json`` holds)."""

    metrics: dict[str, Any]
    results: dict[str, Any]  # protocol name -> differ_core.evaluation.protocols.ProtocolResult
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- locating
def resolve_run(run: str | Path, workdir: str | Path | None = None) -> Path:
    """A run folder from a path or a run name under ``W/runs``."""
    from differ_common.workspace import Workspace

    p = Path(run).expanduser()
    if p.is_dir():
        return p.resolve()
    cand = Workspace.at(workdir).run_dir(str(run))
    if cand.is_dir():
        return cand
    raise DifferError(f"{run}: no such run folder (nor {cand}); give a run name under W/runs or a path")


def select_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[Path, str]:
    """``(checkpoint, selection)``: ``best.pt`` ("val-best") if present, else ``last.pt`` ("last")."""
    run = RunLayout(Path(run_dir))
    if checkpoint is not None:
        c = Path(checkpoint).expanduser()
        if not c.is_absolute() and not c.exists():
            c = run.checkpoints / c
            if not c.suffix:
                c = c.with_suffix(".pt")
        if not c.is_file():
            raise DifferError(f"{c}: checkpoint not found")
        return c, _selection_of(c)
    for c, sel in ((run.best, "val-best"), (run.last, "last")):
        if c.is_file():
            return c, sel
    raise DifferError(
        f"{run.root}: no checkpoints/best.pt or checkpoints/last.pt; train the run first (`differ train`)"
    )


def _selection_of(checkpoint: Path) -> str:
    return {"best": "val-best", "last": "last"}.get(checkpoint.stem, "given")


def _run_workdir(run_dir: Path, cfg: Any) -> Path:
    from differ_common.workspace import resolve_workdir

    if run_dir.parent.name == "runs":
        return run_dir.parent.parent
    if getattr(cfg.data, "workdir", None):
        return resolve_workdir(cfg.data.workdir)
    return resolve_workdir(None)


def _eval_rows(manifest: Any, protocols: list[Any]) -> Any:
    splits = {p.query_split for p in protocols} | {p.gallery_split for p in protocols}
    return manifest.loc[manifest["split"].isin(sorted(splits))].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- core
def evaluate_loaded(
    model: Any,
    info: dict[str, Any],
    manifest: Any,
    *,
    dataset: str,
    run: str,
    selection: str,
    checkpoint: str | Path,
    out_dir: str | Path | None,
    seed: int = 0,
    rerank: bool = False,
    rerank_k1: int = 20,
    rerank_k2: int = 6,
    rerank_lambda: float = 0.3,
    flip: bool = False,
    plots: int = 0,
    single_shot: bool = False,
    batch_size: int = 128,
    device: str | None = None,
    progress: bool = True,
    plot_queries: list[str] | None = None,
    training: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
    data_cfg: Any = None,
) -> Evaluation:
    """Extract features with a loaded model, evaluate every protocol, and (with ``out_dir``) write the files.

    Images are read one batch at a time: from ``workdir``'s shared image cache when ``data_cfg.image_cache``
    (the checkpoint's ``data`` config) is ``auto``/``disk`` and it fits, else decoded per batch.
    ``metrics["reproduce"]`` is the run's reproducibility record with this evaluation's part (``training``: the
    training part to use when ``out_dir`` has no record)."""
    from differ_core.evaluation.protocols import RerankOptions, evaluate_protocols, protocols_from_manifest
    from differ_core.extract import extract_with_model
    from differ_core.images import cached_source

    protocols = protocols_from_manifest(manifest, single_shot=single_shot)
    rows = _eval_rows(manifest, protocols)
    paths = rows["path"].astype(str).tolist()
    source = None
    if data_cfg is not None:
        ids = rows["image_id"].astype(str).tolist()
        source = cached_source(data_cfg, workdir, f"{dataset}-eval", paths, ids, tuple(info["img_size"]))
    feats = extract_with_model(
        model, info, paths, rows["camid"].to_numpy(np.int64), batch_size=batch_size, flip=flip, device=device,
        progress=progress, desc=f"{dataset} features", images=source,
    )  # fmt: skip
    rr = RerankOptions(rerank_k1, rerank_k2, rerank_lambda) if rerank else None
    from differ_common.device import pick_device

    results, skipped = evaluate_protocols(
        rows, feats, protocols, rerank=rr, seed=seed, max_rank=MAX_RANK, device=pick_device(device)
    )
    epoch = info.get("epoch")
    metrics = {
        "dataset": dataset,
        "run": run,
        "epoch": int(epoch) if epoch is not None else None,
        "protocols": {name: r.as_dict() for name, r in results.items()},
        "seed": int(seed),
        "selection": selection,
        "checkpoint": str(checkpoint),
        "flip": bool(flip),
        "rerank": {"k1": rerank_k1, "k2": rerank_k2, "lambda": rerank_lambda} if rerank else False,
        "single_shot": bool(single_shot),
        "skipped": skipped,
    }
    from differ_core.reproducibility import record_evaluation

    metrics["reproduce"] = record_evaluation(
        out_dir, manifest=manifest, protocols=protocols, metrics=metrics, state=model.state_dict(),
        device=pick_device(device), training=training,
    )  # fmt: skip
    ev = Evaluation(metrics, results)
    if out_dir is not None:
        write_outputs(ev, Path(out_dir), plots=plots, seed=seed, plot_queries=plot_queries)
    return ev


def metrics_frame(ev: Evaluation):
    """``metrics.parquet``: one row per protocol."""
    import pandas as pd

    from differ_core.reproducibility import record_sha256

    m = ev.metrics
    rec_sha = record_sha256(m["reproduce"]) if "reproduce" in m else None
    recs = []
    for name, pr in ev.results.items():
        p = pr.protocol
        recs.append({
            "dataset": m["dataset"], "run": m["run"], "epoch": m["epoch"], "selection": m["selection"],
            "protocol": name, "query_split": p.query_split, "gallery_split": p.gallery_split, "mode": p.mode,
            "ignore_camera": p.ignore_camera, "tracklet": p.tracklet, "single_shot_trials": p.single_shot_trials,
            **{k: v for k, v in pr.as_dict().items()}, "flip": m["flip"], "rerank": bool(m["rerank"]),
            "seed": m["seed"], "cmc": [float(x) for x in pr.result.cmc], "reproduce_sha256": rec_sha,
        })  # fmt: skip
    return pd.DataFrame(recs)


def choose_queries(pr: Any, n: int, seed: int = 0, query_ids: list[str] | None = None) -> list[int]:
    """Indices of ``query_ids`` (all must exist), or ``n`` random valid queries of a protocol result (seeded)."""
    if query_ids:
        pos = {q: i for i, q in enumerate(pr.query.ids)}
        missing = [q for q in query_ids if q not in pos]
        if missing:
            raise DataError(
                f"plot queries: {missing[:3]} are not {pr.protocol.query_split} items of this dataset"
            )
        return [pos[q] for q in query_ids]
    valid = np.nonzero(pr.result.first_hit >= 0)[0]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(valid, size=min(int(n), valid.size), replace=False).tolist())


def ranked_rows(pr: Any, indices: list[int], top_k: int = TOP_K, caption: bool = False) -> list[Any]:
    """Ranked-list rows of the given queries of a (multi-shot) protocol result."""
    from differ_core.plots import ranked_row

    out = []
    for qi in indices:
        row = pr.distances.rows(qi, qi + 1)[0]
        cap = ""
        if caption and pr.result.first_hit[qi] >= 0:
            cap = f"AP {100 * pr.result.ap[qi]:.0f}"
        out.append(
            ranked_row(pr.query, pr.gallery, row, qi, pr.protocol.mode, pr.protocol.ignore_camera, top_k, cap)
        )
    return out


def write_outputs(
    ev: Evaluation, out_dir: Path, plots: int = 0, seed: int = 0, plot_queries: list[str] | None = None
) -> dict[str, Path]:
    """metrics.json, metrics.parquet and (``plots`` > 0) the pictures, written atomically into ``out_dir``."""
    from differ_common.io import write_json_atomic, write_parquet_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(out_dir)
    files = {
        "metrics": write_json_atomic(layout.metrics, ev.metrics),
        "metrics_parquet": write_parquet_atomic(metrics_frame(ev), layout.metrics_table),
    }
    if plots > 0 or plot_queries:
        from differ_core.plots import plot_cmc, plot_ranked_lists

        pdir = layout.plots
        for old in pdir.glob("ranked_*.png"):
            old.unlink()
        for name, pr in ev.results.items():
            if pr.distances is None:  # single-shot: no single gallery to show
                continue
            idx = choose_queries(pr, plots, seed, plot_queries)
            if not idx:
                continue
            title = f"{ev.metrics['dataset']} {name} — {ev.metrics['run']} ({ev.metrics['selection']})"
            files[f"ranked_{name}"] = plot_ranked_lists(ranked_rows(pr, idx, caption=True), pdir / f"ranked_{name}.png",
                                                        title)  # fmt: skip
        curves = {name: pr.result.cmc for name, pr in ev.results.items()}
        files["cmc"] = plot_cmc(
            curves, pdir / "cmc.png", title=f"{ev.metrics['dataset']} CMC — {ev.metrics['run']}"
        )
    ev.out_dir, ev.files = out_dir, files
    return files


# ----------------------------------------------------------------------------------------------- public API
def _load(checkpoint: Path, device: str | None):
    from differ_core.model import load_model_for_inference

    return load_model_for_inference(checkpoint, map_location="cpu")


def evaluate_run(
    run_dir: str | Path,
    rerank: bool = False,
    flip: bool = False,
    plots: int = 0,
    checkpoint: str | Path | None = None,
    *,
    single_shot: bool = False,
    rerank_k1: int = 20,
    rerank_k2: int = 6,
    rerank_lambda: float = 0.3,
    batch_size: int | None = None,
    device: str | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
    plot_queries: list[str] | None = None,
    write: bool = True,
    return_evaluation: bool = False,
) -> Any:
    """Evaluate a run (see the module doc); returns the metrics dict (or the :class:`Evaluation`)."""
    from data_manifests.schema import load_manifest
    from differ_core.reproducibility import read_record

    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise DifferError(f"{run_dir}: no such run folder")
    ckpt, selection = select_checkpoint(run_dir, checkpoint)
    model, cfg, info = _load(ckpt, device)
    dataset = str(cfg.data.dataset)
    wd = Path(workdir) if workdir is not None else _run_workdir(run_dir, cfg)
    manifest = load_manifest(wd, dataset)
    lock = None
    if write:  # the run folder's one writer (training holds the same lock); a killed writer's temp files go
        from differ_common.io import clean_stale_temps
        from differ_common.workspace import resolve_workdir
        from differ_core.training import hold_run_lock

        lock = hold_run_lock(run_dir, resolve_workdir(wd))
        clean_stale_temps(run_dir)
    try:
        ev = evaluate_loaded(
            model, info, manifest, dataset=dataset, run=run_dir.name, selection=selection, checkpoint=ckpt,
            out_dir=run_dir if write else None, seed=int(cfg.run.seed), rerank=rerank, rerank_k1=rerank_k1,
            rerank_k2=rerank_k2, rerank_lambda=rerank_lambda, flip=flip, plots=plots, single_shot=single_shot,
            batch_size=batch_size or int(cfg.run.eval_batch_size), device=device, progress=progress,
            plot_queries=plot_queries, training=read_record(run_dir).get("training"), workdir=wd,
            data_cfg=cfg.data,
        )  # fmt: skip
    finally:
        if lock is not None:
            lock.release()
    return ev if return_evaluation else ev.metrics


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    workdir: str | Path | None = None,
    out_dir: str | Path | None = None,
    rerank: bool = False,
    flip: bool = False,
    plots: int = 0,
    *,
    single_shot: bool = False,
    rerank_k1: int = 20,
    rerank_k2: int = 6,
    rerank_lambda: float = 0.3,
    batch_size: int = 128,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    plot_queries: list[str] | None = None,
    write: bool = True,
    return_evaluation: bool = False,
) -> Any:
    """Evaluate any checkpoint on ``dataset``'s manifest in ``workdir``. Files go to ``out_dir`` (default: the
    checkpoint's run folder when it lies in ``<run>/checkpoints/``, else ``W/evaluations/<dataset>-<name>``)."""
    from data_manifests.schema import load_manifest
    from differ_common.workspace import Workspace
    from differ_core.reproducibility import read_record

    ckpt = Path(checkpoint).expanduser().resolve()
    if not ckpt.is_file():
        raise DifferError(f"{ckpt}: checkpoint not found")
    ws = Workspace.at(workdir)
    manifest = load_manifest(ws.root, dataset)
    model, cfg, info = _load(ckpt, device)
    owner = RunLayout.of_checkpoint(ckpt)
    if out_dir is None:
        out_dir = owner.root if owner else ws.root / "evaluations" / f"{dataset}-{ckpt.stem}"
    out_dir = Path(out_dir)
    run = owner.root.name if owner else ckpt.stem
    ev = evaluate_loaded(
        model, info, manifest, dataset=dataset, run=run, selection=_selection_of(ckpt), checkpoint=ckpt,
        out_dir=out_dir if write else None, seed=seed, rerank=rerank, rerank_k1=rerank_k1, rerank_k2=rerank_k2,
        rerank_lambda=rerank_lambda, flip=flip, plots=plots, single_shot=single_shot, batch_size=batch_size,
        device=device, progress=progress, plot_queries=plot_queries,
        training=read_record(owner.root).get("training") if owner else None, workdir=ws.root, data_cfg=cfg.data,
    )  # fmt: skip
    return ev if return_evaluation else ev.metrics


def compare_pictures(
    a: Evaluation,
    b: Evaluation,
    out_dir: str | Path,
    n: int = 4,
    seed: int = 0,
    labels: tuple[str, str] | None = None,
) -> dict[str, Path]:
    """Side-by-side ranked lists of two evaluations of the same dataset (``a`` vs ``b``) and their CMC curves.

    The queries are those where ``a`` and ``b`` differ most at rank 1 first (b right, a wrong), then random.
    """
    from differ_core.plots import plot_cmc, plot_ranked_compare

    if a.metrics["dataset"] != b.metrics["dataset"]:
        raise DifferError(
            f"--compare: runs evaluate different datasets ({a.metrics['dataset']} vs {b.metrics['dataset']})"
        )
    la, lb = labels or (a.metrics["run"], b.metrics["run"])
    if la == lb:
        la, lb = f"{la} (A)", f"{lb} (B)"
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    curves: dict[str, Any] = {}
    styles: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    for name, pa in a.results.items():
        pb = b.results.get(name)
        if pb is None:
            continue
        curves[f"{la} {name}"], curves[f"{lb} {name}"] = pa.result.cmc, pb.result.cmc
        colour = f"C{len(curves) // 2 - 1}"
        styles[f"{la} {name}"] = {"color": colour, "ls": "--", "marker": "o", "mfc": "none"}
        styles[f"{lb} {name}"] = {"color": colour, "ls": "-"}
        if pa.distances is None or pb.distances is None or pa.query.ids != pb.query.ids:
            continue
        fa, fb = pa.result.first_hit, pb.result.first_hit
        valid = np.nonzero((fa >= 0) & (fb >= 0))[0]
        if valid.size == 0 or n <= 0:
            continue
        gain = valid[(fb[valid] == 0) & (fa[valid] > 0)]
        rest = np.setdiff1d(valid, gain)
        pick = list(rng.permutation(gain)[:n]) + list(rng.permutation(rest)[: max(0, n - gain.size)])
        idx = sorted(int(i) for i in pick[:n])
        runs = [(la, ranked_rows(pa, idx, caption=True)), (lb, ranked_rows(pb, idx, caption=True))]
        files[f"compare_{name}"] = plot_ranked_compare(
            runs, out_dir / f"compare_{name}.png", f"{a.metrics['dataset']} {name}: {la} vs {lb}"
        )
    if curves:
        files["cmc_compare"] = plot_cmc(
            curves, out_dir / "cmc_compare.png", title=f"{la} (dashed) vs {lb} (solid)", styles=styles
        )
    return files
