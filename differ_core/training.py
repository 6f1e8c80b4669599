"""DIFFER training with accelerate: the same loop on CPU, one GPU, many GPUs and many machines.

``train(cfg) -> run_dir`` writes ``config.yaml``, ``checkpoints/last.pt`` (resume state) and ``best.pt`` (best
validation score), ``train_log.csv``, ``val_log.csv`` and ``tensorboard/``. Launch several processes with
``accelerate launch -m differ_core.train_entry --config F`` (see :mod:`flows.launch`); each rank draws its own
disjoint P×K batches (:class:`differ_core.sampler.IdentityBatchSampler`), so the data loader is not ``prepare``d.

Determinism and resume: the augmentation generator and the global torch RNG are re-seeded at every step from
``(seed, rank, step)``; the sampler's order is a function of ``(seed, epoch)``; the checkpoint stores the model,
optimizer, scheduler, sampler position, AMP scaler and step. A run killed at any point and started again with the
same config continues from ``last.pt`` and ends with the same weights as an uninterrupted run (up to
floating-point non-associativity of the hardware).
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from differ_core.config import TrainConfig
from differ_core.errors import DifferError
from differ_core.io import write_text_atomic

_MIX = 0x9E3779B1


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for one (seed, rank, step)."""
    return int(np.random.SeedSequence([seed, rank, step, _MIX]).generate_state(1, dtype=np.uint64)[0] >> 1)


def resolve_amp(amp: str, cpu: bool) -> str:
    """accelerate's ``mixed_precision`` for ``run.amp``: ``auto`` → bf16 where supported, else fp16. On the CPU
    only an explicit ``bf16`` (CPU autocast) is kept: accelerate builds no fp16 GradScaler for the CPU."""
    if amp == "none" or (cpu and amp != "bf16"):
        return "no"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


def run_dir_for(cfg: TrainConfig) -> Path:
    """``run.output`` or ``W/runs/<run.name>``."""
    from differ_core.workspace import Workspace

    if cfg.run.output:
        return Path(cfg.run.output).expanduser().resolve()
    return Workspace.at(cfg.data.workdir).run_dir(cfg.run.name)


class _CsvLog:
    """Append-only CSV whose columns are fixed by the first row; on resume rows after ``keep_until`` are cut."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.exists() and keep_until is not None:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            rows = [r for r in rows if int(float(r.get("step", 0))) <= keep_until]
            if rows:
                self.fields = list(rows[0].keys())
                with open(path, "w", newline="") as fh:
                    w = csv.DictWriter(fh, self.fields)
                    w.writeheader()
                    w.writerows(rows)
            else:
                path.unlink()
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


@torch.inference_mode()
def extract(
    model: torch.nn.Module,
    images: torch.Tensor,
    camids: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int,
    autocast: Any,
) -> torch.Tensor:
    """Identity features of ``uint8`` images, in eval mode, float32 on the CPU."""
    from differ_core.data import normalize

    was = model.training
    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = normalize(images[s : s + batch_size].to(device), mean, std)
        with autocast():
            f = model(x, camids[s : s + batch_size].to(device))
        out.append(f.float().cpu())
    model.train(was)
    return torch.cat(out)


def validate(
    model: torch.nn.Module, val: dict[str, Any], cfg: TrainConfig, mean: Any, std: Any, device: Any, autocast: Any,
    ignore_camera: bool,
) -> dict[str, Any]:  # fmt: skip
    """Rank the held-out identities (query vs gallery) under ``run.select_protocol``; ``general`` is the fallback
    when no query has a clothes-changing match. Returns rank1/rank5/mAP/num_valid_query/protocol."""
    from differ_core.evaluation import FeatureDistance, evaluate_ranking

    feats = extract(model, val["images"], torch.tensor(val["camids"]), mean, std, device,
                    cfg.run.eval_batch_size, autocast)  # fmt: skip
    q = val["is_query"]
    g = ~q
    dist = FeatureDistance(feats[torch.as_tensor(q)], feats[torch.as_tensor(g)], normalize=True)
    result = None
    protocol = cfg.run.select_protocol
    for mode in dict.fromkeys([protocol, "general"]):
        r = evaluate_ranking(
            dist, val["pids"][q], val["pids"][g], val["camids"][q], val["camids"][g],
            val["clothes"][q], val["clothes"][g], mode=mode, ignore_camera=ignore_camera, max_rank=10,
        )  # fmt: skip
        if r.num_valid_query > 0:
            result, protocol = r, mode
            break
    if result is None:
        return {"protocol": "none", "rank1": float("nan"), "rank5": float("nan"), "mAP": float("nan"),
                "num_valid_query": 0}  # fmt: skip
    return {
        "protocol": protocol,
        "rank1": result.rank(1),
        "rank5": result.rank(5),
        "mAP": float(result.mAP),
        "num_valid_query": int(result.num_valid_query),
        "num_query": int(result.num_query),
    }


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the run ``cfg`` describes; returns its run folder."""
    from accelerate import Accelerator

    from differ_core.checkpoint import check_compatible, load_model_state, read_checkpoint, save_checkpoint
    from differ_core.data import augment, prepare_data
    from differ_core.grl import grl_alpha
    from differ_core.losses import DifferLoss
    from differ_core.model import build_model, model_mean_std
    from differ_core.optim import build_optimizer, build_scheduler
    from differ_core.sampler import IdentityBatchSampler
    from differ_core.workspace import resolve_workdir

    env_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cpu = env_cpu or not torch.cuda.is_available()
    accel = Accelerator(cpu=cpu, mixed_precision=resolve_amp(cfg.run.amp, cpu))
    rank, world, main = accel.process_index, accel.num_processes, accel.is_main_process
    device = accel.device
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    elif cpu and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accel.num_processes))

    def say(msg: str) -> None:
        if main:
            print(f"[differ train] {msg}", flush=True)

    workdir = resolve_workdir(cfg.data.workdir)
    run_dir = run_dir_for(cfg)
    ckpt_dir = run_dir / "checkpoints"
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())
    say(f"run {run_dir} on {world} process(es), device {device.type}, amp {accel.mixed_precision}")

    # ---- data, model, optimisation
    data = prepare_data(cfg, workdir, say)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, data.num_classes, data.num_cameras, data.text_dim)
    mean, std = model_mean_std(cfg, model)
    if device.type == "cuda" and cfg.model.channels_last and model.kind == "generic":
        model = model.to(memory_format=torch.channels_last)
    try:
        sampler = IdentityBatchSampler(
            data.labels.tolist(), cfg.sampler.P, cfg.sampler.K, cfg.run.seed, world, rank
        )
    except ValueError as exc:
        raise DifferError(f"{cfg.data.dataset}: {exc}; lower sampler.P or run.val_ids") from None
    spe = len(sampler)
    if spe == 0:
        raise DifferError(
            f"{cfg.data.dataset}: too few images for one P×K={cfg.sampler.P}×{cfg.sampler.K} batch per process "
            f"on {world} process(es); lower sampler.P/K or use fewer processes"
        )
    total_steps = cfg.schedule.epochs * spe
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, spe)
    criterion = DifferLoss(cfg.losses, cfg.text.non_bio)
    ignore_camera = int(np.unique(data.camids.numpy()).size) <= 1

    # ---- resume
    step, best, resume_state = 0, {"score": -math.inf, "epoch": None, "metrics": {}}, None
    resume_path = None
    if cfg.run.resume == "auto":
        resume_path = ckpt_dir / "last.pt" if (ckpt_dir / "last.pt").exists() else None
    elif cfg.run.resume != "never":
        resume_path = Path(cfg.run.resume).expanduser()
    if resume_path is not None:
        ckpt = read_checkpoint(resume_path)
        check_compatible(
            ckpt, str(resume_path), backbone=cfg.model.backbone, dataset=cfg.data.dataset,
            num_classes=data.num_classes, num_cameras=data.num_cameras, text_dim=data.text_dim,
            img_size=cfg.data.img_size,
        )  # fmt: skip
        load_model_state(model, ckpt["model"], str(resume_path))
        if "optimizer" not in ckpt:
            raise DifferError(f"{resume_path}: has no optimizer state (a best.pt?); resume from last.pt")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step = int(ckpt["step"])
        best = {**best, **(ckpt.get("best") or {})}
        if best["score"] is None:
            best["score"] = -math.inf
        resume_state = ckpt
        say(f"resuming from {resume_path} at step {step} (epoch {step // spe}, batch {step % spe})")

    model, optimizer = accel.prepare(model, optimizer)
    if resume_state is not None and resume_state.get("scaler") and accel.scaler is not None:
        accel.scaler.load_state_dict(resume_state["scaler"])
    raw = accel.unwrap_model(model)

    # ---- logs
    train_log = _CsvLog(run_dir / "train_log.csv", step if resume_path else None) if main else None
    val_log = _CsvLog(run_dir / "val_log.csv", step if resume_path else None) if main else None
    tb = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step if resume_path else None)
    debug_fh = None
    if cfg.run.debug_batches:
        (run_dir / "debug").mkdir(parents=True, exist_ok=True)
        debug_fh = open(run_dir / "debug" / f"batches-rank{rank}.txt", "a")  # noqa: SIM115

    def payload(epoch_done: int, with_state: bool, metrics: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
            "config": cfg.model_dump(mode="json"),
            "epoch": epoch_done,
            "step": step,
            "num_classes": data.num_classes,
            "num_cameras": data.num_cameras,
            "text_dim": data.text_dim,
            "img_size": [int(v) for v in cfg.data.img_size],
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "dataset": cfg.data.dataset,
            "backbone": cfg.model.backbone,
            "metrics": metrics,
            "best": {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in best.items()
            },
            "world_size": world,
        }
        if with_state:
            p["optimizer"] = optimizer.state_dict()
            p["scheduler"] = scheduler.state_dict()
            p["sampler"] = {**sampler.state_dict(), "epoch": step // spe, "start_batch": step % spe}
            p["rng"] = {"torch": torch.get_rng_state()}
            if accel.scaler is not None:
                p["scaler"] = accel.scaler.state_dict()
        return p

    last_good: list[Path | None] = [resume_path if resume_path and resume_path.name == "last.pt" else None]

    def save_last(epoch_done: int, metrics: dict[str, Any]) -> None:
        accel.wait_for_everyone()
        if main:
            last_good[0] = save_checkpoint(ckpt_dir / "last.pt", payload(epoch_done, True, metrics))
        accel.wait_for_everyone()

    # ---- loop
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not (main and cfg.run.progress), desc="train",
               dynamic_ncols=True)  # fmt: skip
    autocast = accel.autocast
    t_last, n_imgs = time.perf_counter(), 0
    metrics: dict[str, Any] = dict(resume_state.get("metrics") or {}) if resume_state else {}
    if step >= total_steps:
        say(f"already complete ({step} of {total_steps} steps)")
    stopped = False
    for epoch in range(step // spe, cfg.schedule.epochs):
        sampler.set_epoch(epoch, step - epoch * spe)
        model.train()
        for idx in sampler:
            idx_t = torch.as_tensor(idx, dtype=torch.long)
            seed = step_seed(cfg.run.seed, rank, step)
            gen = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed ^ 0x5DEECE66D)  # dropout / drop-path draws are a function of the step too
            images = augment(
                data.images[idx_t].to(device, non_blocking=True), cfg.data.augmentation, mean, std, gen
            )
            if device.type == "cuda" and cfg.model.channels_last and raw.kind == "generic":
                images = images.contiguous(memory_format=torch.channels_last)
            labels = data.labels[idx_t].to(device)
            camids = data.camids[idx_t].to(device)
            texts = data.texts[idx_t].to(device) if data.texts is not None else None
            if debug_fh is not None:
                debug_fh.write(f"{step}\t{epoch}\t" + ",".join(data.image_ids[i] for i in idx) + "\n")
                debug_fh.flush()
            alpha = grl_alpha(cfg.losses.grl_alpha, cfg.losses.grl_schedule, step / max(1, total_steps))
            raw.set_grl_alpha(alpha)
            with autocast():
                out = model(images, camids)
            loss, terms = criterion(out, labels, texts, out.get("logit_scale"))
            bad = torch.tensor([0.0 if math.isfinite(terms["loss"]) else 1.0], device=device)
            if world > 1:
                bad = accel.reduce(bad, reduction="sum")
            if float(bad) > 0:
                bar.close()
                shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items() if k.startswith("loss"))
                good = last_good[0]
                raise DifferError(
                    f"non-finite loss at step {step} (epoch {epoch}) on {'this' if bad.item() else 'another'} "
                    f"rank: {shown}; last good checkpoint: {good if good else 'none written yet'}; lower optim.lr, "
                    "set optim.clip_grad or run.amp=none"
                )
            accel.backward(loss)
            if cfg.optim.clip_grad:
                accel.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            n_imgs += len(idx) * world
            bar.update(1)
            if main and (step % cfg.run.log_every == 0 or step % spe == 0 or step == total_steps):
                now = time.perf_counter()
                row = {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "grl_alpha": alpha,
                       **terms, "images_per_s": n_imgs / max(now - t_last, 1e-9)}  # fmt: skip
                if "logit_scale" in out:
                    row["logit_scale"] = float(out["logit_scale"].detach())
                t_last, n_imgs = now, 0
                train_log.write(row)  # type: ignore[union-attr]
                for k, v in row.items():
                    if k not in ("step", "epoch"):
                        tb.add_scalar(f"train/{k}", v, step)  # type: ignore[union-attr]
                bar.set_postfix(loss=f"{terms['loss']:.3f}", epoch=epoch)
            if cfg.run.checkpoint_every_steps and step % cfg.run.checkpoint_every_steps == 0 and step % spe:
                save_last(epoch, metrics)
            if cfg.run.stop_after_steps and step >= cfg.run.stop_after_steps and step < total_steps:
                stopped = True
                break
        if stopped:
            break
        epoch_done = epoch + 1
        final = epoch_done == cfg.schedule.epochs
        improved = False
        if data.val and (epoch_done % cfg.run.eval_every == 0 or final):
            if main:
                metrics = validate(raw, data.val, cfg, mean, std, device, autocast, ignore_camera)
                metrics["epoch"] = epoch_done
                score = metrics["mAP"] if math.isfinite(metrics["mAP"]) else -math.inf
                improved = score > best["score"] or best["epoch"] is None
                if improved:
                    best = {"score": score, "epoch": epoch_done, "metrics": dict(metrics)}
                val_log.write({"step": step, **metrics, "best_epoch": best["epoch"]})  # type: ignore[union-attr]
                for k in ("rank1", "rank5", "mAP"):
                    tb.add_scalar(f"val/{k}", metrics[k], step)  # type: ignore[union-attr]
                say(f"epoch {epoch_done}: validation {metrics['protocol']} rank1 {metrics['rank1']:.3f} "
                    f"mAP {metrics['mAP']:.3f} (best epoch {best['epoch']})")  # fmt: skip
            accel.wait_for_everyone()
        elif not data.val and final:
            improved = True  # no validation split: the last epoch is the selection
            best = {"score": -math.inf, "epoch": epoch_done, "metrics": {}}
        if main and improved:
            p = payload(epoch_done, False, metrics)
            p["selection"] = "validation" if data.val else "last"
            save_checkpoint(ckpt_dir / "best.pt", p)
        if epoch_done % cfg.run.checkpoint_every == 0 or final:
            save_last(epoch_done, metrics)
    bar.close()
    if debug_fh is not None:
        debug_fh.close()
    if tb is not None:
        tb.close()
    if stopped:
        say(f"stopped after step {step} as run.stop_after_steps asks (as if killed; rerun to resume)")
    else:
        say(f"done: {run_dir / 'checkpoints' / 'last.pt'}")
    accel.wait_for_everyone()
    accel.end_training()
    return run_dir
