"""The authors' training recipe (issue 12): every value of the four real-dataset configs and the code under them,
with the expected numbers taken from the official code (github.com/xliangp/DIFFER, HEAD 67acb5d; CCVID from the
first release 508fc5a), never from this implementation. docs/fidelity.md lists the same values and the deviations.
"""

from __future__ import annotations

import csv
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from differ_core.config import LossConfig, ScheduleConfig, TrainConfig, load_config
from differ_core.config_files import resolve_config
from differ_core.data import official_erasing, official_erasing_boxes, resize_crop
from differ_core.losses import DifferLoss, nbdetach_losses, nbdetach_losses_official_head
from differ_core.optim import build_optimizer, build_scheduler
from differ_core.sampler import IdentityBatchSampler

from .conftest import toy_config

REAL = ("ltcc", "prcc", "celeb_light", "ccvid")
# SOLVER.BASE_LR: configs/{ltcc,prcc,Celeb_light}/eva02_l_bio.yml @ 67acb5d, configs/ccvid/eva02_l_bio.yml @ 508fc5a
BASE_LR = {"ltcc": 2e-6, "prcc": 2e-6, "celeb_light": 2e-5, "ccvid": 2e-5}
WARMUP_LR = 7.8125e-7  # config/defaults.py SOLVER.WARMUP_LR
WARMUP_T, T_INITIAL = 20, 60  # defaults.py SOLVER.WARMUP_EPOCHS, the yml's SOLVER.MAX_EPOCHS
BIAS_LR_FACTOR = 2  # the yml's SOLVER.BIAS_LR_FACTOR (solver/make_optimizer.py: bias lr = BASE_LR x factor)


def _cfg(name: str) -> TrainConfig:
    return load_config(resolve_config(f"configs/{name}.yaml"))


def _official_lr(epoch: int, group_lr: float, base_lr: float) -> float:
    """solver/cosine_lr.py ``_get_lr(t)`` with solver/scheduler_factory.py's arguments (lr_min = 0.1 x BASE_LR,
    warmup_prefix False, cycle_limit 1), re-stated; processor.py calls ``scheduler.step(epoch)`` for epoch 1..60."""
    lr_min = 0.1 * base_lr
    if epoch < WARMUP_T:
        return WARMUP_LR + epoch * (group_lr - WARMUP_LR) / WARMUP_T
    if epoch // T_INITIAL >= 1:  # i >= cycle_limit
        return lr_min
    return lr_min + 0.5 * (group_lr - lr_min) * (1 + math.cos(math.pi * epoch / T_INITIAL))


def _lrs(cfg: TrainConfig) -> dict[int, tuple[float, float]]:
    """(weight LR, bias LR) at official epochs 1, 20, 21, 40, 60 from the config's optimizer + scheduler."""
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, 100, cfg.optim.lr)
    by_name = {"weight": None, "bias": None}
    out = {}
    for epoch in (1, 20, 21, 40, 60):
        sched.step(epoch)
        for g in opt.param_groups:
            by_name["bias" if g["params"][0] is model.bias else "weight"] = g["lr"]
        out[epoch] = (by_name["weight"], by_name["bias"])
    return out


@pytest.mark.parametrize("name", REAL)
def test_lr_at_epochs_1_20_21_40_60_is_the_official_schedule(name):
    cfg = _cfg(name)
    assert cfg.optim.lr == BASE_LR[name] and cfg.optim.bias_lr_factor == BIAS_LR_FACTOR
    base = BASE_LR[name]
    for epoch, (w, b) in _lrs(cfg).items():
        assert w == pytest.approx(_official_lr(epoch, base, base), rel=1e-9), (name, epoch)
        assert b == pytest.approx(_official_lr(epoch, base * BIAS_LR_FACTOR, base), rel=1e-9), (name, epoch)


def test_ltcc_and_prcc_weight_lr_matches_the_issue_table():
    # issue 12's table, LTCC/PRCC weights at epochs 1 / 20 / 40 / 60: 8.4e-7 / 1.55e-6 / 6.5e-7 / 2e-7 (first
    # LR = epoch 1, last = epoch 60); the cosine is evaluated at the absolute epoch, so it drops at epoch 20
    for name in ("ltcc", "prcc"):
        lrs = _lrs(_cfg(name))
        got = [lrs[e][0] for e in (1, 20, 40, 60)]
        assert got == pytest.approx([8.421875e-7, 1.55e-6, 6.5e-7, 2e-7], rel=1e-6)
        assert lrs[21][0] < lrs[20][0]  # past the warm-up the LR only falls


def test_the_training_loop_steps_the_timm_schedule_once_per_epoch(toy, tmp_path):
    from differ_core.training import train

    cfg = TrainConfig.model_validate(
        toy_config(
            toy, tmp_path / "run", optim={"name": "sgd", "lr": 0.01, "bias_lr_factor": 2.0},
            schedule={"name": "timm_cosine", "epochs": 3, "warmup_epochs": 2, "warmup_lr": 1e-4,
                      "min_lr_factor": 0.1},
            run={"log_every": 1, "val_ids": 0.0, "log_with": []},
        )
    )  # fmt: skip
    rows = list(csv.DictReader(open(train(cfg) / "train_log.csv")))
    by_epoch: dict[int, set[float]] = {}
    for r in rows:
        by_epoch.setdefault(int(r["epoch"]), set()).add(float(r["lr"]))
    # one LR per epoch; 0-based epoch e trains at the official _get_lr(e + 1): warm-up 1e-4 + t (0.01 - 1e-4) / 2
    # for t = 1, then the cosine at t = 2, 3 over t_initial 3 with floor 0.1 x 0.01
    expect = {0: 1e-4 + (0.01 - 1e-4) / 2, 1: 1e-3 + 0.5 * 9e-3 * (1 + math.cos(2 * math.pi / 3)), 2: 1e-3}
    assert {e: sorted(v) for e, v in by_epoch.items()} == {e: [pytest.approx(v)] for e, v in expect.items()}


def test_timm_schedule_refuses_a_flat_schedule():
    with pytest.raises(ValueError, match="step_cosine only"):
        ScheduleConfig(name="timm_cosine", cosine=False)


# --------------------------------------------------------------------------- config values
@pytest.mark.parametrize("name", REAL)
def test_real_configs_pin_the_official_values(name):
    c = _cfg(name)
    # DATA.PIXEL_MEAN / PIXEL_STD (config/defaults.py): ImageNet, not the backbone's CLIP statistics
    assert c.data.mean == (0.485, 0.456, 0.406) and c.data.std == (0.229, 0.224, 0.225)
    assert tuple(c.data.img_size) == (224, 224)  # DATA.IMG_HEIGHT / IMG_WIDTH
    a = c.data.augmentation
    # AUG.RF_PROB, AUG.RC_PROB, AUG.RE_PROB = 0.5 (defaults.py); RandomCroping enlarges x(1 + 1/8);
    # RandomErasing(mean=[0.4914, 0.4822, 0.4465]) (data/img_transforms.py)
    assert (a.flip, a.crop, a.crop_style, a.crop_scale) == (0.5, 0.5, "resize", 1.125)
    assert (a.erasing, a.erasing_style, a.erasing_fill) == (0.5, "official", (0.4914, 0.4822, 0.4465))
    # Eva(drop_path_rate=0.) is never set by eva02_large_patch14_clip_224_bio; head: trunc_normal(.02) x 0.001
    assert c.model.drop_path == 0.0 and c.model.head_init == "official" and c.model.final_norm == "official"
    # SOLVER: SGD, momentum 0.9 (defaults.py), WEIGHT_DECAY 0.05 = WEIGHT_DECAY_BIAS (yml)
    assert (c.optim.name, c.optim.momentum, c.optim.weight_decay, c.optim.weight_decay_bias) == (
        "sgd", 0.9, 0.05, 0.05,
    )  # fmt: skip
    s = c.schedule
    assert (s.name, s.epochs, s.warmup_epochs, s.warmup_lr, s.min_lr_factor) == (
        "timm_cosine", T_INITIAL, WARMUP_T, WARMUP_LR, 0.1,
    )  # fmt: skip
    assert c.sampler.style == "official" and c.losses.nbdetach_index == "perspective"
    # NUM_INSTANCES / BATCH_SIZE: ltcc 2 / 8, prcc 4 / 16 (yml), celeb and ccvid the defaults 2 / 8
    assert (c.sampler.P, c.sampler.K) == ((4, 4) if name == "prcc" else (4, 2))


def test_ccvid_is_the_first_release_config():
    c = _cfg("ccvid")
    # 508fc5a configs/ccvid/eva02_l_bio.yml: BASE_LR 2e-5, CLIP_DIM 1024 = EVA02-CLIP-bigE-14 (train.py's
    # textModelVersionInfo), NOBIO_INDEX '2*' = clothing; 508fc5a defaults.py CAMERA_XISHU = 1
    assert c.optim.lr == 2e-5 and c.model.lambda_cam == 1.0
    assert c.text.encoder == "open_clip:EVA02-E-14" and c.text.perspectives == ["biometrics", "clothing"]


# --------------------------------------------------------------------------- model init
def test_official_classifier_init_has_std_2e5_and_zero_bias():
    from differ_core.model import DifferModel

    def head(init: str) -> torch.nn.Linear:
        torch.manual_seed(0)
        bb = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 512))
        bb.num_features = 512
        return DifferModel(
            bb, 400, 0, None, 0, 0.0, use_bio=False, use_nbdetach=False, head_init=init
        ).classifier

    w = head("official")
    # eva_meta_bio.py Eva.__init__: trunc_normal_(head.weight, std=.02); head.weight.mul_(0.001); zeros_(bias)
    assert float(w.weight.detach().std()) == pytest.approx(0.02 * 0.001, rel=0.02)
    assert (
        float(w.weight.detach().abs().max()) <= 2 * 0.001
    )  # timm's trunc_normal_ cuts at |x| <= 2 before the scale
    assert torch.count_nonzero(w.bias) == 0
    assert float(head("normal").weight.detach().std()) == pytest.approx(1e-3, rel=0.02)  # the SynthCC recipe


@pytest.mark.parametrize(
    ("losses", "fresh"), [(["id", "triplet", "bio", "nbdetach"], True), (["id", "triplet"], False)]
)
def test_official_final_norm_is_fresh_only_in_their_clipfc_layout(tmp_path, losses, fresh):
    import timm

    from differ_core.model import build_model

    kwargs = {"depth": 1, "embed_dim": 32, "num_heads": 2}
    src = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=(32, 16), **kwargs)
    with torch.no_grad():
        src.norm.weight.fill_(0.5)
        src.norm.bias.fill_(0.25)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    cfg = TrainConfig.model_validate({
        "data": {"img_size": [32, 16]}, "text": {"perspectives": ["biometrics", "clothing"]},
        "model": {"backbone": "vit_tiny_patch16_224", "backbone_kwargs": kwargs, "pretrained": str(tmp_path / "w.pt"),
                  "final_norm": "official"},
        "losses": {"use": losses},
    })  # fmt: skip
    norm = build_model(cfg, 5, 2, 8).backbone.norm
    # train.py: LAST_LAYER becomes 'transformer' (norm kept, loaded) unless both clipBio and clipBioReverse are
    # losses; under 'clipFc' Eva.__init__ does `del self.norm` and the checkpoint's norm.* matches nothing
    want_w, want_b = (1.0, 0.0) if fresh else (0.5, 0.25)
    assert torch.all(norm.weight == want_w) and torch.all(norm.bias == want_b)


# --------------------------------------------------------------------------- transforms
def _official_boxes(area_u: np.ndarray, aspect_u: np.ndarray, H: int, W: int) -> tuple[int, int, bool]:
    """data/img_transforms.py RandomErasing.__call__'s loop, re-stated on given uniforms (random.uniform(a, b) =
    a + (b - a) * u): sl 0.02, sh 0.4, r1 0.3, 100 attempts, accept ``w < W and h < H``."""
    for u, v in zip(area_u, aspect_u, strict=True):
        target_area = (0.02 + (0.4 - 0.02) * u) * (H * W)
        aspect_ratio = 0.3 + (1 / 0.3 - 0.3) * v
        h = int(round(math.sqrt(target_area * aspect_ratio)))
        w = int(round(math.sqrt(target_area / aspect_ratio)))
        if w < W and h < H:
            return h, w, True
    return 0, 0, False


def test_erasing_boxes_equal_the_official_loop_on_the_same_draws():
    rng = np.random.default_rng(0)
    for H, W, tries in ((224, 224, 100), (32, 16, 100), (8, 8, 3)):
        area_u, aspect_u = rng.random((300, tries)), rng.random((300, tries))
        h, w, ok = official_erasing_boxes(torch.from_numpy(area_u), torch.from_numpy(aspect_u), H, W)
        for i in range(300):
            oh, ow, ook = _official_boxes(area_u[i], aspect_u[i], H, W)
            assert bool(ok[i]) == ook and (not ook or (int(h[i]), int(w[i])) == (oh, ow)), (H, W, i)
    # the aspect is uniform, not log-uniform: a draw in the middle of (0, 1) is aspect ~1.82, not 1
    h, w, _ = official_erasing_boxes(torch.tensor([[0.5]]), torch.tensor([[0.5]]), 224, 224)
    assert float(h[0]) / float(w[0]) == pytest.approx(0.3 + (1 / 0.3 - 0.3) * 0.5, rel=0.03)


def test_official_erasing_fills_one_constant_box_with_probability_p():
    fill = (0.4914, 0.4822, 0.4465)
    x = torch.full((400, 3, 24, 12), -9.0)
    out = official_erasing(x.clone(), 0.5, fill, torch.Generator().manual_seed(0))
    erased = (out != -9.0).flatten(1).any(1)
    assert 0.42 < float(erased.float().mean()) < 0.58  # p = 0.5 (AUG.RE_PROB); 100 tries nearly always fit
    for i in torch.nonzero(erased).flatten().tolist()[:50]:
        m = out[i, 0] != -9.0
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        assert int(m.sum()) == len(rows) * len(cols)  # one rectangle
        for c in range(3):
            assert torch.all(out[i, c][m] == torch.tensor(fill[c]))


def test_resize_crop_is_the_official_random_croping():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (1, 3, 32, 16), dtype=torch.uint8)
    # data/img_transforms.py RandomCroping: PIL resize to round(1.125 x size) (bilinear), crop back at
    # round(uniform(0, extra)); find the offset of our output among every PIL crop
    pil = Image.fromarray(img[0].permute(1, 2, 0).numpy()).resize((18, 36), Image.BILINEAR)
    big = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
    seen = set()
    for _ in range(40):
        out = resize_crop(img.repeat(4, 1, 1, 1), 1.0, 1.125, g).int()
        for o in out:
            diffs = {
                (y, x): int((o - big[:, y : y + 32, x : x + 16]).abs().max())
                for y in range(5)
                for x in range(3)
            }
            best = min(diffs, key=diffs.get)
            assert diffs[best] <= 1, diffs[best]  # torchvision's uint8 bilinear vs PIL: rounding only
            seen.add(best)
    assert seen == {(y, x) for y in range(5) for x in range(3)}  # every offset 0..extra is drawn
    kept = resize_crop(img.repeat(400, 1, 1, 1), 0.5, 1.125, g)
    same = (kept == img).flatten(1).all(1).float().mean()
    assert 0.42 < float(same) < 0.58  # AUG.RC_PROB 0.5


# --------------------------------------------------------------------------- sampler
def _official_epoch(counts: list[int], K: int, P: int, R: int) -> tuple[int, int]:
    """data/samplers.py DistributedRandomIdentitySampler: (chunks per rank = num_samples / K, steps per rank =
    num_samples // (P K), the DataLoader's drop_last batches of BATCH_SIZE = P K)."""
    length = sum(max(n, K) - max(n, K) % K for n in counts)
    if length // K % R != 0:
        num_samples = math.ceil((length // K - R) / R) * K
    else:
        num_samples = math.ceil(length / R)
    return num_samples // K, num_samples // (P * K)


@pytest.mark.parametrize(("P", "K", "R"), [(4, 2, 1), (4, 2, 2), (4, 4, 3), (3, 2, 1)])
def test_official_style_sampler_has_the_official_epoch(P, K, R):
    rng = random.Random(P * 10 + K + R)
    counts = [rng.randint(1, 25) for _ in range(30)]
    pids = [p for p, n in enumerate(counts) for _ in range(n)]
    ranks = [
        IdentityBatchSampler(pids, P, K, seed=1, num_replicas=R, rank=r, style="official") for r in range(R)
    ]
    chunks_per_rank, steps = _official_epoch(counts, K, P, R)
    for epoch in range(3):
        used: list[int] = []
        for s in ranks:
            batches = s.batches(epoch)
            assert len(batches) == len(s) == steps
            for b in batches:
                assert len(b) == P * K
                for j in range(0, P * K, K):  # every K-chunk is one identity
                    assert len({pids[i] for i in b[j : j + K]}) == 1
            used += [i for b in batches for i in b]
        # ranks disjoint except the padding of identities with fewer than K images (drawn with replacement)
        big = [i for i in used if counts[pids[i]] >= K]
        assert len(big) == len(set(big))
        # every chunk of the epoch is used: at most P - 1 chunks per rank (drop_last) and the cut tail are left
        assert R * chunks_per_rank * K - len(used) <= R * (P - 1) * K
    assert ranks[0].batches(0) != ranks[0].batches(1)  # the per-epoch reshuffle is kept


def test_official_style_sampler_draws_identities_in_proportion_to_their_chunks():
    # the official order is a uniform shuffle of all chunks: an identity's share of the last steps equals its
    # share of all chunks (the distinct style over-samples big identities at the end of the epoch)
    counts = [2] * 40 + [40] * 4
    pids = [p for p, n in enumerate(counts) for _ in range(n)]
    s = IdentityBatchSampler(pids, 4, 2, seed=0, style="official")
    tail = [pids[i] for e in range(200) for b in s.batches(e)[-3:] for i in b]
    big_share = sum(1 for p in tail if counts[p] == 40) / len(tail)
    assert big_share == pytest.approx(80 / 120, abs=0.04)  # 4 x 20 of the 120 chunks


# --------------------------------------------------------------------------- NBDetach, official HEAD
def _official_reverse_loss(nb_proj: torch.Tensor, caption_feature: torch.Tensor) -> torch.Tensor:
    """loss/make_loss.py 'clipBioReverse' @ 67acb5d, re-stated: ``image_feature_reverse[i]`` is sample i (the
    batch index), labels ``arange(image_feature_reverse[i].shape[0])``, logit scale constant 1."""
    text_nonbio = F.normalize(caption_feature[:, 1:], dim=-1)
    loss = 0
    for i in range(nb_proj.shape[1]):
        img = F.normalize(nb_proj[i])
        logits = img @ text_nonbio[:, i].T
        labels = torch.arange(nb_proj[i].shape[0])
        loss = loss + F.cross_entropy(logits, labels)
    return loss


def test_nbdetach_batch_index_reproduces_the_official_head_loss():
    torch.manual_seed(0)
    nb = torch.randn(8, 2, 16, requires_grad=True)
    texts = torch.randn(8, 3, 16)
    ours = sum(loss for loss, _ in nbdetach_losses_official_head(nb, texts))
    ref = _official_reverse_loss(nb, texts)
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)
    g1 = torch.autograd.grad(ours, nb)[0]
    g2 = torch.autograd.grad(_official_reverse_loss(nb, texts), nb)[0]
    assert torch.allclose(g1, g2, atol=1e-7)
    assert torch.count_nonzero(g1[2:]) == 0  # only samples 0..K-1 get a gradient: the bug
    assert float(sum(x for x, _ in nbdetach_losses(nb, texts))) != pytest.approx(float(ref), rel=1e-3)
    # the option reaches DifferLoss; the default stays the perspective indexing
    out = {"feat": torch.randn(8, 4), "nb_proj": nb}
    _, terms = DifferLoss(LossConfig(use=["nbdetach"], nbdetach_index="batch"), ["a", "b"])(out, None, texts)
    assert terms["loss_nbdetach"] == pytest.approx(float(ref), rel=1e-6)
    assert LossConfig().nbdetach_index == "perspective"


def test_backbone_lr_factor_scales_only_the_backbone():
    """``optim.backbone_lr_factor`` multiplies the LR of ``backbone.*`` parameters (bias factor on top); the
    heads keep ``optim.lr``; 0 leaves the backbone's LR at zero."""
    from differ_core.config import OptimConfig
    from differ_core.optim import param_groups

    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(3, 4)
    model.classifier = torch.nn.Linear(4, 2)
    for factor in (0.1, 0.0):
        groups = param_groups(model, OptimConfig(lr=1e-3, bias_lr_factor=2.0, backbone_lr_factor=factor))
        lr = {n: g["lr"] for g in groups for n in g["names"]}
        assert lr["backbone.weight"] == pytest.approx(1e-3 * factor)
        assert lr["backbone.bias"] == pytest.approx(2e-3 * factor)
        assert lr["classifier.weight"] == pytest.approx(1e-3)
        assert lr["classifier.bias"] == pytest.approx(2e-3)


def test_grayscale_turns_the_chosen_images_into_their_luma():
    from differ_core.config import AugmentationConfig
    from differ_core.data import augment

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 4), dtype=torch.uint8, generator=g)
    aug = AugmentationConfig(flip=0, crop=0, pad=0, erasing=0, grayscale=0.5)
    out = augment(x, aug, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), torch.Generator().manual_seed(1))
    grey = (out[:, 0] == out[:, 1]).all(-1).all(-1) & (out[:, 1] == out[:, 2]).all(-1).all(-1)
    assert 16 < int(grey.sum()) < 48  # about half of them
    luma = (0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()).round()
    assert torch.allclose(out[grey][:, 0], luma[grey], atol=1e-3)
    assert torch.allclose(out[~grey], x[~grey].float(), atol=1e-3)
    none = augment(x, aug.model_copy(update={"grayscale": 0.0}), (0.0,) * 3, (1 / 255,) * 3, g)
    assert torch.allclose(none, x.float(), atol=1e-3)
