"""The identity stage of a pre-training: the image tower's trunk learns to tell the corpus's people apart.

ReID's strong baseline on the trunk alone: P×K identity batches (``IdentityBatchSampler``), a BNNeck and a linear
classifier (ID cross-entropy with label smoothing) plus the batch-hard triplet loss on the pooled feature, AdamW
with warm-up and a cosine decay, flips and padded random crops. The people wear many outfits each, so clothing is
no shortcut and what is learned is the person. The classifier is thrown away; the contrastive stage that follows
trains the projections and the text tower against the trunk (``train.lock_image`` keeps it as learned here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from differ_core.clip_pretrain.corpus import Corpus


def _shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back at a random offset per image (the ReID recipes' padded crop)."""
    if pad <= 0:
        return x
    b, _c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def train_identity(
    cfg: Any,
    corpus: Corpus,
    trunk: torch.nn.Module,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``trunk`` (a timm model with ``num_classes=0``) in place on the corpus's training people; returns the
    per-epoch log."""
    from tqdm.auto import tqdm

    from differ_core.clip_pretrain.train import to_input
    from differ_core.losses import batch_hard_triplet, id_loss
    from differ_core.model import feature_dim
    from differ_core.sampler import IdentityBatchSampler

    s = cfg.identity
    train_idx = np.flatnonzero(~corpus.held_out)
    pids = corpus.attributes["pid"].to_numpy()[train_idx]
    _, labels_np = np.unique(pids, return_inverse=True)
    labels = torch.from_numpy(labels_np)
    images = torch.from_numpy(corpus.images[train_idx])
    dim = feature_dim(trunk)
    neck = torch.nn.BatchNorm1d(dim)
    neck.bias.requires_grad_(False)
    classifier = torch.nn.Linear(dim, int(labels_np.max()) + 1, bias=False)
    torch.nn.init.normal_(classifier.weight, std=0.001)
    params = [*trunk.parameters(), *neck.parameters(), *classifier.parameters()]
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=s.lr, weight_decay=s.weight_decay)
    sampler = IdentityBatchSampler(labels_np.tolist(), s.P, s.K, seed=cfg.people.seed)
    steps = len(sampler)
    total, warm = s.epochs * steps, max(1, int(s.warmup_epochs * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))
        ),
    )
    gen = torch.Generator().manual_seed(cfg.people.seed + 1)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="pretrain identity", unit="step", disable=not progress)
    trunk.train()
    neck.train()
    for epoch in range(s.epochs):
        sampler.set_epoch(epoch)
        tot_loss = tot_acc = 0.0
        for batch in sampler:
            ix = torch.as_tensor(np.asarray(batch))
            flip = torch.rand(len(ix), generator=gen) < cfg.train.flip
            x = _shift(to_input(images[ix], flip), s.pad, gen)
            feat = trunk(x)
            y = labels[ix]
            tri, _ = batch_hard_triplet(feat, y, s.margin)
            logits = classifier(neck(feat))
            ce = id_loss(logits, y, s.label_smoothing)
            loss = ce + tri
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach())
            tot_acc += float((logits.detach().argmax(1) == y).float().mean())
            bar.update(1)
        elapsed = time.perf_counter() - t0
        row = {"stage": "identity", "epoch": epoch + 1, "loss": tot_loss / steps, "id_accuracy": tot_acc / steps,
               "seconds": elapsed,
               "images_per_s": (epoch + 1) * steps * s.P * s.K / elapsed}  # fmt: skip
        history.append(row)
        bar.set_postfix(epoch=epoch + 1, loss=f"{row['loss']:.3f}")
        log(
            f"pretrain identity epoch {epoch + 1}/{s.epochs}: loss {row['loss']:.3f}, "
            f"train ID accuracy {row['id_accuracy']:.3f}"
        )
    bar.close()
    trunk.eval()
    return history
