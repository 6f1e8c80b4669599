"""Gradient reversal and the losses: the NBDetach projection descends its loss while the backbone ascends it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from differ_core.config import LossConfig
from differ_core.grl import GradientReversal, grad_reverse, grl_alpha
from differ_core.losses import (
    DifferLoss,
    batch_hard_triplet,
    image_text_contrastive,
    nbdetach_losses,
    positive_mask,
)
from differ_core.model import NBDetachHead


def test_grad_reverse_is_identity_forward_and_negated_scaled_backward():
    x = torch.randn(5, 3, requires_grad=True)
    up = torch.randn(5, 3)
    y = grad_reverse(x, 0.7)
    assert torch.equal(y, x)
    (y * up).sum().backward()
    assert torch.allclose(x.grad, -0.7 * up)
    x.grad = None
    (GradientReversal(0.0)(x) * up).sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_grl_alpha_schedules():
    assert grl_alpha(0.5, "constant", 0.3) == 0.5
    assert grl_alpha(1.0, "dann", 0.0) == 0.0
    assert grl_alpha(1.0, "dann", 1.0) == pytest.approx(1.0, abs=1e-4)
    assert 0 < grl_alpha(1.0, "dann", 0.1) < grl_alpha(1.0, "dann", 0.5) < 1
    with pytest.raises(ValueError, match="dann"):
        grl_alpha(1.0, "linear", 0.5)


def _nb_setup(reversal: bool):
    torch.manual_seed(0)
    backbone = nn.Linear(6, 5)
    head = NBDetachHead(5, 4, alpha=1.0)
    if not reversal:
        head.grl = nn.Identity()
    x = torch.randn(8, 6)
    texts = torch.randn(8, 2, 4)  # slot 0 biometric, slot 1 the perspective

    def loss_fn():
        nb = head(backbone(x)).unsqueeze(1)
        return nbdetach_losses(nb, texts, logit_scale=5.0)[0][0]

    return backbone, head, loss_fn


def test_nbdetach_projection_descends_and_backbone_ascends():
    bb_r, head_r, loss_r = _nb_setup(reversal=True)
    bb_n, head_n, loss_n = _nb_setup(reversal=False)
    assert torch.allclose(loss_r(), loss_n())  # identical forward
    loss_r().backward()
    loss_n().backward()
    # the projection sees the true gradient, the backbone the negated one
    assert torch.allclose(head_r.proj.weight.grad, head_n.proj.weight.grad)
    assert torch.allclose(bb_r.weight.grad, -bb_n.weight.grad)
    assert bb_r.weight.grad.abs().sum() > 0
    # a small step along -grad: the projection's step lowers the loss, the backbone's step raises it
    base = float(loss_r().detach())
    with torch.no_grad():
        head_r.proj.weight -= 1e-2 * head_r.proj.weight.grad
    after_proj = float(loss_r().detach())
    with torch.no_grad():
        head_r.proj.weight += 1e-2 * head_r.proj.weight.grad  # undo
        bb_r.weight -= 1e-2 * bb_r.weight.grad
        bb_r.bias -= 1e-2 * bb_r.bias.grad
    after_backbone = float(loss_r().detach())
    assert after_proj < base < after_backbone


def test_contrastive_equals_cross_entropy_when_texts_distinct():
    torch.manual_seed(1)
    img, txt = torch.randn(6, 4), torch.randn(6, 4)
    loss, acc = image_text_contrastive(img, txt, logit_scale=2.0)
    logits = 2.0 * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).t()
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(6)))
    assert float(acc) == pytest.approx(float((logits.argmax(1) == torch.arange(6)).float().mean()))


def test_contrastive_identical_texts_are_positives():
    txt = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    pos = positive_mask(txt)
    assert pos.tolist()[0] == [True, True, False, False] and pos[2].sum() == 1
    # image 1 is closest to text 0, which equals its own text: counted correct, and its loss is low
    img = txt.clone() * 10
    loss, acc = image_text_contrastive(img, txt, logit_scale=10.0)
    assert float(acc) == 1.0
    single = F.cross_entropy(10.0 * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).t(), torch.arange(4))
    assert float(loss) < float(single)  # the duplicate is not punished as a negative


def test_nbdetach_indexes_the_perspective_dimension():
    torch.manual_seed(2)
    B, K, D = 6, 2, 5
    texts = torch.randn(B, 1 + K, D)
    nb = texts[:, 1:].clone()  # branch k predicts perspective k exactly
    losses = nbdetach_losses(nb, texts, logit_scale=20.0)
    assert len(losses) == K and all(float(acc) == 1.0 for _, acc in losses)
    changed = texts.clone()
    changed[:, 2] = torch.randn(B, D)  # change perspective k=1 only
    new = nbdetach_losses(nb, changed, logit_scale=20.0)
    assert torch.allclose(new[0][0], losses[0][0]) and not torch.allclose(new[1][0], losses[1][0])
    with pytest.raises(ValueError, match="slots"):
        nbdetach_losses(nb, texts[:, :2], 1.0)


def test_batch_hard_triplet_soft_and_margin():
    f = torch.tensor([[0.0, 0], [0.0, 1], [5.0, 0], [5.0, 1]])
    pids = torch.tensor([0, 0, 1, 1])
    soft, acc = batch_hard_triplet(f, pids)
    # hardest positive 1, hardest negative 5 for every anchor
    assert float(soft) == pytest.approx(float(F.softplus(torch.tensor(1.0 - 5.0))), rel=1e-4)
    assert float(acc) == 1.0
    hard, _ = batch_hard_triplet(f, pids, margin=5.0)
    assert float(hard) == pytest.approx(1.0, rel=1e-4)
    alone, _ = batch_hard_triplet(f[:2], pids[:2])  # no negatives: nothing to learn
    assert float(alone) == 0.0


def test_batch_hard_triplet_takes_the_hardest_positive_and_negative():
    # three images per identity on a line: each anchor's positives are at different distances
    f = torch.tensor([[0.0, 0], [0.0, 1], [0.0, 3], [10.0, 0], [10.0, 1], [10.0, 3]])
    pids = torch.tensor([0, 0, 0, 1, 1, 1])
    loss, acc = batch_hard_triplet(f, pids, margin=9.0)
    # hardest positive 3, 2, 3 (per identity); hardest negative 10 for every anchor: relu(ap - 10 + 9)
    assert float(loss) == pytest.approx(5.0 / 3.0, rel=1e-4)
    assert float(acc) == 1.0


def test_differ_loss_terms_follow_the_config():
    """Each weight multiplies its own term (value and gradient); a term that is off adds nothing, no gradient."""
    torch.manual_seed(3)
    base = {"feat": torch.randn(4, 6), "logits": torch.randn(4, 3), "bio_proj": torch.randn(4, 5),
            "nb_proj": torch.randn(4, 2, 5)}  # fmt: skip
    pids, texts = torch.tensor([0, 0, 1, 1]), torch.randn(4, 3, 5)
    nonbio = ["hairstyle", "clothing"]
    reads = {"id": "logits", "triplet": "feat", "bio": "bio_proj", "nbdetach": "nb_proj"}
    weights = {"id": 0.3, "triplet": 0.7, "bio": 1.9, "nbdetach": 0.5}

    def run(**cfg):
        out = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        total, terms = DifferLoss(LossConfig(**cfg), nonbio)(out, pids, texts)
        total.backward()
        return float(total.detach()), terms, {k: v.grad for k, v in out.items()}

    unit = {}
    for name, key in reads.items():
        one, terms, grads = run(use=[name])
        unit[name] = one
        assert one == pytest.approx(terms[f"loss_{name}"], rel=1e-6)
        assert all(g is None for k, g in grads.items() if k != key)  # the other inputs get no gradient
        w_total, _, w_grads = run(use=[name], **{f"{name}_weight": weights[name]})
        assert w_total == pytest.approx(weights[name] * one, rel=1e-5)
        assert torch.allclose(w_grads[key], weights[name] * grads[key], rtol=1e-5, atol=1e-7)
        zero_total, _, zero_grads = run(use=[name], **{f"{name}_weight": 0.0})
        assert zero_total == 0.0 and not zero_grads[key].any()
    full, terms, grads = run(**{f"{n}_weight": w for n, w in weights.items()})
    assert full == pytest.approx(sum(weights[n] * unit[n] for n in reads), rel=1e-5)
    assert terms["loss_nbdetach"] == pytest.approx(
        terms["loss_nb_hairstyle"] + terms["loss_nb_clothing"], rel=1e-5
    )
    off, base_terms, off_grads = run(use=["id", "triplet"], bio_weight=1.9, nbdetach_weight=0.5)
    assert set(base_terms) == {"loss_id", "acc_id", "loss_triplet", "acc_triplet", "loss"}
    assert off == pytest.approx(unit["id"] + unit["triplet"], rel=1e-5)
    assert off_grads["bio_proj"] is None and off_grads["nb_proj"] is None
