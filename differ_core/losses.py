"""DIFFER's losses (docs/design.md §7): ID cross-entropy, batch-hard triplet, biometric and NBDetach contrastive.

``L = w_id L_ID + w_tri L_tri + w_b L_Cb + w_n sum_k L_Cn,k``. The contrastive loss is image→text cross-entropy
over the batch's cosine similarities times a logit scale (1 in the paper): the text of the image's own row is the
positive. Rows of a batch often carry *identical* text (the same identity's summary, or two images with the same
caption); treating an identical text as a negative would push the image away from its own description, so every
row whose text feature equals the positive's is a positive too: the loss is ``-log`` of the softmax mass on all
positives (plain cross-entropy when the batch's texts are distinct).

NBDetach indexes the *perspective* dimension (``nb_proj[:, k]`` against ``text[:, 1 + k]``), not the batch (the
official code's bug, reproduced by ``losses.nbdetach_index: batch`` for comparisons with the released checkpoints);
its gradient reversal lives in the model (:class:`differ_core.model.NBDetachHead`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from differ_core.config import LossConfig


def id_loss(logits: torch.Tensor, pids: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the train identities (optional label smoothing)."""
    return F.cross_entropy(logits.float(), pids, label_smoothing=label_smoothing)


def batch_hard_triplet(
    feats: torch.Tensor, pids: torch.Tensor, margin: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-hard triplet loss on Euclidean distances; ``margin=None`` is the soft margin ``softplus(ap - an)``.

    Returns ``(loss, accuracy)`` where accuracy is the fraction of anchors whose hardest negative is farther than
    their hardest positive. Anchors without a positive or a negative in the batch are left out.
    """
    x = feats.float()
    sq = (x * x).sum(1, keepdim=True)
    dist = (sq + sq.t() - 2.0 * x @ x.t()).clamp_min(1e-12).sqrt()
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos = same & ~eye
    neg = ~same
    valid = pos.any(1) & neg.any(1)
    if not bool(valid.any()):
        zero = feats.sum() * 0.0
        return zero, zero.detach()
    ap = dist.masked_fill(~pos, float("-inf")).max(1).values[valid]
    an = dist.masked_fill(~neg, float("inf")).min(1).values[valid]
    loss = F.softplus(ap - an).mean() if margin is None else F.relu(ap - an + margin).mean()
    return loss, (an > ap).float().mean().detach()


def positive_mask(texts: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` bool: rows whose text features are identical (the diagonal is always True)."""
    t = texts.float()
    same = torch.cdist(t, t) <= 1e-6 * (1.0 + t.norm(dim=1, keepdim=True))
    return same | torch.eye(len(t), dtype=torch.bool, device=t.device)


def image_text_contrastive(
    img: torch.Tensor, texts: torch.Tensor, logit_scale: float | torch.Tensor = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image→text cross-entropy over the batch's cosine similarities × ``logit_scale``.

    ``img``: projected image features [B, D]; ``texts``: the rows' text features [B, D]. Identical texts are all
    positives: the loss is ``-log`` of the softmax mass on them. Returns ``(loss, accuracy)``: accuracy = the most similar text is a positive.
    """
    logits = F.normalize(img.float(), dim=1) @ F.normalize(texts.float(), dim=1).t()
    logits = logits * logit_scale
    pos = positive_mask(texts)
    # -log of the softmax mass on the positives (= plain cross-entropy when every text is distinct)
    loss = (
        torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
    ).mean()
    acc = pos.gather(1, logits.argmax(1, keepdim=True)).float().mean().detach()
    return loss, acc


def nbdetach_losses(
    nb_proj: torch.Tensor, texts: torch.Tensor, logit_scale: float | torch.Tensor = 1.0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One contrastive ``(loss, accuracy)`` per non-biometric perspective ``k``: ``nb_proj[:, k]`` vs ``texts[:, 1 + k]``.

    ``nb_proj``: [B, K, D] (the model's reversed branches); ``texts``: [B, 1 + K, D] (slot 0 = biometric).
    """
    if nb_proj.shape[1] + 1 != texts.shape[1]:
        raise ValueError(
            f"nb_proj has {nb_proj.shape[1]} perspectives but texts has {texts.shape[1]} slots (1 + K)"
        )
    return [
        image_text_contrastive(nb_proj[:, k], texts[:, 1 + k], logit_scale) for k in range(nb_proj.shape[1])
    ]


def nbdetach_losses_official_head(
    nb_proj: torch.Tensor, texts: torch.Tensor, logit_scale: float | torch.Tensor = 1.0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The official HEAD's reversed loss (``loss/make_loss.py``, ``clipBioReverse``), bug included, for comparisons.

    For ``k`` in ``0..K-1`` it takes *sample* ``k``'s K projections ``nb_proj[k]`` [K, D] (the batch index where
    the perspective was meant), scores them against every row's text of perspective ``k`` and applies plain
    cross-entropy with labels ``0..K-1``: projection ``j`` of sample ``k`` should match sample ``j``'s text.
    """
    n_persp = nb_proj.shape[1]
    if n_persp + 1 != texts.shape[1]:
        raise ValueError(f"nb_proj has {n_persp} perspectives but texts has {texts.shape[1]} slots (1 + K)")
    if nb_proj.shape[0] < n_persp:
        raise ValueError(
            f"losses.nbdetach_index=batch needs a batch of at least {n_persp} images (one per perspective)"
        )
    out = []
    for k in range(n_persp):
        logits = F.normalize(nb_proj[k].float(), dim=1) @ F.normalize(texts[:, 1 + k].float(), dim=1).t()
        logits = logits * logit_scale
        labels = torch.arange(n_persp, device=logits.device)
        out.append((F.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean().detach()))
    return out


class DifferLoss:
    """The weighted sum of the configured losses; returns ``(total, terms)`` with every term and accuracy."""

    def __init__(self, cfg: LossConfig, nonbio: Sequence[str]) -> None:
        self.cfg = cfg
        self.use = set(cfg.use)
        self.nonbio = list(nonbio)
        self.nbdetach = nbdetach_losses_official_head if cfg.nbdetach_index == "batch" else nbdetach_losses

    def __call__(
        self,
        out: dict[str, torch.Tensor],
        pids: torch.Tensor,
        texts: torch.Tensor | None,
        logit_scale: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        scale = c.logit_scale if logit_scale is None else logit_scale
        total = out["feat"].new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}
        if "id" in self.use:
            loss = id_loss(out["logits"], pids, c.label_smoothing)
            terms["loss_id"] = loss
            terms["acc_id"] = (out["logits"].argmax(1) == pids).float().mean()
            total = total + c.id_weight * loss
        if "triplet" in self.use:
            loss, acc = batch_hard_triplet(out["feat"], pids, c.triplet_margin)
            terms["loss_triplet"], terms["acc_triplet"] = loss, acc
            total = total + c.triplet_weight * loss
        if "bio" in self.use:
            if texts is None:
                raise ValueError("the bio loss needs the batch's text features")
            loss, acc = image_text_contrastive(out["bio_proj"], texts[:, 0], scale)
            terms["loss_bio"], terms["acc_bio"] = loss, acc
            total = total + c.bio_weight * loss
        if "nbdetach" in self.use and self.nonbio:
            if texts is None:
                raise ValueError("the nbdetach loss needs the batch's text features")
            nb_total = total.new_zeros(())
            for name, (loss, acc) in zip(
                self.nonbio, self.nbdetach(out["nb_proj"], texts, scale), strict=True
            ):
                terms[f"loss_nb_{name}"], terms[f"acc_nb_{name}"] = loss, acc
                nb_total = nb_total + loss
            terms["loss_nbdetach"] = nb_total
            total = total + c.nbdetach_weight * nb_total
        terms["loss"] = total
        return total, {k: float(v.detach()) for k, v in terms.items()}
