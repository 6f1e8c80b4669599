"""Training learns: a tiny model overfits, validation mAP rises, each loss term's gradient reaches exactly its own
parameters, the GRL alpha schedule is applied in backward, best.pt is the best validated epoch, and the
mixed-precision paths (bf16 autocast, fp16 GradScaler) run on the CPU and resume exactly."""

from __future__ import annotations

import csv
import math
import statistics

import pytest
import torch
from torch import nn

from differ_core import training
from differ_core.config import LossConfig, TrainConfig
from differ_core.grl import GradReverse, grl_alpha
from differ_core.losses import DifferLoss, nbdetach_losses
from differ_core.model import DifferModel
from differ_core.training import train

from .conftest import make_toy_workspace, toy_config

NO_AUG = {"augmentation": {"flip": 0.0, "pad": 0, "erasing": 0.0}}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _mean(rows, key):
    return statistics.mean(float(r[key]) for r in rows)


def _epochs(rows):
    """Train-log rows grouped by epoch, in order."""
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(int(r["epoch"]), []).append(r)
    return [out[e] for e in sorted(out)]


# --------------------------------------------------------------------------- learning
def test_a_tiny_model_overfits_a_tiny_training_set(toy, tmp_path):
    cfg = toy_config(
        toy, tmp_path / "run", data=NO_AUG, model={"drop_path": 0.0}, sampler={"P": 4, "K": 4},
        schedule={"epochs": 20, "warmup_epochs": 0}, optim={"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
        run={"val_ids": 0.0, "log_every": 1},
    )  # fmt: skip
    epochs = _epochs(_rows(train(TrainConfig.model_validate(cfg)) / "train_log.csv"))
    first, last = epochs[0], epochs[-1]
    # measured (seed 0, 8 identities, all four DIFFER losses, 20 epochs): loss 11.25 -> 4.44, loss_id 2.08
    # (ln 8) -> 0.60, acc_id 0.17 -> 1.0 (seeds 1, 2: acc_id 0.83 / 0.94, loss_id 0.65 / 0.45); chance is 1/8
    assert _mean(last, "loss") < 0.6 * _mean(first, "loss")
    assert _mean(last, "loss_id") < 1.2
    assert _mean(last, "acc_id") >= 0.6


@pytest.fixture(scope="module")
def toy32(tmp_path_factory) -> dict:
    """A toy workspace with 32 train identities: 24 to train on, 8 held out for validation."""
    return make_toy_workspace(tmp_path_factory.mktemp("toy32"), num_ids=32)


def _untrained_val(cfg: TrainConfig, workdir) -> dict:
    """Validation metrics of the model ``train(cfg)`` starts from (same seed, same data split)."""
    from differ_core.data import prepare_data
    from differ_core.model import build_model, model_mean_std

    data = prepare_data(cfg, workdir, lambda _msg: None)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, data.num_classes, data.num_cameras, data.text_dim)
    mean, std = model_mean_std(cfg, model)
    return training.validate(model, data.val, cfg, mean, std, torch.device("cpu"), False)


def test_a_short_differ_run_beats_the_untrained_model_and_best_pt_is_its_best_epoch(toy32, tmp_path):
    from differ_core.model import load_model_for_inference

    cfg = TrainConfig.model_validate(
        toy_config(
            toy32, tmp_path / "run", data={"augmentation": {"pad": 2}}, model={"drop_path": 0.0},
            sampler={"P": 4, "K": 4}, schedule={"epochs": 4, "warmup_epochs": 0},
            optim={"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}, run={"log_every": 100},
        )
    )  # fmt: skip
    before = _untrained_val(cfg, toy32["work"])
    run_dir = train(cfg)
    val = _rows(run_dir / "val_log.csv")
    maps = [float(r["mAP"]) for r in val]
    assert before["protocol"] == val[-1]["protocol"] == "clothes_changing"
    # measured (seed 0): untrained mAP 0.080, after 4 epochs 0.586, 0.898, 0.945, 0.929 (seeds 1, 2: 0.071 ->
    # 0.920, 0.075 -> 0.962)
    assert maps[-1] > before["mAP"] + 0.4
    # best.pt holds the epoch with the best logged score, and its weights score that again
    best_epoch = maps.index(max(maps)) + 1
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["epoch"] == best_epoch and ckpt["selection"] == "validation"
    assert int(val[-1]["best_epoch"]) == best_epoch
    model, _, info = load_model_for_inference(run_dir / "checkpoints" / "best.pt")
    from differ_core.data import prepare_data

    data = prepare_data(cfg, toy32["work"], lambda _msg: None)
    again = training.validate(model, data.val, cfg, info["mean"], info["std"], torch.device("cpu"), False)
    assert again["mAP"] == pytest.approx(max(maps), abs=1e-5)


def test_best_pt_is_the_epoch_with_the_best_validation_score(toy, tmp_path, monkeypatch):
    """Real validation runs; its mAP is replaced by a scripted non-monotonic sequence, so best != last."""
    scripted = [0.3, 0.9, 0.5, 0.7]
    states: list[dict] = []
    real = training.validate

    def scored(model, *args, **kwargs):
        metrics = real(model, *args, **kwargs)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {**metrics, "mAP": scripted[len(states) - 1]}

    monkeypatch.setattr(training, "validate", scored)
    cfg = toy_config(toy, tmp_path / "run", schedule={"epochs": 4, "warmup_epochs": 0.5})
    run_dir = train(TrainConfig.model_validate(cfg))
    val = _rows(run_dir / "val_log.csv")
    assert [float(r["mAP"]) for r in val] == scripted
    assert [int(r["best_epoch"]) for r in val] == [1, 2, 2, 2]
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 2 and best["metrics"]["mAP"] == 0.9 and best["step"] == int(val[1]["step"])
    assert last["best"]["epoch"] == 2 and last["best"]["score"] == 0.9
    for k, v in best["model"].items():
        assert torch.equal(v, states[1][k]), k
    assert any(not torch.equal(v, states[1][k]) for k, v in last["model"].items())


# --------------------------------------------------------------------------- gradients of each term
class _TinyBackbone(nn.Module):
    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _tiny_differ(alpha: float = 0.7):
    torch.manual_seed(0)
    model = DifferModel(
        _TinyBackbone(), num_classes=3, num_cameras=2, text_dim=5, num_nonbio=2, grl_alpha=alpha
    )
    x, cams = torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 0, 1, 0, 1])
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    texts = torch.randn(6, 3, 5, requires_grad=True)  # slot 0 biometric, 1 hairstyle, 2 clothing
    return model.train(), x, cams, pids, texts


def _grads(model: nn.Module, texts: torch.Tensor) -> dict[str, torch.Tensor | None]:
    g = {
        n: (None if p.grad is None or not p.grad.any() else p.grad.clone())
        for n, p in model.named_parameters()
    }
    g["texts"] = texts.grad.clone()
    model.zero_grad(set_to_none=True)
    texts.grad = None
    return g


def _reached(g: dict, prefix: str) -> bool:
    return any(v is not None for k, v in g.items() if k.startswith(prefix))


def test_the_biometric_term_reaches_w_b_and_the_backbone_and_reads_text_slot_0_only():
    model, x, cams, pids, texts = _tiny_differ()
    total, _ = DifferLoss(LossConfig(use=["bio"]), ["hairstyle", "clothing"])(model(x, cams), pids, texts)
    total.backward()
    g = _grads(model, texts)
    assert _reached(g, "bio_proj.") and _reached(g, "backbone.") and _reached(g, "camera_embed")
    assert not _reached(g, "nb_heads.") and not _reached(g, "classifier.")
    assert g["texts"][:, 0].abs().sum() > 0 and not g["texts"][:, 1:].any()


def test_each_nbdetach_term_reaches_its_own_projection_and_the_backbone_reversed_by_alpha():
    model, x, cams, pids, texts = _tiny_differ(alpha=0.7)
    for k in range(2):
        # through DifferLoss: the perspective slots only, never the biometric slot
        total, _ = DifferLoss(LossConfig(use=["nbdetach"]), ["hairstyle", "clothing"])(
            model(x, cams), pids, texts
        )
        total.backward()
        g = _grads(model, texts)
        assert not g["texts"][:, 0].any() and g["texts"][:, 1:].abs().sum() > 0
        # term k alone
        nbdetach_losses(model(x, cams)["nb_proj"], texts)[k][0].backward()
        g = _grads(model, texts)
        assert _reached(g, f"nb_heads.{k}.") and not _reached(g, f"nb_heads.{1 - k}.")
        assert not _reached(g, "bio_proj.") and not _reached(g, "classifier.")
        assert g["texts"][:, 1 + k].abs().sum() > 0 and not g["texts"][:, [0, 2 - k]].any()
        # the backbone's gradient is the one without the reversal layer times -alpha
        grls = [head.grl for head in model.nb_heads]
        for head in model.nb_heads:
            head.grl = nn.Identity()
        nbdetach_losses(model(x, cams)["nb_proj"], texts)[k][0].backward()
        plain = _grads(model, texts)
        for head, grl in zip(model.nb_heads, grls, strict=True):
            head.grl = grl
        assert torch.allclose(g[f"nb_heads.{k}.proj.weight"], plain[f"nb_heads.{k}.proj.weight"])
        for name in ("backbone.fc.weight", "backbone.fc.bias", "camera_embed"):
            assert torch.allclose(g[name], -0.7 * plain[name], atol=1e-7), name


def test_the_schedules_grl_alpha_is_used_in_backward_at_every_step(toy, tmp_path, monkeypatch):
    used: list[float] = []
    real = GradReverse.backward

    def recording(ctx, grad_output):
        grad_in, _ = real(ctx, grad_output)
        # the reversal actually applied: grad_in = -alpha * grad_output
        used.append(float(-(grad_in * grad_output).sum() / (grad_output * grad_output).sum()))
        return grad_in, None

    monkeypatch.setattr(GradReverse, "backward", staticmethod(recording))
    cfg = toy_config(toy, tmp_path / "run", losses={"grl_schedule": "dann", "grl_alpha": 0.8},
                     run={"val_ids": 0.0})  # fmt: skip
    rows = _rows(train(TrainConfig.model_validate(cfg)) / "train_log.csv")
    total = len(rows)  # log_every=1: one row per step
    want = [grl_alpha(0.8, "dann", s / total) for s in range(total)]
    assert len(used) == 2 * total  # one reversal per non-biometric perspective and step
    assert used[0::2] == pytest.approx(want, abs=1e-6) and used[1::2] == pytest.approx(want, abs=1e-6)
    assert [float(r["grl_alpha"]) for r in rows] == pytest.approx(want, abs=1e-9)
    assert want[0] == 0.0 and want[-1] > 0.75  # the schedule ramps up across the run


# --------------------------------------------------------------------------- mixed precision on the CPU
@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide AcceleratorState whose mixed precision cannot change: reset it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_autocast_runs_on_the_cpu(toy, tmp_path, monkeypatch, capsys, fresh_accelerate_state):
    seen: list[tuple] = []
    real = DifferModel.forward

    def recording(self, images, camids=None):
        out = real(self, images, camids)
        logits = out["logits"].dtype if isinstance(out, dict) else None
        seen.append(
            (self.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), logits)
        )
        return out

    monkeypatch.setattr(DifferModel, "forward", recording)
    cfg = toy_config(toy, tmp_path / "run", schedule={"epochs": 1}, run={"amp": "bf16"})
    run_dir = train(TrainConfig.model_validate(cfg))
    assert "device cpu, amp bf16" in capsys.readouterr().out
    # every training step and the validation ran under bf16 autocast (the classifier's logits are bf16)
    assert {s for s in seen if s[0]} == {(True, True, torch.bfloat16, torch.bfloat16)}
    assert {s for s in seen if not s[0]} == {(False, True, torch.bfloat16, None)}
    rows = _rows(run_dir / "train_log.csv")
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert 0 <= float(_rows(run_dir / "val_log.csv")[-1]["mAP"]) <= 1


# overflows fp16 gradients at the start: the first steps are skipped and the scale backs off
INIT_SCALE = 2.0**24


@pytest.fixture
def cpu_fp16_scaler(monkeypatch, fresh_accelerate_state):
    """fp16 with a loss-scaling GradScaler on the CPU.

    accelerate 1.16 builds its GradScaler only off the CPU (``Accelerator.__init__`` skips ``device.type ==
    'cpu'``) and ``resolve_amp`` maps CPU fp16 to ``no``. This installs ``torch.amp.GradScaler('cpu')`` the way
    accelerate installs its CUDA one (``native_amp`` + ``scaler``): ``accelerator.autocast`` is then fp16,
    ``accelerator.backward`` scales the loss and the prepared optimizer steps through ``scaler.step/update``, so
    the loop's scaler code (state in last.pt, restored on resume) is the code that runs on a GPU.
    """
    import accelerate

    snapshots: list[dict] = []

    class CpuFp16Accelerator(accelerate.Accelerator):
        def __init__(self, *args, mixed_precision=None, **kwargs):
            super().__init__(*args, mixed_precision="fp16", **kwargs)
            assert self.scaler is None and self.device.type == "cpu"
            self.native_amp = True
            self.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=4)

        def prepare(self, *objs):
            snapshots.append({k: v.clone() for k, v in objs[0].state_dict().items()})
            return super().prepare(*objs)

    monkeypatch.setattr(accelerate, "Accelerator", CpuFp16Accelerator)
    return snapshots


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # a skipped step
def test_fp16_grad_scaler_steps_and_its_state_survives_a_kill(toy, tmp_path, cpu_fp16_scaler):
    def cfg(out, **run):
        return TrainConfig.model_validate(toy_config(toy, out, run={"amp": "fp16", "val_ids": 0.0, **run}))

    a = train(cfg(tmp_path / "a"))
    ca = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    spe = ca["step"] // 2
    # the scaler was used: overflowing steps backed the scale off, and the other steps moved the weights
    assert ca["scaler"]["scale"] < INIT_SCALE
    initial = cpu_fp16_scaler[0]
    moved = [k for k, v in ca["model"].items() if v.is_floating_point() and not torch.allclose(v, initial[k])]
    assert len(moved) > 0.9 * sum(v.is_floating_point() for v in initial.values())
    # killed mid-epoch 1 after a mid-epoch checkpoint, then resumed: same scaler state, same weights
    b_dir = tmp_path / "b"
    train(cfg(b_dir, stop_after_steps=spe + 3, checkpoint_every_steps=spe + 2))
    mid = torch.load(b_dir / "checkpoints" / "last.pt", weights_only=True)
    assert mid["step"] == spe + 2 and "scaler" in mid
    train(cfg(b_dir))
    cb = torch.load(b_dir / "checkpoints" / "last.pt", weights_only=True)
    assert cb["step"] == ca["step"] and cb["scaler"] == ca["scaler"]
    for k, v in ca["model"].items():
        assert torch.allclose(v, cb["model"][k], atol=1e-5, rtol=1e-4), k
    ra, rb = _rows(a / "train_log.csv"), _rows(b_dir / "train_log.csv")
    assert [round(float(r["loss"]), 3) for r in rb] == [round(float(r["loss"]), 3) for r in ra]
