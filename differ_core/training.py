"""DIFFER training with accelerate: the same loop on CPU, one GPU, many GPUs and many machines.

``train(cfg) -> run_dir`` writes ``config.yaml``, ``checkpoints/last.pt`` (resume state) and ``best.pt`` (best
validation score), ``train_log.csv``, ``val_log.csv`` and logs ``train/*``, ``val/*`` to accelerate's trackers
(``run.log_with``; the default TensorBoard writes ``tensorboard/differ/``). The steps are :class:`Trainer`'s
methods. Launch several processes with
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
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from differ_common.errors import ConfigError, DifferError
from differ_common.io import clean_stale_temps, write_text_atomic
from differ_common.workspace import RunLayout
from differ_core.config import TrainConfig

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
    from differ_common.workspace import Workspace

    if cfg.run.output:
        return Path(cfg.run.output).expanduser().resolve()
    return Workspace.at(cfg.data.workdir).run_dir(cfg.run.name)


# Keys that say where a run lives and how it is executed or logged, not what it trains: a resumed run may change
# them freely (docs/design.md §4). Every other key of the saved config.yaml must match the requested config.
RESUME_FREE_KEYS: frozenset[str] = frozenset({
    "data.workdir", "data.decode_threads", "data.image_cache", "data.image_cache_max_gb", "data.num_workers",
    "run.output", "run.resume", "run.stop_after_steps", "run.progress",
    "run.threads", "run.log_every", "run.log_with", "run.checkpoint_every_steps", "run.debug_batches",
    "run.eval_batch_size",
})  # fmt: skip


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, val in data.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def config_differences(saved: dict[str, Any], requested: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, requested)}`` for every dotted key whose value differs, except ``RESUME_FREE_KEYS``."""
    a, b = _flatten(saved), _flatten(requested)
    keys = sorted((set(a) | set(b)) - RESUME_FREE_KEYS)
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def hold_run_lock(run_dir: Path, workdir: Path) -> Any:
    """The lock of one run folder (``W/.locks/runs/<name>-<hash of the path>.lock``), held by its one writer for
    the whole training; a second process is refused in one line naming the holder."""
    from differ_common.fingerprint import sha256_text
    from differ_common.io import hold_lock

    lock = workdir / ".locks" / "runs" / f"{run_dir.name}-{sha256_text(str(run_dir))[:12]}.lock"
    return hold_lock(
        lock,
        f"{run_dir}: this run",
        "another `differ train` is writing it; wait for it to finish, or give this run another run.name",
    )


def check_run_folder(
    run_dir: Path, cfg: TrainConfig, resume_anyway: bool = False
) -> dict[str, tuple[Any, Any]]:
    """The keys in which ``run_dir/config.yaml`` (if any) differs from ``cfg``; a DifferError naming them unless
    ``resume_anyway``. Nothing is written."""
    import yaml

    from differ_core.config import config_from_dict

    saved_file = RunLayout(run_dir).config
    if not saved_file.is_file():
        return {}
    try:
        raw = yaml.safe_load(saved_file.read_text())
    except yaml.YAMLError:
        raw = None
    if not isinstance(raw, dict):
        raise DifferError(f"{saved_file}: unreadable run config; move {run_dir} away or give the run another "
                          "run.name")  # fmt: skip
    try:  # keys added to the schema since the run started get their defaults
        saved = config_from_dict(raw, str(saved_file)).model_dump(mode="json")
    except ConfigError:
        saved = raw
    diff = config_differences(saved, cfg.model_dump(mode="json"))
    if diff and not resume_anyway:
        shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8])
        more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
        own = "run.output=<another folder>" if cfg.run.output else f"run.name={cfg.run.name}-2"
        raise DifferError(
            f"{run_dir}: this run was started with another config ({len(diff)} key(s) differ from its "
            f"config.yaml: {shown}{more}); nothing was changed. Give the new run its own folder ({own}), "
            "or pass --resume-anyway to continue this run with the new settings"
        )
    return diff


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
    images: Any,
    camids: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int,
) -> torch.Tensor:
    """Identity features of ``uint8`` images (a tensor or an image source, read one batch at a time), in eval
    mode, computed in fp32 (no autocast, as the official evaluation), float32 on the CPU."""
    from differ_core.data import normalize

    was = model.training
    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = normalize(images[s : s + batch_size].to(device), mean, std)
        f = model(x, camids[s : s + batch_size].to(device))  # fp32, as the official evaluation
        out.append(f.float().cpu())
    model.train(was)
    return torch.cat(out)


def validate(
    model: torch.nn.Module, val: dict[str, Any], cfg: TrainConfig, mean: Any, std: Any, device: Any,
    ignore_camera: bool,
) -> dict[str, Any]:  # fmt: skip
    """Rank the held-out identities (query vs gallery) under ``run.select_protocol``; ``general`` is the fallback
    when no query has a clothes-changing match. Returns rank1/rank5/mAP/num_valid_query/protocol."""
    from differ_core.evaluation.metrics import FeatureDistance, evaluate_ranking

    feats = extract(model, val["images"], torch.tensor(val["camids"]), mean, std, device,
                    cfg.run.eval_batch_size)  # fmt: skip
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


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
                    "aim": "aim", "dvclive": "dvclive"}  # fmt: skip


def check_trackers(names: list[str]) -> None:
    """Refuse, in one line, a ``run.log_with`` tracker whose package is not installed (accelerate skips it)."""
    import importlib.util

    for name in names:
        module = TRACKER_PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(
                f"run.log_with: '{name}' needs the {module} package, which is not installed "
                f"(pip install {module.replace('_', '-')}, or set run.log_with=[])"
            )


class Trainer:
    """One training run in named steps, like torchreid's engine; ``train(cfg)`` is ``with Trainer(cfg) as t: t.fit()``.

    :meth:`set_up` (accelerator, data, model, optimisation) → :meth:`resume` (``last.pt``) → :meth:`prepare` →
    :meth:`open_logs` (CSV logs, accelerate trackers, debug file) → per epoch :meth:`run_epoch` (one
    :meth:`train_step` per batch, :meth:`log_step`, mid-epoch checkpoints) and :meth:`end_of_epoch` (validation,
    ``best.pt``, ``last.pt``). Leaving the ``with`` block closes the progress bar, the debug file and the trackers
    on every path; only a run that ends normally also calls ``accelerator.end_training()``.
    """

    def __init__(self, cfg: TrainConfig, resume_anyway: bool = False) -> None:
        self.cfg = cfg
        self.resume_anyway = resume_anyway
        self.config_changes: dict[str, tuple[Any, Any]] = {}
        self.run_dir = run_dir_for(cfg)
        self.layout = RunLayout(self.run_dir)
        self.accel: Any = None
        self.bar: Any = None
        self.debug_fh: Any = None
        self.step = 0
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": None, "metrics": {}}
        self.metrics: dict[str, Any] = {}
        self.resume_path: Path | None = None
        self.resume_state: dict[str, Any] | None = None
        self.last_good: Path | None = None
        self.stopped = False
        self.run_lock: Any = None
        self.created_run_dir = False
        self.stepping = False  # set once the first training step starts

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)

    def say(self, msg: str) -> None:
        if self.accel is None or self.accel.is_main_process:
            print(f"[differ train] {msg}", flush=True)

    # ---- set-up
    def set_up(self) -> None:
        """The accelerator, the run folder, the data in memory, the model, sampler, optimizer and losses."""
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from differ_common.workspace import resolve_workdir
        from differ_core.data import prepare_data
        from differ_core.losses import DifferLoss
        from differ_core.model import build_model, model_mean_std
        from differ_core.optim import build_optimizer, build_scheduler, is_epoch_scheduler
        from differ_core.video_sampling import make_sampler

        cfg = self.cfg
        problem = cfg.pretrained_problem()
        if problem:
            raise ConfigError(problem)
        check_trackers(cfg.run.log_with)
        env_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        self.cpu = cpu = env_cpu or not torch.cuda.is_available()
        project = ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.layout.trackers))
        self.accel = accel = Accelerator(
            cpu=cpu, mixed_precision=resolve_amp(cfg.run.amp, cpu), log_with=list(cfg.run.log_with) or None,
            project_config=project,
        )  # fmt: skip
        self.rank, self.world, self.main = accel.process_index, accel.num_processes, accel.is_main_process
        self.device = accel.device
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        elif cpu and self.world > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // accel.num_processes))

        workdir = resolve_workdir(cfg.data.workdir)
        if self.main:  # one writer per run folder: a second `differ train` of this run refuses in one line
            self.run_lock = hold_run_lock(self.run_dir, workdir)
            # a killed writer's partial checkpoint: only the lock holder writes here
            clean_stale_temps(self.run_dir)
        self.config_changes = check_run_folder(self.run_dir, cfg, self.resume_anyway)
        if self.main:
            self.created_run_dir = not self.run_dir.exists()
            self.layout.checkpoints.mkdir(parents=True, exist_ok=True)
        self.say(f"run {self.run_dir} on {self.world} process(es), device {self.device.type}, "
                 f"amp {accel.mixed_precision}")  # fmt: skip

        self.data = data = prepare_data(cfg, workdir, self.say)
        if cfg.text.dim and data.text_dim and data.text_dim != cfg.text.dim:
            raise ConfigError(
                f"text.dim: the config expects {cfg.text.dim}-d text features but {cfg.text.encoder} gives "
                f"{data.text_dim}-d; use the encoder the recipe names or set text.dim={data.text_dim}"
            )
        torch.manual_seed(cfg.run.seed)
        model = build_model(cfg, data.num_classes, data.num_cameras, data.text_dim)
        self.mean, self.std = model_mean_std(cfg, model)
        if self.device.type == "cuda" and cfg.model.channels_last and model.kind == "generic":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        try:
            self.sampler = make_sampler(
                cfg, data.labels.tolist(), data.tracks, data.frames, self.world, self.rank
            )  # frames sampled per tracklet each epoch when data.frames_per_tracklet is set (video manifests)
        except ValueError as exc:
            raise DifferError(f"{cfg.data.dataset}: {exc}; lower sampler.P or run.val_ids") from None
        if cfg.data.frames_per_tracklet:
            plan = getattr(self.sampler, "plan", None)
            self.say(f"{cfg.data.frames_per_tracklet} frames per tracklet piece per epoch from {plan.num_pieces} "
                     "pieces (data.frames_per_tracklet)" if plan is not None else
                     "data.frames_per_tracklet ignored: the manifest has no track ids")  # fmt: skip
        self.spe = len(self.sampler)
        if self.spe == 0:
            raise DifferError(
                f"{cfg.data.dataset}: too few images for one P×K={cfg.sampler.P}×{cfg.sampler.K} batch per process "
                f"on {self.world} process(es); lower sampler.P/K or use fewer processes"
            )
        self.total_steps = cfg.schedule.epochs * self.spe
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.spe, cfg.optim.lr)
        self.epoch_scheduler = is_epoch_scheduler(self.scheduler)
        self.criterion = DifferLoss(cfg.losses, cfg.text.non_bio)
        self.ignore_camera = int(np.unique(data.camids.numpy()).size) <= 1

    # ---- the run's own files
    def record(self) -> None:
        """``config.yaml`` (once, never rewritten), ``config.resumed-<n>.yaml`` and ``reproduce.json``: written
        only after the set-up and the resume succeeded, so a failed start changes nothing of the run."""
        from differ_common.workspace import resolve_workdir
        from differ_core.reproducibility import record_training

        cfg, data, accel = self.cfg, self.data, self.accel
        workdir = resolve_workdir(cfg.data.workdir)
        if self.main:  # written once, when the set-up has succeeded, and never rewritten
            if not self.layout.config.exists():
                write_text_atomic(self.layout.config, cfg.to_yaml())
            elif self.config_changes:
                n = 1 + len(list(self.run_dir.glob("config.resumed-*.yaml")))
                side = self.run_dir / f"config.resumed-{n}.yaml"
                write_text_atomic(side, cfg.to_yaml())
                self.say(f"continuing with {len(self.config_changes)} changed key(s) "
                         f"({', '.join(self.config_changes)}); config.yaml kept, the new config is {side.name}")  # fmt: skip
        if self.main:  # the reproducibility record's training part (docs/design.md §5)
            record_training(self.layout, cfg, workdir, world=self.world, mixed_precision=accel.mixed_precision,
                            device=self.device, data=data)  # fmt: skip

    # ---- resume
    def resume(self) -> None:
        """Load ``last.pt`` (``run.resume=auto``) or the given checkpoint: weights, optimizer, scheduler, step."""
        from differ_core.checkpoint import check_compatible, load_model_state, read_checkpoint

        cfg, data = self.cfg, self.data
        path = None
        if cfg.run.resume == "auto":
            path = self.layout.last if self.layout.last.exists() else None
        elif cfg.run.resume != "never":
            path = Path(cfg.run.resume).expanduser()
        if path is None:
            return
        ckpt = read_checkpoint(path)
        check_compatible(
            ckpt, str(path), backbone=cfg.model.backbone, dataset=cfg.data.dataset,
            num_classes=data.num_classes, num_cameras=data.num_cameras, text_dim=data.text_dim,
            img_size=cfg.data.img_size,
        )  # fmt: skip
        load_model_state(self.model, ckpt["model"], str(path))
        if "optimizer" not in ckpt:
            raise DifferError(f"{path}: has no optimizer state (a best.pt?); resume from last.pt")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.best = {**self.best, **(ckpt.get("best") or {})}
        if self.best["score"] is None:
            self.best["score"] = -math.inf
        self.resume_path, self.resume_state = path, ckpt
        self.metrics = dict(ckpt.get("metrics") or {})
        self.last_good = path if path.name == self.layout.last.name else None
        self.say(f"resuming from {path} at step {self.step} (epoch {self.step // self.spe}, "
                 f"batch {self.step % self.spe})")  # fmt: skip

    def prepare(self) -> None:
        """``accelerator.prepare`` the model and optimizer; restore the AMP scaler of a resumed run."""
        accel = self.accel
        self.model, self.optimizer = accel.prepare(self.model, self.optimizer)
        state = self.resume_state
        if state is not None and state.get("scaler") and accel.scaler is not None:
            accel.scaler.load_state_dict(state["scaler"])
        self.raw = accel.unwrap_model(self.model)

    # ---- logs
    def open_logs(self) -> None:
        """CSV logs (cut back to the resume step), the accelerate trackers, the debug file and the progress bar."""
        from tqdm.auto import tqdm

        cfg, keep = self.cfg, (self.step if self.resume_path else None)
        self.train_log = _CsvLog(self.layout.train_log, keep) if self.main else None
        self.val_log = _CsvLog(self.layout.val_log, keep) if self.main else None
        if cfg.run.log_with:
            self.accel.init_trackers(
                "differ", init_kwargs={"tensorboard": {"purge_step": keep}, "wandb": {"name": cfg.run.name},
                                       "mlflow": {"run_name": cfg.run.name}},
            )  # fmt: skip
        if cfg.run.debug_batches:
            self.layout.debug.mkdir(parents=True, exist_ok=True)
            self.debug_fh = open(self.layout.debug / f"batches-rank{self.rank}.txt", "a")  # noqa: SIM115
        self.bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.main and cfg.run.progress),
                        desc="train", dynamic_ncols=True)  # fmt: skip

    def close(self, ok: bool) -> None:
        """Close the bar, the debug file and the trackers; a normal end also ends accelerate's training. A start
        that failed before its first step removes the run folder it created; the run lock is released last."""
        try:
            if self.bar is not None:
                self.bar.close()
            if self.debug_fh is not None:
                self.debug_fh.close()
                self.debug_fh = None
            if self.accel is None:
                return
            if ok:
                self.accel.wait_for_everyone()
                self.accel.end_training()  # finishes the trackers
            else:  # no process-group teardown here: other ranks may still be inside a collective
                for tracker in self.accel.trackers:
                    tracker.finish()
            self.accel.trackers = []
        finally:
            if not ok and self.created_run_dir and not self.stepping:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if self.run_lock is not None:
                self.run_lock.release()

    # ---- checkpoints
    def payload(self, epoch_done: int, with_state: bool) -> dict[str, Any]:
        """A checkpoint's contents; ``with_state`` adds what resuming needs (optimizer, scheduler, sampler, ...)."""
        cfg, data, best = self.cfg, self.data, self.best
        p: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in self.raw.state_dict().items()},
            "config": cfg.model_dump(mode="json"),
            "epoch": epoch_done,
            "step": self.step,
            "num_classes": data.num_classes,
            "num_cameras": data.num_cameras,
            "text_dim": data.text_dim,
            "img_size": [int(v) for v in cfg.data.img_size],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "dataset": cfg.data.dataset,
            "backbone": cfg.model.backbone,
            "metrics": self.metrics,
            "best": {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in best.items()
            },
            "world_size": self.world,
        }
        if with_state:
            p["optimizer"] = self.optimizer.state_dict()
            p["scheduler"] = self.scheduler.state_dict()
            p["sampler"] = {**self.sampler.state_dict(), "epoch": self.step // self.spe,
                            "start_batch": self.step % self.spe}  # fmt: skip
            p["rng"] = {"torch": torch.get_rng_state()}
            if self.accel.scaler is not None:
                p["scaler"] = self.accel.scaler.state_dict()
        return p

    def save_last(self, epoch_done: int) -> None:
        """``last.pt`` (resume state), written by the main process between two barriers."""
        from differ_core.checkpoint import save_checkpoint

        self.accel.wait_for_everyone()
        if self.main:
            self.last_good = save_checkpoint(self.layout.last, self.payload(epoch_done, True))
        self.accel.wait_for_everyone()

    def save_best(self, epoch_done: int) -> None:
        """``best.pt``: the weights of the selected epoch (no resume state)."""
        from differ_core.checkpoint import save_checkpoint

        p = self.payload(epoch_done, False)
        p["selection"] = "validation" if self.data.val else "last"
        save_checkpoint(self.layout.best, p)

    # ---- one epoch, one step
    def fit(self) -> Path:
        """Run every step in order; returns the run folder."""
        self.set_up()
        self.resume()
        self.record()
        self.prepare()
        self.open_logs()
        if self.step >= self.total_steps:
            self.say(f"already complete ({self.step} of {self.total_steps} steps)")
        self.t_last, self.n_imgs = time.perf_counter(), 0
        self.stepping = True
        for epoch in range(self.step // self.spe, self.cfg.schedule.epochs):
            self.run_epoch(epoch)
            if self.stopped:
                break
            self.end_of_epoch(epoch + 1)
        if self.stopped:
            self.say(
                f"stopped after step {self.step} as run.stop_after_steps asks (as if killed; rerun to resume)"
            )
        else:
            self.say(f"done: {self.layout.last}")
        return self.run_dir

    def run_epoch(self, epoch: int) -> None:
        """The epoch's batches from the current step on; sets ``stopped`` at ``run.stop_after_steps``."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch, self.step - epoch * self.spe)
        if self.epoch_scheduler:
            self.scheduler.step(epoch + 1)  # timm, t_in_epochs: the official loop steps epoch 1..N first
        self.model.train()
        for idx, images in self.data.images.batches(self.sampler):  # a DataLoader on the disk path
            alpha, terms, out = self.train_step(epoch, idx, images)
            self.step += 1
            self.n_imgs += len(idx) * self.world
            self.bar.update(1)
            step = self.step
            if self.main and (
                step % cfg.run.log_every == 0 or step % self.spe == 0 or step == self.total_steps
            ):
                self.log_step(epoch, alpha, terms, out)
            if (
                cfg.run.checkpoint_every_steps
                and step % cfg.run.checkpoint_every_steps == 0
                and step % self.spe
            ):
                self.save_last(epoch)
            if cfg.run.stop_after_steps and step >= cfg.run.stop_after_steps and step < self.total_steps:
                self.stopped = True
                return

    def train_step(
        self, epoch: int, idx: list[int], images: torch.Tensor | None = None
    ) -> tuple[float, dict[str, float], dict[str, Any]]:
        """One optimisation step on the batch ``idx`` (``images``: its uint8 images, when already read); returns
        ``(grl alpha, loss terms, model outputs)``."""
        from differ_core.data import augment
        from differ_core.grl import grl_alpha

        cfg, data, device, accel = self.cfg, self.data, self.device, self.accel
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        seed = step_seed(cfg.run.seed, self.rank, self.step)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed ^ 0x5DEECE66D)  # dropout / drop-path draws are a function of the step too
        if images is None:
            images = data.images[idx_t]
        images = augment(
            images.to(device, non_blocking=True), cfg.data.augmentation, self.mean, self.std, gen
        )
        if device.type == "cuda" and cfg.model.channels_last and self.raw.kind == "generic":
            images = images.contiguous(memory_format=torch.channels_last)
        labels = data.labels[idx_t].to(device)
        camids = data.camids[idx_t].to(device)
        texts = data.texts[idx_t].to(device) if data.texts is not None else None
        if self.debug_fh is not None:
            self.debug_fh.write(f"{self.step}\t{epoch}\t" + ",".join(data.image_ids[i] for i in idx) + "\n")
            self.debug_fh.flush()
        alpha = grl_alpha(cfg.losses.grl_alpha, cfg.losses.grl_schedule, self.step / max(1, self.total_steps))
        self.raw.set_grl_alpha(alpha)
        with accel.autocast():
            out = self.model(images, camids)
        loss, terms = self.criterion(out, labels, texts, out.get("logit_scale"))
        self.check_finite(epoch, terms)
        accel.backward(loss)
        if cfg.optim.clip_grad:
            accel.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        self.optimizer.step()
        if not self.epoch_scheduler:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return alpha, terms, out

    def check_finite(self, epoch: int, terms: dict[str, float]) -> None:
        """Stop every rank with one message when any rank's loss is not finite."""
        bad = torch.tensor([0.0 if math.isfinite(terms["loss"]) else 1.0], device=self.device)
        if self.world > 1:
            bad = self.accel.reduce(bad, reduction="sum")
        if float(bad) > 0:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items() if k.startswith("loss"))
            good = self.last_good
            raise DifferError(
                f"non-finite loss at step {self.step} (epoch {epoch}) on "
                f"{'another' if math.isfinite(terms['loss']) else 'this'} rank: {shown}; last good "
                f"checkpoint: {good if good else 'none written yet'}; lower optim.lr, set optim.clip_grad or "
                "run.amp=none"
            )

    def log_step(self, epoch: int, alpha: float, terms: dict[str, float], out: dict[str, Any]) -> None:
        """A ``train_log.csv`` row and the same values to the trackers (``train/<key>``)."""
        now = time.perf_counter()
        row = {"step": self.step, "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "grl_alpha": alpha,
               **terms, "images_per_s": self.n_imgs / max(now - self.t_last, 1e-9)}  # fmt: skip
        if "logit_scale" in out:
            row["logit_scale"] = float(out["logit_scale"].detach())
        self.t_last, self.n_imgs = now, 0
        self.train_log.write(row)  # type: ignore[union-attr]
        self.accel.log(
            {f"train/{k}": v for k, v in row.items() if k not in ("step", "epoch")}, step=self.step
        )
        self.bar.set_postfix(loss=f"{terms['loss']:.3f}", epoch=epoch)

    # ---- end of epoch
    def end_of_epoch(self, epoch_done: int) -> None:
        """Validation (every ``run.eval_every`` epochs and at the end), ``best.pt`` when improved, ``last.pt``."""
        cfg, data = self.cfg, self.data
        final = epoch_done == cfg.schedule.epochs
        improved = False
        if data.val and (epoch_done % cfg.run.eval_every == 0 or final):
            if self.main:
                improved = self.validate_epoch(epoch_done)
            self.accel.wait_for_everyone()
        elif not data.val and final:
            improved = True  # no validation split: the last epoch is the selection
            self.best = {"score": -math.inf, "epoch": epoch_done, "metrics": {}}
        if self.main and improved:
            self.save_best(epoch_done)
        if epoch_done % cfg.run.checkpoint_every == 0 or final:
            self.save_last(epoch_done)

    def validate_epoch(self, epoch_done: int) -> bool:
        """Validate (main process), log ``val_log.csv`` and ``val/*``; True when the score beats the best."""
        metrics = validate(
            self.raw, self.data.val, self.cfg, self.mean, self.std, self.device, self.ignore_camera
        )
        metrics["epoch"] = epoch_done
        self.metrics = metrics
        score = metrics["mAP"] if math.isfinite(metrics["mAP"]) else -math.inf
        improved = score > self.best["score"] or self.best["epoch"] is None
        if improved:
            self.best = {"score": score, "epoch": epoch_done, "metrics": dict(metrics)}
        self.val_log.write({"step": self.step, **metrics, "best_epoch": self.best["epoch"]})  # type: ignore[union-attr]
        self.accel.log({f"val/{k}": metrics[k] for k in ("rank1", "rank5", "mAP")}, step=self.step)
        self.say(f"epoch {epoch_done}: validation {metrics['protocol']} rank1 {metrics['rank1']:.3f} "
                 f"mAP {metrics['mAP']:.3f} (best epoch {self.best['epoch']})")  # fmt: skip
        return improved


def stage_names_problem(cfg: TrainConfig) -> None:
    """A ConfigError when ``cfg`` still names a pre-training stage (``pretrain:<name>``), which only the pipeline
    resolves into files."""
    for key, value in (("text.encoder", cfg.text.encoder), ("model.pretrained", cfg.model.pretrained)):
        if isinstance(value, str) and value.startswith("pretrain:"):
            raise ConfigError(
                f"{key}: {value!r} names a pre-trained start, which `differ train`, `differ run` and `differ demo` "
                "resolve into files (the shipped start in differ_core/starts/, else the workspace's pre-training); "
                "calling the trainer directly, pass the files instead "
                "(text.encoder=open_clip:<json>@<weights>, model.pretrained=<weights>)"
            )


def train(cfg: TrainConfig, resume_anyway: bool = False) -> Path:
    """Train (or resume) the run ``cfg`` describes; returns its run folder. A run folder whose ``config.yaml``
    differs from ``cfg`` is refused unless ``resume_anyway`` (see :func:`check_run_folder`)."""
    stage_names_problem(cfg)
    with Trainer(cfg, resume_anyway) as trainer:
        return trainer.fit()
