"""Optimizer with the paper's per-parameter LR / weight decay, and the two LR schedules of ``schedule.name``.

As in TransReID and the official DIFFER code: every parameter gets ``optim.lr`` and ``optim.weight_decay``,
except biases, which get ``lr × bias_lr_factor`` (2) and ``weight_decay_bias`` (default: the same decay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from differ_core.config import OptimConfig, ScheduleConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Parameter groups keyed by (lr, weight decay); frozen parameters are left out."""
    wd_bias = cfg.weight_decay if cfg.weight_decay_bias is None else cfg.weight_decay_bias
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    names: dict[tuple[float, float], list[str]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = cfg.lr * (cfg.backbone_lr_factor if name.startswith("backbone.") else 1.0)
        if name.endswith("bias"):
            key = (lr * cfg.bias_lr_factor, wd_bias)
        else:
            key = (lr, cfg.weight_decay)
        groups.setdefault(key, []).append(p)
        names.setdefault(key, []).append(name)
    return [
        {"params": ps, "lr": lr, "weight_decay": wd, "names": names[(lr, wd)]}
        for (lr, wd), ps in groups.items()
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    for g in groups:
        g.pop("names")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor_fn(cfg: ScheduleConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of each group's base LR at optimizer step ``s`` (0-based): linear warm-up from
    ``warmup_factor`` over ``warmup_epochs``, then cosine down to ``min_lr_factor`` at the last step (or flat)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(total, int(round(cfg.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warm:
            return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / warm
        if not cfg.cosine:
            return 1.0
        span = max(1, total - warm)
        t = min(1.0, (step - warm) / span)
        return cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def build_timm_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float) -> Any:
    """The official schedule (``solver/scheduler_factory.py`` of the authors' code): timm ``CosineLRScheduler``
    over ``epochs`` with ``lr_min = min_lr_factor * base_lr`` and warm-up from ``warmup_lr``, in epochs. Call
    ``.step(epoch + 1)`` at the start of 0-based ``epoch`` (their loop runs epochs 1..N and steps first)."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(
        optimizer, t_initial=cfg.epochs, lr_min=cfg.min_lr_factor * base_lr, cycle_mul=1.0, cycle_decay=0.1,
        warmup_lr_init=cfg.warmup_lr, warmup_t=cfg.warmup_epochs, cycle_limit=1, t_in_epochs=True,
    )  # fmt: skip


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, base_lr: float | None = None
) -> Any:
    """``step_cosine``: a per-step LambdaLR (``.step()`` after every optimizer step); ``timm_cosine``: see
    :func:`build_timm_scheduler` (``base_lr`` = ``optim.lr`` is then required)."""
    if cfg.name == "timm_cosine":
        if base_lr is None:
            raise ValueError("schedule.name=timm_cosine needs base_lr (optim.lr) for lr_min")
        return build_timm_scheduler(optimizer, cfg, base_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(cfg, steps_per_epoch))


def is_epoch_scheduler(scheduler: Any) -> bool:
    """True for the timm scheduler (stepped per epoch with the epoch number), False for the per-step LambdaLR."""
    return not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
